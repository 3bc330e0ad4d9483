"""The `soundscape` job kind: layers generated concurrently, placed on a timeline, mixed, mastered.

    generate (one take per layer, and one for a prompt bed, fanned out over the AudioGen / Stable Audio
    replicas) → mix (`infra/dsp/layering.py`) → master (loudness under a true-peak ceiling) → store

Every take is checkpointed on its own as soon as it is made (`takes/{index}-{fingerprint}.wav` under its
attempt's `generate` prefix), so an attempt that resumes a job after a crash restores every take an
earlier attempt finished and generates only the missing ones. A take's fingerprint covers its prompt,
model identity, seed and length, so a take is reused only where the same call would make it again.
The stored result (`soundscape_store.py`) has the mastered mix, each take as generated, and a ZIP of
stems: every layer alone on the whole timeline, at the master's gain, so the stems add up to the mix.

There is no quality stage: a layer is what its prompt asked for (rain is meant to be noise-like), and a
regeneration would move the timing the caller placed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from infra.audio import Audio, AudioError, decode, encode
from infra.storage import ObjectNotFoundError, stage_prefix
from models.types import ModelInfo, Sampling
from pipelines.engine.clients import ModelCard, ModelClient, Models, TextToAudioClient
from pipelines.engine.kinds import Admission, AdmissionError, JobKind
from pipelines.engine.stages import Stage, StageContext, StageResult, Stored
from pipelines.jobs.separation import admit_upload
from pipelines.jobs.soundscape_mix import (
    LayersGenerated,
    Mixed,
    SoundscapeMastered,
    TakeRecord,
    master_soundscape,
    mix_soundscape,
    take_object,
)
from pipelines.jobs.soundscape_request import (
    SOUNDSCAPE_JOB,
    LayerModel,
    SoundscapeBed,
    SoundscapeJobRequest,
    SoundscapeLayer,
)
from pipelines.jobs.soundscape_store import store_soundscape

GENERATE_INDEX, GENERATE_STAGE = 0, "generate"


@dataclass(frozen=True)
class Take:
    """One generator call: take `index` (a layer's, or `len(layers)` for a prompt bed)."""

    index: int
    prompt: str
    model: LayerModel
    seed: int
    duration_s: float


# Admission ----------------------------------------------------------------------------------------


async def admit_soundscape(request: SoundscapeJobRequest, admission: Admission) -> SoundscapeJobRequest:
    """Each take within its model's limit of one call (422 naming the field), the prompts within the
    configured length, a bed upload existing (404); then every looped clip's length and the seed fixed."""
    limits = {model: await _limit_s(model, admission) for model in used_models(request)}
    layers = [_admit_layer(i, layer, request, limits, admission) for i, layer in enumerate(request.layers)]
    bed = request.bed
    if bed is not None and bed.upload_id is not None:
        await admit_upload(admission, bed.upload_id)
    elif bed is not None and bed.prompt is not None:
        _check_prompt("bed.prompt", bed.prompt, admission)
        model = bed.model or request.model
        if bed.clip_s is not None and bed.clip_s > limits[model]:
            message = f"bed.clip_s {bed.clip_s:g} exceeds the {limits[model]:g} s {model} makes in one call"
            raise AdmissionError("layer_too_long", message)
        bed = bed.model_copy(update={"clip_s": bed.clip_s or min(request.duration_s, limits[model])})
    return request.model_copy(update={"layers": layers, "bed": bed}).with_seed()


def _admit_layer(
    i: int,
    layer: SoundscapeLayer,
    request: SoundscapeJobRequest,
    limits: dict[LayerModel, float],
    admission: Admission,
) -> SoundscapeLayer:
    _check_prompt(f"layers.{i}.prompt", layer.prompt, admission)
    model = layer.model or request.model
    limit = limits[model]
    if not layer.loop and layer.duration_s > limit:
        message = (
            f"layers.{i}.duration_s {layer.duration_s:g} exceeds the {limit:g} s {model} makes in one call; "
            "set loop: true to repeat a shorter clip"
        )
        raise AdmissionError("layer_too_long", message)
    if layer.loop and layer.clip_s is not None and layer.clip_s > limit:
        message = f"layers.{i}.clip_s {layer.clip_s:g} exceeds the {limit:g} s {model} makes in one call"
        raise AdmissionError("layer_too_long", message)
    if layer.loop and layer.clip_s is None:
        return layer.model_copy(update={"clip_s": min(layer.duration_s, limit)})
    return layer


def _check_prompt(field: str, prompt: str, admission: Admission) -> None:
    if len(prompt) > admission.settings.max_prompt_chars:
        limit = admission.settings.max_prompt_chars
        raise AdmissionError("prompt_too_long", f"{field} exceeds {limit} characters")


async def _limit_s(model: LayerModel, admission: Admission) -> float:
    """The longest clip `model` makes in one call: the configured limit, and Stable Audio's own."""
    limit = admission.settings.max_generation_s
    if model == "stable-audio":
        limit = min(limit, float((await admission.models.stable_audio.info()).extra["max_duration_s"]))
    return limit


def used_models(request: SoundscapeJobRequest) -> list[LayerModel]:
    """The generators the request calls, in a stable order."""
    models = {layer.model or request.model for layer in request.layers}
    if request.bed is not None and request.bed.prompt is not None:
        models.add(request.bed.model or request.model)
    return sorted(models)


def _generators(request: SoundscapeJobRequest, models: Models) -> Sequence[ModelClient]:
    return [generator(models, model) for model in used_models(request)]


def generator(models: Models, model: LayerModel) -> TextToAudioClient:
    return models.stable_audio if model == "stable-audio" else models.sfx


# Stage `generate` ---------------------------------------------------------------------------------


def planned_takes(request: SoundscapeJobRequest) -> list[Take]:
    """One take per layer (its clip: `clip_s` when it loops, else `duration_s`), then a prompt bed's."""
    takes = [
        Take(i, layer.prompt, layer.model or request.model, request.layer_seed(i), _clip_s(layer))
        for i, layer in enumerate(request.layers)
    ]
    bed = request.bed
    if bed is not None and bed.prompt is not None:
        index = len(request.layers)
        model = bed.model or request.model
        takes.append(Take(index, bed.prompt, model, request.layer_seed(index), _bed_clip_s(bed, request)))
    return takes


def _clip_s(layer: SoundscapeLayer) -> float:
    return layer.clip_s if layer.loop and layer.clip_s is not None else layer.duration_s


def _bed_clip_s(bed: SoundscapeBed, request: SoundscapeJobRequest) -> float:
    return bed.clip_s if bed.clip_s is not None else request.duration_s


async def generate_layers(ctx: StageContext[SoundscapeJobRequest]) -> StageResult:
    """Stage `generate`: every take, concurrently over the replicas (a take whose replica died is
    retried alone); each one checkpointed as it finishes, and restored from an earlier attempt's."""
    request = ctx.request
    cards = {model: await generator(ctx.models, model).info() for model in used_models(request)}
    made = await ctx.map(lambda take: _make_take(ctx, take, cards[take.model]), planned_takes(request))
    record = LayersGenerated(takes=[r for r, _ in made])
    return StageResult(record=record, objects={take_object(r.index): wav for r, wav in made})


async def _make_take(
    ctx: StageContext[SoundscapeJobRequest], take: Take, card: ModelCard
) -> tuple[TakeRecord, bytes]:
    key = _take_key(take, card)
    restored = await _restored(ctx, key)
    if restored is not None:
        audio, wav = restored
        return _take_record(take, card, card.model, take.seed, audio), wav
    client = generator(ctx.models, take.model)
    generated = await client.generate(
        prompt=take.prompt, duration_s=take.duration_s, seed=take.seed, sampling=Sampling()
    )
    wav = await asyncio.to_thread(encode, generated.audio, "wav")
    await asyncio.to_thread(ctx.storage.put_bytes, _attempt_key(ctx, key, ctx.job.attempt), wav)
    return _take_record(take, card, generated.model, generated.seed, generated.audio), wav


def _take_record(take: Take, card: ModelCard, model: ModelInfo, seed: int, audio: Audio) -> TakeRecord:
    return TakeRecord(
        index=take.index,
        prompt=take.prompt,
        model=model,
        deployment=card.deployment,
        seed=seed,
        sample_rate=audio.sample_rate,
        channels=audio.channels,
        duration_s=audio.duration_s,
    )


def _take_key(take: Take, card: ModelCard) -> str:
    facts = {"take": take.__dict__, "model": card.identity, "deployment": card.deployment}
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]
    return f"takes/{take.index:02d}-{digest}.wav"


