"""The generation job kinds, `music` and `sfx`: admission, the generator call and the stage list.

generate → quality (regenerate ≤ 2x) → master (loudness, optional loop) → spectrogram → store
(audio, spectrogram PNG and metadata in `outputs/`). The request models live in
`pipelines/jobs/generation_request.py`, the stages after `generate` and every stage record in
`pipelines/jobs/generation_post.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TypeVar, cast

from infra.audio import encode
from infra.uploads import load_upload
from models.types import GeneratedAudio
from pipelines.engine.clients import ModelClient, Models
from pipelines.engine.kinds import Admission, AdmissionError, JobKind
from pipelines.engine.stages import Stage, StageContext, StageResult, Stored
from pipelines.jobs.generation_long import STAGE_NAMES, WINDOW_S, generate_long, is_long, track_seams
from pipelines.jobs.generation_post import (
    CLIP,
    Generated,
    Mastered,
    QualityChecked,
    Spectrogram,
    draw_spectrogram,
    master_audio,
    select_clip,
    store_clip,
)
from pipelines.jobs.generation_request import (
    MAX_MELODY_S,
    MIN_CONTINUATION_S,
    MUSIC_JOB,
    SFX_JOB,
    GenerationJobRequest,
    MusicJobRequest,
    SfxJobRequest,
)
from pipelines.jobs.separation import admit_upload

G = TypeVar("G", bound=GenerationJobRequest)


# Admission ----------------------------------------------------------------------------------------


async def admit_music(request: MusicJobRequest, admission: Admission) -> MusicJobRequest:
    """The conditioning upload exists (404) and suits the request, the duration and the prompt are
    within the limits (422); the seed is fixed."""
    await _check_conditioning(request, admission)
    return await _admit_generation(request, admission)


async def admit_sfx(request: SfxJobRequest, admission: Admission) -> SfxJobRequest:
    """The duration and the prompt are within the limits (422); the seed is fixed."""
    return await _admit_generation(request, admission)


async def _check_conditioning(request: MusicJobRequest, admission: Admission) -> None:
    """The melody or continuation upload exists (404) and its length suits the request (422)."""
    conditioning = request.conditioning
    if conditioning is None:
        return
    clip = await admit_upload(admission, conditioning["upload_id"])
    if conditioning["kind"] == "melody" and clip.duration_s > MAX_MELODY_S:
        message = f"the melody upload is {clip.duration_s:g} s; at most {MAX_MELODY_S:g} s"
        raise AdmissionError("melody_too_long", message)
    if conditioning["kind"] == "continuation" and clip.duration_s + MIN_CONTINUATION_S > request.duration_s:
        message = (
            f"duration_s {request.duration_s:g} is the total length and must exceed the clip's "
            f"{clip.duration_s:g} s by at least {MIN_CONTINUATION_S:g} s"
        )
        raise AdmissionError("clip_too_long", message)


async def _admit_generation(request: G, admission: Admission) -> G:
    """`duration_too_long` past the configured limit (`max_generation_s`; `max_long_music_s` for a
    text-only MusicGen track longer than one window; Stable Audio's own), `prompt_too_long`; then the
    request with its seed fixed."""
    settings = admission.settings
    limit = settings.max_generation_s
    if isinstance(request, MusicJobRequest) and is_long(request) and limit >= WINDOW_S:
        limit = settings.max_long_music_s  # made in WINDOW_S windows, each within the per-call limit
    if request.model == "stable-audio":
        limit = min(limit, (await admission.models.stable_audio.info()).extra["max_duration_s"])
    if request.duration_s > limit:
        message = f"duration_s {request.duration_s:g} exceeds the limit of {limit:g} s"
        raise AdmissionError("duration_too_long", message)
    if len(request.prompt) > settings.max_prompt_chars:
        raise AdmissionError("prompt_too_long", f"prompt exceeds {settings.max_prompt_chars} characters")
    return request.with_seed()


# The generator call -------------------------------------------------------------------------------


def generator_clients(request: GenerationJobRequest, models: Models) -> Sequence[ModelClient]:
    """The client a generation request calls (its model's identity joins the stage fingerprint)."""
    if request.model == "stable-audio":
        return (models.stable_audio,)
    if request.model == "audiogen":
        return (models.sfx,)
    conditioning = request.conditioning
    if conditioning is not None and conditioning["kind"] == "melody":
        return (models.melody,)
    return (models.music,)


async def call_generator(ctx: StageContext[G], seed: int, stage_index: int) -> GeneratedAudio:
    """One clip for the request with `seed`: Stable Audio or AudioGen from text, MusicGen-Melody with a
    melody upload, MusicGen continuing an upload, or MusicGen from text; a MusicGen track longer than one
    window in windows checkpointed under stage `stage_index` (`generation_long`)."""
    request, models = ctx.request, ctx.models
    if isinstance(request, MusicJobRequest) and is_long(request):
        return await generate_long(cast(StageContext[MusicJobRequest], ctx), seed, stage_index)
    prompt, duration_s, sampling = request.prompt, request.duration_s, request.sampling()
    if request.model == "stable-audio":
        client = models.stable_audio
        return await client.generate(prompt=prompt, duration_s=duration_s, seed=seed, sampling=sampling)
    if request.model == "audiogen":
        return await models.sfx.generate(prompt=prompt, duration_s=duration_s, seed=seed, sampling=sampling)
    conditioning = request.conditioning
    if conditioning is None:
        return await models.music.generate(prompt=prompt, duration_s=duration_s, seed=seed, sampling=sampling)
    clip = await asyncio.to_thread(load_upload, ctx.storage, conditioning["upload_id"])
    if conditioning["kind"] == "melody":
        return await models.melody.generate(
            prompt=prompt, duration_s=duration_s, seed=seed, sampling=sampling, melody=clip
        )
    return await models.music.continue_audio(
        clip=clip, prompt=prompt, duration_s=duration_s, seed=seed, sampling=sampling
    )


# Stages -------------------------------------------------------------------------------------------


async def generate_clip(ctx: StageContext[G]) -> StageResult:
    """Stage `generate`: call the chosen generator; commit the clip as 32-bit float WAV."""
    generated = await call_generator(ctx, ctx.request.fixed_seed(), GENERATE_INDEX)
    audio = generated.audio
    record = Generated(
        model=generated.model,
        seed=generated.seed,
        sample_rate=audio.sample_rate,
        channels=audio.channels,
        duration_s=audio.duration_s,
        conditioning=ctx.request.conditioning,
        seams_s=track_seams(ctx.request),
    )
    wav = await asyncio.to_thread(encode, audio, "wav")
    return StageResult(record=record, objects={CLIP: wav})


async def check_quality(ctx: StageContext[G]) -> StageResult:
    """Stage `quality`: score the clip; generate again with derived seeds while it fails
    (`generation_post.select_clip`)."""

    async def regenerate(seed: int) -> GeneratedAudio:
        return await call_generator(ctx, seed, QUALITY_INDEX)

    return await select_clip(ctx, regenerate)


GENERATE_INDEX, QUALITY_INDEX = 0, 1  # where long-form windows are checkpointed (`generation_long`)


def generation_stages(request: type[G]) -> tuple[Stage[G], ...]:
    """The stages of a generation kind whose request model is `request`."""
    stages: tuple[Stage[G], ...] = (
        Stage("generate", generate_clip, output=Generated, models=generator_clients),
        Stage("quality", check_quality, output=QualityChecked, models=generator_clients),
        Stage("master", master_audio, output=Mastered),
        Stage("spectrogram", draw_spectrogram, output=Spectrogram),
        Stage("store", store_clip, output=Stored),
    )
    assert all(stages[i].name == name for i, name in STAGE_NAMES.items())
    return stages


MUSIC_STAGES = generation_stages(MusicJobRequest)
SFX_STAGES = generation_stages(SfxJobRequest)

MUSIC_KIND = JobKind(
    name=MUSIC_JOB,
    request=MusicJobRequest,
    stages=MUSIC_STAGES,
    admit=admit_music,
    summary="Generate music from a text prompt (MusicGen, or `model: stable-audio`), optionally following "
    "an uploaded melody (`melody_upload_id`) or continuing an uploaded clip (`continue_upload_id`). "
    "Returns `202 {id, status_url}`; poll the status URL.",
)

SFX_KIND = JobKind(
    name=SFX_JOB,
    request=SfxJobRequest,
    stages=SFX_STAGES,
    admit=admit_sfx,
    summary="Generate a sound effect from a text prompt (AudioGen, or `model: stable-audio`).",
)
