"""Publishing a job's results: encode audio, write `outputs/{job_id}/…`, describe them for the result."""

from __future__ import annotations

import json
from typing import Any

from infra.audio import MEDIA_TYPES, Audio, AudioFormat, encode
from infra.storage import output_key
from pipelines.engine.stages import StageContext


def store_audio(ctx: StageContext, name: str, audio: Audio, fmt: AudioFormat) -> dict[str, Any]:
    """Write `outputs/{job_id}/{name}.{fmt}`; return its result entry (the ingress adds a presigned URL)."""
    key = output_key(ctx.job.id, f"{name}.{fmt}", ctx.job.attempt)
    ctx.storage.put_bytes(key, encode(audio, fmt), MEDIA_TYPES[fmt])
    return {
        "key": key,
        "media_type": MEDIA_TYPES[fmt],
        "sample_rate": audio.sample_rate,
        "channels": audio.channels,
        "duration_s": round(audio.duration_s, 6),
    }


def store_json(ctx: StageContext, name: str, body: Any) -> dict[str, Any]:
    """Write `outputs/{job_id}/{name}.json`; return its result entry."""
    key = output_key(ctx.job.id, f"{name}.json", ctx.job.attempt)
    ctx.storage.put_bytes(key, json.dumps(body, indent=1).encode(), "application/json")
    return {"key": key, "media_type": "application/json"}
