"""The HTTP ingress: parse and validate, create jobs, hand them to the runner, report on them.

(No `from __future__ import annotations` here: FastAPI must see real annotations on the
`serve.ingress` methods.)

Nothing here runs a model or a pipeline; it only talks to S3 (job records, presigned URLs) and to
the other deployments through their handles.
"""

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import File, Form, Header, Query, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.http import analysis_routes as analysis
from deployments.http import loop_routes, voices
from deployments.http import voice_replace_routes as replace_routes
from deployments.http.api import Authorized, app, settings
from deployments.http.audio_inputs import UploadInfo, decode_input, load_upload, store_upload, upload_info
from deployments.http.errors import ApiError
from deployments.http.schemas import JobList, JobReport, JobView, ModelsView, job_report, job_view
from deployments.http.speech import (
    MEDIA_TYPES,
    SPEECH_MODELS,
    SpeechRequest,
    encoded_stream,
    sentences_audio,
)
from deployments.http.transcripts import Granularity, ResponseFormat
from deployments.http.url_inputs import fetch_url
from infra.audio import Audio, AudioFormat
from infra.jobs import (
    IdempotencyConflictError,
    JobFinishedError,
    JobNotFoundError,
    JobRecord,
    JobStatus,
    JobStore,
)
from infra.storage import InvalidKeyPartError, Storage, StorageError
from models.types import PitchContour
from pipelines.jobs.diarize import DIARIZE_JOB, DiarizeJobRequest, turns_body
from pipelines.jobs.generation import (
    MAX_MELODY_S,
    MIN_CONTINUATION_S,
    MUSIC_JOB,
    SFX_JOB,
    GenerationJobRequest,
    MusicJobRequest,
    SfxJobRequest,
)
from pipelines.jobs.loop import LOOP_JOB
from pipelines.jobs.pitch_shift import PITCH_SHIFT_JOB, PitchShiftJobRequest
from pipelines.jobs.separation import SEPARATE_JOB, SeparateJobRequest
from pipelines.jobs.voice_replace import VOICE_REPLACE_JOB, VoiceReplaceJobRequest
from pipelines.voice.lines import TARGET_PATTERN

logger = logging.getLogger(__name__)
VOICE_ID = re.compile(r"^[0-9a-f]{32}$")

FileField = Annotated[UploadFile | None, File(description="An audio file (WAV, FLAC, OGG, MP3).")]
UploadIdField = Annotated[str | None, Form(pattern="^[0-9a-f]{32}$", description="Instead of `file`.")]
UrlField = Annotated[
    str | None, Form(max_length=4096, description="Instead of `file`: an http(s) URL, fetched at submission.")
]