def _attempt_key(ctx: StageContext[SoundscapeJobRequest], key: str, attempt: int) -> str:
    return stage_prefix(ctx.job.id, GENERATE_INDEX, GENERATE_STAGE, attempt) + key


async def _restored(ctx: StageContext[SoundscapeJobRequest], key: str) -> tuple[Audio, bytes] | None:
    """The take stored under `key` by this attempt or the latest earlier one that has it (and whose
    bytes decode); None if none has."""
    for attempt in range(ctx.job.attempt, -1, -1):
        try:
            wav = await asyncio.to_thread(ctx.storage.get_bytes, _attempt_key(ctx, key, attempt))
            return await asyncio.to_thread(decode, wav), wav
        except (ObjectNotFoundError, AudioError):
            continue
    return None


SOUNDSCAPE_STAGES: tuple[Stage[SoundscapeJobRequest], ...] = (
    Stage(GENERATE_STAGE, generate_layers, output=LayersGenerated, models=_generators),
    Stage("mix", mix_soundscape, output=Mixed),
    Stage("master", master_soundscape, output=SoundscapeMastered),
    Stage("store", store_soundscape, output=Stored),
)

SOUNDSCAPE_KIND = JobKind(
    name=SOUNDSCAPE_JOB,
    request=SoundscapeJobRequest,
    stages=SOUNDSCAPE_STAGES,
    admit=admit_soundscape,
    summary="Layered sound design: each layer generated from its prompt (AudioGen or Stable Audio, "
    "concurrently over the replicas), placed at `start_s` for `duration_s` at `gain_db` (looped with "
    "`loop`), mixed over an optional bed (a prompt or an upload) and mastered. The result has the mix, "
    "every layer as generated and a ZIP of stems aligned to the mix.",
)
