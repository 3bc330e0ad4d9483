"""The ingress's checks for `POST /v1/jobs/voice-replace`: what can be refused before a job exists.

The route itself is a method of `Ingress` (deployments/ingress.py): Serve binds `self` only for routes
defined on the decorated class.
"""

import asyncio

from ray.serve.handle import DeploymentHandle

from deployments.http.audio_inputs import load_upload
from deployments.http.errors import ApiError
from infra import voice_store
from infra.audio import peak_dbfs
from infra.settings import Settings
from infra.storage import Storage
from infra.voice_store import VoiceNotFoundError
from pipelines.jobs.voice_replace import SILENT_PEAK_DBFS, VOICE_ID


async def check_voice(voice: str, tts: DeploymentHandle, storage: Storage) -> None:
    """422 `unknown_voice` unless `voice` is a stock voice of the TTS deployment or a registered voice_id."""
    if VOICE_ID.match(voice):
        try:
            await asyncio.to_thread(voice_store.load_profile, storage, voice)
        except VoiceNotFoundError as e:
            raise ApiError(422, "unknown_voice", str(e)) from e
        return
    stock: list[str] = await tts.voices.remote()
    if voice not in stock:
        raise ApiError(422, "unknown_voice", f"voice {voice!r} is neither one of {stock} nor a voice_id")


async def check_not_silent(storage: Storage, upload_id: str, settings: Settings) -> None:
    """422 `silent_input` when the upload's loudest sample is below `SILENT_PEAK_DBFS`."""
    audio = await asyncio.to_thread(load_upload, storage, upload_id, settings)
    if peak_dbfs(audio) < SILENT_PEAK_DBFS:
        raise ApiError(
            422,
            "silent_input",
            f"the input is silent (peak below {SILENT_PEAK_DBFS:g} dBFS): no voice to replace",
        )