@serve.deployment(
    name="Ingress",
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=200,
    max_queued_requests=1000,
)
@serve.ingress(app)
class Ingress:
    def __init__(self, runner: DeploymentHandle, models: dict[str, DeploymentHandle]) -> None:
        self.settings = settings()
        self.storage = Storage(self.settings)
        self.jobs = JobStore(self.storage)
        self.runner = runner
        self.models = models
        self._dispatches: set[asyncio.Task[None]] = set()

    @app.get("/healthz", tags=["service"])
    async def healthz(self) -> dict[str, str]:
        """Liveness of the ingress and its object store."""
        try:
            await asyncio.to_thread(self.storage.ping)
        except StorageError as e:
            raise ApiError(503, "storage_unavailable", str(e)) from e
        return {"status": "ok"}

    @app.get("/v1/models", tags=["service"], dependencies=[Authorized])
    async def list_models(self) -> ModelsView:
        """Each model deployment: model id, revision, weights kind, device, replica states."""
        infos = {name: await handle.info.remote() for name, handle in self.models.items()}
        status = await asyncio.to_thread(serve.status)
        deployments = status.applications[serve.get_replica_context().app_name].deployments
        return ModelsView.build(infos, deployments)

    @app.post("/v1/jobs/music", status_code=202, tags=["jobs"], dependencies=[Authorized])
    async def submit_music(
        self,
        body: MusicJobRequest,
        request: Request,
        idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    ) -> JSONResponse:
        """Generate music from a text prompt (MusicGen, or `model: stable-audio`), optionally following an
        uploaded melody (`melody_upload_id`) or continuing an uploaded clip (`continue_upload_id`).
        Returns `202 {id, status_url}`; poll the status URL."""
        await self._check_conditioning(body)
        return await self._submit_generation(MUSIC_JOB, body, idempotency_key, request)

    async def _check_conditioning(self, body: MusicJobRequest) -> None:
        """The melody or continuation upload exists (404) and its length suits the request (422)."""
        conditioning = body.conditioning
        if conditioning is None:
            return
        clip = await asyncio.to_thread(upload_info, self.storage, conditioning["upload_id"])
        if conditioning["kind"] == "melody" and clip.duration_s > MAX_MELODY_S:
            message = f"the melody upload is {clip.duration_s:g} s; at most {MAX_MELODY_S:g} s"
            raise ApiError(422, "melody_too_long", message)
        if conditioning["kind"] == "continuation" and clip.duration_s + MIN_CONTINUATION_S > body.duration_s:
            message = (
                f"duration_s {body.duration_s:g} is the total length and must exceed the clip's "
                f"{clip.duration_s:g} s by at least {MIN_CONTINUATION_S:g} s"
            )
            raise ApiError(422, "clip_too_long", message)

    @app.post("/v1/jobs/sfx", status_code=202, tags=["jobs"], dependencies=[Authorized])
    async def submit_sfx(
        self,
        body: SfxJobRequest,
        request: Request,
        idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    ) -> JSONResponse:
        """Generate a sound effect from a text prompt (AudioGen, or `model: stable-audio`)."""
        return await self._submit_generation(SFX_JOB, body, idempotency_key, request)

    async def _submit_generation(
        self, kind: str, body: GenerationJobRequest, idempotency_key: str | None, request: Request
    ) -> JSONResponse:
        limit = self.settings.max_generation_s
        if body.model == "stable-audio":
            limit = min(limit, (await self.models["StableAudio"].info.remote())["max_duration_s"])
        if body.duration_s > limit:
            raise ApiError(
                422, "duration_too_long", f"duration_s {body.duration_s:g} exceeds the limit of {limit:g} s"
            )
        if len(body.prompt) > self.settings.max_prompt_chars:
            raise ApiError(
                422, "prompt_too_long", f"prompt exceeds {self.settings.max_prompt_chars} characters"
            )
        return await self._submit(kind, body.with_seed().model_dump(), idempotency_key, request)

    @app.post("/v1/jobs/separate", status_code=202, tags=["jobs"], dependencies=[Authorized])
    async def submit_separation(
        self,
        request: Request,
        file: FileField = None,
        upload_id: UploadIdField = None,
        url: UrlField = None,
        mode: Annotated[Literal["4stems", "vocals"], Form()] = "4stems",
        format: Annotated[AudioFormat, Form()] = "wav",
        segment_s: Annotated[float, Form(ge=5.0, le=600.0)] = 30.0,
        overlap_s: Annotated[float, Form(ge=0.0, le=10.0)] = 1.0,
        idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    ) -> JSONResponse:
        """Separate stems (HTDemucs): one presigned URL per stem in the result."""
        if 2 * overlap_s > segment_s:
            raise ApiError(422, "invalid_request", "overlap_s may be at most half of segment_s")
        source = await self._upload_id(file, upload_id, url)
        body = SeparateJobRequest(
            upload_id=source, mode=mode, format=format, segment_s=segment_s, overlap_s=overlap_s
        )
        return await self._submit(SEPARATE_JOB, body.model_dump(), idempotency_key, request)

    @app.post("/v1/jobs/loop", status_code=202, tags=["jobs"], dependencies=[Authorized])
    async def submit_loop(
        self,
        request: Request,
        target_duration_s: Annotated[float, Form(gt=0.0, description="Output length, s (at most 36000).")],
        file: FileField = None,
        upload_id: UploadIdField = None,
        job_id: Annotated[
            str | None, Form(pattern="^[0-9a-f]{32}$", description="Loop a succeeded job's audio output.")
        ] = None,
        output: Annotated[
            str | None, Form(max_length=64, description="Which audio result of `job_id` (default: `audio`).")
        ] = None,
        crossfade_s: Annotated[float, Form(ge=0.0, le=1.0)] = 0.05,
        format: Annotated[AudioFormat, Form(description="wav, flac or ogg (mp3 cannot stream).")] = "wav",
        idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    ) -> JSONResponse:
        """Extend a clip to `target_duration_s` (up to 10 h) by repeating a seamless loop of it, found
        by beat and similarity analysis and crossfaded at every seam; the output is streamed to S3."""
        loop_routes.check_target(target_duration_s, format)
        if job_id is not None:
            if file is not None or upload_id is not None:
                raise ApiError(422, "input_required", "send one source: `file`, `upload_id` or `job_id`")
            source = await asyncio.to_thread(loop_routes.job_source, self.jobs, job_id, output)
        else:
            uploaded = await self._upload_id(file, upload_id)
            source = await asyncio.to_thread(loop_routes.upload_source, self.storage, uploaded, output)
        body = loop_routes.loop_request(
            source,
            target_duration_s=target_duration_s,
            crossfade_s=crossfade_s,
            format=format,
        )
        return await self._submit(LOOP_JOB, body.model_dump(), idempotency_key, request)

    @app.post("/v1/jobs/pitch-shift", status_code=202, tags=["jobs"], dependencies=[Authorized])
    async def submit_pitch_shift(
        self,
        request: Request,
        semitones: Annotated[float, Form(ge=-24.0, le=24.0)],
        file: FileField = None,
        upload_id: UploadIdField = None,
        preserve_formants: Annotated[bool, Form()] = True,
        format: Annotated[AudioFormat, Form()] = "wav",
        idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    ) -> JSONResponse:
        """Shift pitch by `semitones` keeping duration (and, by default, formants)."""
        source = await self._upload_id(file, upload_id)
        body = PitchShiftJobRequest(
            upload_id=source, semitones=semitones, preserve_formants=preserve_formants, format=format
        )
        return await self._submit(PITCH_SHIFT_JOB, body.model_dump(), idempotency_key, request)

    @app.post("/v1/jobs/voice-replace", status_code=202, tags=["jobs"], dependencies=[Authorized])
    async def submit_voice_replace(
        self,
        request: Request,
        voice: Annotated[str, Form(min_length=1, max_length=64, description="Stock voice or voice_id.")],
        file: FileField = None,
        upload_id: UploadIdField = None,
        url: UrlField = None,
        target_speaker: Annotated[
            str, Form(pattern=TARGET_PATTERN, description="`auto` (most speech) or e.g. `SPEAKER_01`.")
        ] = "auto",
        separate: Annotated[bool, Form(description="Split vocals from accompaniment first.")] = False,
        analyze: Annotated[Literal["vocals", "input"], Form()] = "vocals",
        num_speakers: Annotated[int | None, Form(ge=1, le=8)] = None,
        format: Annotated[AudioFormat, Form()] = "wav",
        idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    ) -> JSONResponse:
        """Re-speak one speaker's lines in another voice, time-fitted, everything else kept: the result
        audio, a transcript (JSON + SRT with speakers) and a per-line replacement report."""
        await replace_routes.check_voice(voice, self.models["TTS"], self.storage)
        source = await self._upload_id(file, upload_id, url)
        await replace_routes.check_not_silent(self.storage, source, self.settings)
        body = VoiceReplaceJobRequest(
            upload_id=source,
            voice=voice,
            target_speaker=target_speaker,
            separate=separate,
            analyze=analyze,
            num_speakers=num_speakers,
            format=format,
        )
        return await self._submit(VOICE_REPLACE_JOB, body.model_dump(), idempotency_key, request)

    async def _upload_id(self, file: UploadFile | None, upload_id: str | None, url: str | None = None) -> str:
        """A job's input as an upload id: a direct file, or the body at `url` (fetched now), is validated
        and stored as an upload first."""
        if sum(x is not None for x in (file, upload_id, url)) != 1:
            accepted = "`file` (multipart), `upload_id`" + (" or `url`" if url is not None else "")
            raise ApiError(422, "input_required", f"send exactly one of {accepted}")
        if upload_id is not None:
            await asyncio.to_thread(upload_info, self.storage, upload_id)  # 404 if unknown
            return upload_id
        if url is not None:
            data, name = await asyncio.to_thread(fetch_url, url, self.settings)
        else:
            assert file is not None
            data, name = await file.read(), file.filename
        stored = await asyncio.to_thread(store_upload, self.storage, data, name, self.settings)
        return stored.upload_id

    async def _submit(
        self, kind: str, payload: dict[str, Any], idempotency_key: str | None, request: Request
    ) -> JSONResponse:
        try:
            record, created = await asyncio.to_thread(self.jobs.create, kind, payload, idempotency_key)
        except IdempotencyConflictError as e:
            raise ApiError(409, "idempotency_conflict", str(e)) from e
        if created:
            self._dispatch(record.id)
        view = job_view(record, self.storage, str(request.base_url))
        return JSONResponse(status_code=202 if created else 200, content=view.model_dump(mode="json"))

    def _dispatch(self, job_id: str) -> None:
        """Hand the job to a runner without waiting; runners' sweeps pick it up if this call is lost."""

        async def send() -> None:
            try:
                await self.runner.submit.remote(job_id)
            except Exception:
                logger.warning("dispatch failed; a runner sweep will claim it", extra={"job_id": job_id})

        task = asyncio.get_running_loop().create_task(send())
        self._dispatches.add(task)
        task.add_done_callback(self._dispatches.discard)

    @app.get("/v1/jobs/{job_id}", tags=["jobs"], dependencies=[Authorized])
    async def get_job(self, job_id: str, request: Request) -> JobView:
        """Status, progress, stage, error, and the result with presigned URLs once it succeeded."""
        record = await self._load(job_id)
        return job_view(record, self.storage, str(request.base_url))

    @app.get("/v1/jobs/{job_id}/report", tags=["jobs"], dependencies=[Authorized])
    async def get_job_report(self, job_id: str) -> JobReport:
        """Per-stage timings, peak memory, retries, fan-out segments, checkpoint sizes, the weights each
        model ran with, and the failure (stage, error, attempt) if the job failed."""
        record = await self._load(job_id)
        return job_report(record, self.jobs.clock())

    @app.delete("/v1/jobs/{job_id}", status_code=202, tags=["jobs"], dependencies=[Authorized])
    async def cancel_job(self, job_id: str, request: Request) -> JobView:
        """Cancel: a queued job stops at once, a running one at its next stage boundary."""
        await self._load(job_id)
        try:
            record = await asyncio.to_thread(self.jobs.request_cancel, job_id)
        except JobFinishedError as e:
            raise ApiError(409, "job_finished", str(e)) from e
        return job_view(record, self.storage, str(request.base_url))

    @app.get("/v1/jobs", tags=["jobs"], dependencies=[Authorized])
    async def list_jobs(
        self,
        request: Request,
        status: JobStatus | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        after: Annotated[str | None, Query(pattern="^[0-9a-f]{32}$")] = None,
    ) -> JobList:
        """Newest first. Page with `after=<last id>`."""
        records = await asyncio.to_thread(self.jobs.list_records, status, limit, after)
        views = [job_view(r, self.storage, str(request.base_url)) for r in records]
        return JobList(jobs=views, next_after=views[-1].id if len(views) == limit else None)

    async def _load(self, job_id: str) -> JobRecord:
        try:
            return await asyncio.to_thread(self.jobs.get, job_id)
        except (JobNotFoundError, InvalidKeyPartError):
            raise ApiError(404, "job_not_found", f"no job with id {job_id!r}") from None

    # Audio inputs and analysis ----------------------------------------------------------------

    @app.post("/v1/uploads", status_code=201, tags=["audio"], dependencies=[Authorized])
    async def create_upload(self, file: Annotated[UploadFile, File()]) -> UploadInfo:
        """Validate and keep an audio file; refer to it later by `upload_id`."""
        data = await file.read()
        return await asyncio.to_thread(store_upload, self.storage, data, file.filename, self.settings)

    @app.post("/v1/audio/transcriptions", tags=["audio"], dependencies=[Authorized])
    async def create_transcription(
        self,
        file: FileField = None,
        upload_id: UploadIdField = None,
        model: Annotated[str, Form()] = "whisper-1",
        language: Annotated[str | None, Form(pattern="^[a-z]{2,3}$")] = None,
        prompt: Annotated[str | None, Form(description="Accepted for compatibility; not used.")] = None,
        response_format: Annotated[ResponseFormat, Form()] = "json",
        temperature: Annotated[float, Form(ge=0.0, le=1.0)] = 0.0,
        timestamp_granularities: Annotated[
            list[Granularity] | None, Form(alias="timestamp_granularities[]")
        ] = None,
        diarize: Annotated[bool, Form(description="Attribute segments and words to speakers.")] = False,
    ) -> Response:
        """OpenAI-compatible transcription (`/v1/audio/transcriptions`), plus `diarize=true`."""
        info = await self.models["ASR"].info.remote()
        analysis.check_model_name(model, info)
        audio = await analysis.input_audio(self.storage, self.settings, file, upload_id)
        transcript = await analysis.transcribe(self.models["ASR"], audio, language)
        speakers = await analysis.speakers(self.models["Diarizer"], audio, transcript) if diarize else None
        return analysis.render_transcript(
            transcript, response_format, timestamp_granularities or ["segment"], info, speakers
        )

    @app.post("/v1/pitch", tags=["audio"], dependencies=[Authorized])
    async def detect_pitch(
        self,
        file: FileField = None,
        upload_id: UploadIdField = None,
        fmin_hz: Annotated[float, Form(ge=46.875, le=2093.75)] = 46.875,
        fmax_hz: Annotated[float, Form(ge=46.875, le=2093.75)] = 2093.75,
        confidence_threshold: Annotated[float, Form(ge=0.0, le=1.0)] = 0.5,
        format: Annotated[Literal["json", "csv"], Form()] = "json",
    ) -> Response:
        """F0 contour (16 ms frames): time, f0 (0 where unvoiced), confidence, voiced; JSON or CSV."""
        if fmin_hz >= fmax_hz:
            raise ApiError(422, "invalid_request", "fmin_hz must be below fmax_hz")
        audio = await analysis.input_audio(self.storage, self.settings, file, upload_id)
        contour: PitchContour = await self.models["Pitch"].detect.remote(
            audio, fmin_hz, fmax_hz, confidence_threshold
        )
        if format == "csv":
            return PlainTextResponse(contour.to_csv(), media_type="text/csv")
        return JSONResponse(contour.to_dict())

    @app.post("/v1/vad", tags=["audio"], dependencies=[Authorized])
    async def detect_speech(
        self,
        file: FileField = None,
        upload_id: UploadIdField = None,
        threshold: Annotated[float, Form(gt=0.0, lt=1.0)] = 0.5,
        min_speech_s: Annotated[float, Form(ge=0.0, le=10.0)] = 0.25,
        min_silence_s: Annotated[float, Form(ge=0.0, le=10.0)] = 0.3,
        pad_s: Annotated[float, Form(ge=0.0, le=2.0)] = 0.05,
    ) -> dict[str, Any]:
        """Speech regions `[{start, end}]` in seconds (silero-vad)."""
        audio = await analysis.input_audio(self.storage, self.settings, file, upload_id)
        regions = await self.models["VAD"].detect.remote(audio, threshold, min_speech_s, min_silence_s, pad_s)
        return {"regions": [{"start": r.start, "end": r.end} for r in regions]}

    @app.post("/v1/diarize", tags=["audio"], dependencies=[Authorized])
    async def diarize(
        self,
        request: Request,
        file: FileField = None,
        upload_id: UploadIdField = None,
        num_speakers: Annotated[int | None, Form(ge=1, le=8)] = None,
    ) -> JSONResponse:
        """Who speaks when: `{turns: [{start, end, speaker}]}` for short audio; a job (202) for long audio."""
        source = await self._upload_id(file, upload_id)
        audio = await asyncio.to_thread(load_upload, self.storage, source, self.settings)
        if audio.duration_s > self.settings.max_sync_audio_s:
            body = DiarizeJobRequest(upload_id=source, num_speakers=num_speakers)
            return await self._submit(DIARIZE_JOB, body.model_dump(), None, request)
        turns = await self.models["Diarizer"].diarize.remote(audio, num_speakers)
        return JSONResponse(turns_body(turns, await self.models["Diarizer"].info.remote()))

    @app.post("/v1/audio/speech", tags=["audio"], dependencies=[Authorized])
    async def create_speech(self, body: SpeechRequest) -> StreamingResponse:
        """OpenAI-compatible text to speech in a stock voice or a registered `voice_id`, streamed sentence
        by sentence (WAV, PCM; MP3 and FLAC when complete)."""
        if body.model not in SPEECH_MODELS:
            raise ApiError(422, "unknown_model", f"model {body.model!r}; use one of {sorted(SPEECH_MODELS)}")
        stream = sentences_audio(await self._voice(body), body.input)
        try:
            first = await anext(stream)  # bad input fails here, before the response starts
        except (ValueError, StopAsyncIteration) as e:
            raise ApiError(422, "invalid_input", str(e) or "nothing to say in `input`") from e
        media_type = MEDIA_TYPES[body.response_format]
        return StreamingResponse(encoded_stream(body, first, stream), media_type=media_type)

    async def _voice(self, body: SpeechRequest) -> Callable[[str], Awaitable[Audio]]:
        """How to speak one sentence in `body.voice`: a registered (cloned) voice or a stock one."""
        if VOICE_ID.match(body.voice):
            if body.speed != 1.0:
                raise ApiError(422, "invalid_input", "speed is only supported for stock voices")
            reference = await asyncio.to_thread(voices.load_reference, self.storage, body.voice)
            return lambda piece: self.models["VoiceClone"].synthesize.remote(piece, reference)
        stock = await self.models["TTS"].voices.remote()
        if body.voice not in stock:
            raise ApiError(
                422, "unknown_voice", f"voice {body.voice!r} is neither one of {stock} nor a voice_id"
            )
        return lambda piece: self.models["TTS"].synthesize.remote(piece, body.voice, body.speed)

    @app.post("/v1/voices", status_code=201, tags=["voices"], dependencies=[Authorized])
    async def register_voice(
        self,
        file: Annotated[UploadFile, File(description="A 5 to 30 s reference clip of the voice.")],
        name: Annotated[str, Form(min_length=1, max_length=100)] = "voice",
        transcript: Annotated[str | None, Form(max_length=2000)] = None,
    ) -> voices.VoiceProfile:
        """Register a voice for cloning; without `transcript` the ASR deployment writes it."""
        audio = await asyncio.to_thread(decode_input, await file.read(), self.settings)
        source = "given"
        if transcript is None or not transcript.strip():
            result = await self.models["ASR"].transcribe.remote(audio, None, False)
            transcript, source = result.text, (await self.models["ASR"].info.remote())["model_id"]
        reference = voices.validated_reference(audio, transcript or "")
        return await asyncio.to_thread(voices.save_voice, self.storage, name, reference, source)

    @app.get("/v1/voices", tags=["voices"], dependencies=[Authorized])
    async def list_voices(self) -> dict[str, Any]:
        """Stock voices (names) and registered voices (profiles)."""
        stock = await self.models["TTS"].voices.remote()
        registered = await asyncio.to_thread(voices.list_profiles, self.storage)
        return {"stock": stock, "registered": [p.model_dump() for p in registered]}

    @app.delete("/v1/voices/{voice_id}", status_code=204, tags=["voices"], dependencies=[Authorized])
    async def delete_voice(self, voice_id: str) -> Response:
        await asyncio.to_thread(voices.delete_voice, self.storage, voice_id)
        return Response(status_code=204)
