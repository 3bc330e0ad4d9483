"""Long-form music: MusicGen past its own window by windowed continuation, each window checkpointed.

A `music` job whose `duration_s` exceeds `WINDOW_S` is made window by window: the first window from the
prompt, each next one by `MusicClient.continue_audio` on the last `CONTEXT_S` of the track so far, which
returns that context (as the codec reconstructs it) followed by up to `WINDOW_S - CONTEXT_S` of new music.
The new part is appended after a `SEAM_FADE_S` crossfade from the track into the reconstructed context, so
the seam has no step; the track is cut to exactly `duration_s`.

Windows depend on each other, so they run one after another rather than through `ctx.map`. The stage
stores each finished window as its own small object under its attempt's stage prefix
(`windows/{index}-{fingerprint}.wav`) before the next starts; an attempt that resumes a job after a crash
restores every window an earlier attempt finished and generates only the rest. A window's fingerprint
covers the request, the model's identity, the seed and the window's place and length, so a window is
reused only where the same call would make it again. Progress is reported per window.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections.abc import Awaitable, Callable

import numpy as np

from infra.audio import Audio, AudioError, decode, encode
from infra.storage import ObjectNotFoundError, stage_prefix
from models.types import GeneratedAudio
from pipelines.engine.stages import StageContext
from pipelines.jobs.generation_request import GenerationJobRequest, MusicJobRequest

WINDOW_S = 30.0  # MusicGen's own window; `settings.max_generation_s` is its limit for one call
CONTEXT_S = 10.0  # how much of the track so far conditions the next window
SEAM_FADE_S = 0.25
MARGIN_S = 0.1  # asked for beyond what is missing, so codec-frame rounding never leaves the track short
WINDOW_SEED_BASE = 2**31


def is_long(request: MusicJobRequest) -> bool:
    """Whether the request is made in windows: text-only MusicGen longer than one window."""
    return request.model == "musicgen" and request.conditioning is None and request.duration_s > WINDOW_S


def planned_windows(duration_s: float) -> int:
    """How many windows a track of `duration_s` takes (the first `WINDOW_S`, then `WINDOW_S - CONTEXT_S`
    of new music each)."""
    return 1 + max(0, math.ceil((duration_s - WINDOW_S) / (WINDOW_S - CONTEXT_S) - 1e-9))


def window_seed(seed: int, index: int) -> int:
    """The seed of window `index`: the job's seed for the first, a hash of it for the others."""
    if index == 0:
        return seed
    digest = hashlib.blake2b(f"soundstage-window/{seed}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % WINDOW_SEED_BASE


def track_seams(request: GenerationJobRequest) -> list[float]:
    """Where the windows of the request's track meet (s), for the quality stage's seam check; [] for a
    clip made in one call."""
    if not isinstance(request, MusicJobRequest) or not is_long(request):
        return []
    step = WINDOW_S - CONTEXT_S
    return [WINDOW_S + i * step for i in range(planned_windows(request.duration_s) - 1)]


async def generate_long(ctx: StageContext[MusicJobRequest], seed: int, stage_index: int) -> GeneratedAudio:
    """The whole track `[C, round(duration_s * rate)]`, window by window, each window checkpointed under
    stage `stage_index`'s prefix of this attempt and restored from any earlier attempt's."""
    request, music = ctx.request, ctx.models.music
    model = (await music.info()).model
    base = {"request": request.model_dump(mode="json"), "model": model.as_dict(), "seed": seed}
    planned, done = planned_windows(request.duration_s), 0
    track: Audio | None = None
    target = 0
    while track is None or track.samples.shape[1] < target:
        ctx.check_cancelled()
        missing_s = (
            request.duration_s if track is None else (target - track.samples.shape[1]) / track.sample_rate
        )
        ask_s = min(WINDOW_S, missing_s if track is None else CONTEXT_S + missing_s + MARGIN_S)
        key = _window_key(done, {**base, "window": done, "ask_s": ask_s})
        window = await _restored(ctx, stage_index, key)
        if window is None:
            window = await _generate_window(ctx, track, ask_s, window_seed(seed, done))
            await asyncio.to_thread(
                ctx.storage.put_bytes, _attempt_key(ctx, stage_index, key), encode(window, "wav")
            )
        track = window if track is None else join_window(track, window)
        target = round(request.duration_s * track.sample_rate)
        done += 1
        await _report(ctx, done, max(planned, done))
    return GeneratedAudio(Audio(track.samples[:, :target], track.sample_rate), seed, model)


async def _generate_window(
    ctx: StageContext[MusicJobRequest], track: Audio | None, ask_s: float, seed: int
) -> Audio:
    request, music = ctx.request, ctx.models.music
    prompt, sampling = request.prompt, request.sampling()
    if track is None:
        made = await music.generate(prompt=prompt, duration_s=ask_s, seed=seed, sampling=sampling)
        return made.audio
    context = context_of(track)
    made = await music.continue_audio(
        clip=context, prompt=prompt, duration_s=ask_s, seed=seed, sampling=sampling
    )
    return made.audio


def context_of(track: Audio) -> Audio:
    """The last `CONTEXT_S` of `track` `[C, T]` (all of it when shorter)."""
    n = min(track.samples.shape[1], round(CONTEXT_S * track.sample_rate))
    return Audio(track.samples[:, -n:], track.sample_rate)


def join_window(track: Audio, window: Audio) -> Audio:
    """`track` followed by the new part of `window` (a continuation that starts with the track's last
    `CONTEXT_S`): the track's last `SEAM_FADE_S` crossfades into the window's reconstructed context."""
    if window.sample_rate != track.sample_rate or window.channels != track.channels:
        raise ValueError(f"window {window.sample_rate} Hz x{window.channels} != track {track.sample_rate} Hz")
    context = context_of(track).samples.shape[1]
    if window.samples.shape[1] <= context:
        raise ValueError(f"a continuation of {window.samples.shape[1]} samples adds nothing to {context}")
    fade = min(context, round(SEAM_FADE_S * track.sample_rate))
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    head = track.samples[:, : track.samples.shape[1] - fade]
    seam = track.samples[:, -fade:] * (1 - ramp) + window.samples[:, context - fade : context] * ramp
    samples = np.concatenate([head, seam, window.samples[:, context:]], axis=1)
    return Audio(samples.astype(np.float32), track.sample_rate)


def _window_key(index: int, facts: dict[str, object]) -> str:
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]
    return f"windows/{index:03d}-{digest}.wav"


def _attempt_key(
    ctx: StageContext[MusicJobRequest], stage_index: int, key: str, attempt: int | None = None
) -> str:
    attempt = ctx.job.attempt if attempt is None else attempt
    return stage_prefix(ctx.job.id, stage_index, STAGE_NAMES[stage_index], attempt) + key


async def _restored(ctx: StageContext[MusicJobRequest], stage_index: int, key: str) -> Audio | None:
    """The window stored under `key` by this attempt or the latest earlier one that has it; None if none
    has, or what is stored does not decode."""
    for attempt in range(ctx.job.attempt, -1, -1):
        try:
            data = await asyncio.to_thread(
                ctx.storage.get_bytes, _attempt_key(ctx, stage_index, key, attempt)
            )
        except ObjectNotFoundError:
            continue
        try:
            return await asyncio.to_thread(decode, data)
        except AudioError:
            continue
    return None


async def _report(ctx: StageContext[MusicJobRequest], done: int, total: int) -> None:
    report: Callable[[int, int], Awaitable[None]] | None = ctx.on_segments
    if report is not None:
        await report(done, total)


STAGE_NAMES = {0: "generate", 1: "quality"}
"""The generation stages that make windows, by index in `generation_stages` (checked there)."""
