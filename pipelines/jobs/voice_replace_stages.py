"""Voice replacement's model stages: decode → separate → diarize → transcribe → synthesize → remix.

Each stage returns a typed record (below) that later stages read by type; the store stage and the job
kind are in `pipelines/jobs/voice_replace.py`. Diarization and transcription listen at `WORK_RATE`
(16 kHz mono, the rate of the VAD, speaker and Whisper models); separation reads and the remix writes
the input's own rate and channels.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from infra.audio import Audio, decode, encode, resample, to_mono
from infra.dsp.regions import Turn
from infra.dsp.remix import match_layout, remix
from infra.dsp.segments import DEFAULT_OVERLAP_S, DEFAULT_SEGMENT_S
from infra.dsp.stems import two_stems
from infra.dsp.time_fit import fit_line
from infra.settings import load_settings
from infra.storage import Storage
from infra.tenancy import voice_scope
from infra.uploads import load_upload
from infra.voice_store import load_voice
from models.types import Segment as TranscriptSegment
from models.types import Transcript, VoiceReference
from pipelines.engine.clients import ModelClient, Models
from pipelines.engine.stages import StageContext, StageOutput, StageResult
from pipelines.jobs.separation import separate_in_segments
from pipelines.voice.lines import Line, attribute_words, group_lines, plan_chunks, resolve_target, room_after
from pipelines.voice.report import ReplacedLine, placements, replaced_line
from pipelines.voice.request import VoiceReplaceJobRequest, check_audible, is_voice_id

WORK_RATE = 16000
Ctx = StageContext[VoiceReplaceJobRequest]


class NoSpeechError(ValueError):
    code = "no_speech"


class Decoded(StageOutput):
    """The input's layout; object `speech.wav`: the input as mono at `WORK_RATE`."""

    sample_rate: int
    channels: int
    num_samples: int
    duration_s: float


class Separated(StageOutput):
    """With `separate`: objects `vocals.wav` (mono, `WORK_RATE`) and `accompaniment.wav` (the input's
    layout), from `segments` segments; without: nothing."""

    separated: bool
    segments: int = 0
    deployment: str | None = None
    model: dict[str, Any] | None = None


class Diarized(StageOutput):
    """Speaker turns of the analysed audio and the resolved target speaker."""

    turns: list[Turn]
    target: str
    deployment: str
    model: dict[str, Any]


class Transcribed(StageOutput):
    """Every speaker's lines (words attributed to turns) and the language Whisper heard."""

    lines: list[Line]
    language: str | None
    deployment: str
    model: dict[str, Any]


class Synthesized(StageOutput):
    """One report entry per target line; objects `line-NNN.wav`: the new lines, time-fitted, at the
    input's rate."""

    lines: list[ReplacedLine]
    deployment: str
    model: dict[str, Any]


class Remixed(StageOutput):
    """Per replaced line, the seconds of its tail cut at the end of the input; object `result.wav`."""

    cut_s: list[float]


def _wav(audio: Audio) -> bytes:
    return encode(audio, "wav")


def _original(ctx: Ctx) -> Audio:
    return load_upload(ctx.storage, ctx.request.upload_id)


# 1. decode ---------------------------------------------------------------------------------------


async def decode_stage(ctx: Ctx) -> StageResult:
    """The input as mono at `WORK_RATE` (`speech.wav`); the original stays in the upload for the remix."""
    return await asyncio.to_thread(_decode, ctx)


def _decode(ctx: Ctx) -> StageResult:
    original = _original(ctx)
    check_audible(original)
    record = Decoded(
        sample_rate=original.sample_rate,
        channels=original.channels,
        num_samples=original.num_samples,
        duration_s=original.duration_s,
    )
    return StageResult(record=record, objects={"speech.wav": _wav(resample(to_mono(original), WORK_RATE))})


# 2. separate -------------------------------------------------------------------------------------


async def separate_stage(ctx: Ctx) -> StageResult:
    """With `separate`: vocals and accompaniment, separated in overlapping segments fanned out over the
    Separation replicas. Without: nothing (speech-only input)."""
    if not ctx.request.separate:
        return StageResult(record=Separated(separated=False))
    client = ctx.models.separation
    card = await client.info()
    original = await asyncio.to_thread(_original, ctx)
    audio = await asyncio.to_thread(resample, original, card.sample_rate)
    stems, segments = await separate_in_segments(ctx, client, audio, DEFAULT_SEGMENT_S, DEFAULT_OVERLAP_S)
    layout = (original.sample_rate, original.channels, original.num_samples)
    objects = await asyncio.to_thread(_stem_objects, stems, layout)
    record = Separated(separated=True, segments=segments, deployment=client.deployment, model=card.identity)
    return StageResult(record=record, objects=objects)


def _stem_objects(stems: dict[str, Audio], layout: tuple[int, int, int]) -> dict[str, bytes]:
    """The stems as `vocals.wav` (mono, `WORK_RATE`) and `accompaniment.wav` (in `layout`: the input's
    sample rate, channels and length)."""
    stems = two_stems(stems, keep="vocals")
    return {
        "vocals.wav": _wav(resample(to_mono(stems["vocals"]), WORK_RATE)),
        "accompaniment.wav": _wav(match_layout(stems["no_vocals"], *layout)),
    }


def analyses_vocals(ctx: Ctx) -> bool:
    """Whether diarization and transcription listen to the separated vocals (else to the input)."""
    return ctx.output(Separated).separated and ctx.request.analyze == "vocals"


def analysed_source(ctx: Ctx) -> str:
    """What was analysed, in words (the report's `analyzed`, the no-speech message)."""
    return "separated vocals" if analyses_vocals(ctx) else "input"


def analysis_audio(ctx: Ctx) -> Audio:
    """What diarization and transcription listen to: the separated vocals or the (mono) input."""
    if analyses_vocals(ctx):
        return decode(ctx.object(Separated, "vocals.wav"))
    return decode(ctx.object(Decoded, "speech.wav"))


# 3. diarize --------------------------------------------------------------------------------------


async def diarize_stage(ctx: Ctx) -> StageResult:
    """Speaker turns of the analysed audio and the resolved target speaker."""
    audio = await asyncio.to_thread(analysis_audio, ctx)
    client = ctx.models.diarizer
    turns = await client.diarize(audio=audio, num_speakers=ctx.request.num_speakers)
    if not turns:
        raise NoSpeechError(f"no speech found in the {analysed_source(ctx)}")
    target = resolve_target(turns, ctx.request.target_speaker)
    model = (await client.info()).identity
    return StageResult(record=Diarized(turns=turns, target=target, deployment=client.deployment, model=model))


# 4. transcribe -----------------------------------------------------------------------------------


async def transcribe_stage(ctx: Ctx) -> StageResult:
    """Whisper over chunks of consecutive turns (fanned out), words attributed to speakers, lines."""
    audio = await asyncio.to_thread(analysis_audio, ctx)
    diarized = ctx.output(Diarized)
    turns, target = diarized.turns, diarized.target
    chunks = plan_chunks(turns, audio.duration_s)
    asr = ctx.models.asr
    transcripts: list[Transcript] = await ctx.map(
        lambda chunk: asr.transcribe(audio=_span(audio, *chunk), word_timestamps=True), chunks
    )
    segments = [
        _shifted(s, start) for (start, _), t in zip(chunks, transcripts, strict=True) for s in t.segments
    ]
    lines = group_lines(attribute_words(segments, turns), turns)
    if not any(line.speaker == target for line in lines):
        raise NoSpeechError(f"no words were transcribed for the target speaker {target}")
    record = Transcribed(
        lines=lines,
        language=transcripts[0].language if transcripts else None,
        deployment=asr.deployment,
        model=(await asr.info()).identity,
    )
    return StageResult(record=record)


def _span(audio: Audio, start_s: float, end_s: float) -> Audio:
    start, end = round(start_s * audio.sample_rate), round(end_s * audio.sample_rate)
    return Audio(audio.samples[:, start:end].copy(), audio.sample_rate)


def _shifted(segment: TranscriptSegment, offset_s: float) -> TranscriptSegment:
    words = tuple(replace(w, start=w.start + offset_s, end=w.end + offset_s) for w in segment.words)
    return replace(segment, start=segment.start + offset_s, end=segment.end + offset_s, words=words)


# 5. synthesize -----------------------------------------------------------------------------------


def voice_client(request: VoiceReplaceJobRequest, models: Models) -> ModelClient:
    """The deployment that speaks `request.voice`: VoiceClone for a voice_id, else the stock TTS."""
    return models.voice_clone if is_voice_id(request.voice) else models.tts


async def synthesize_stage(ctx: Ctx) -> StageResult:
    """Each target line spoken in the new voice (fanned out), trimmed and time-fitted to its slot."""
    lines, target = ctx.output(Transcribed).lines, ctx.output(Diarized).target
    decoded = ctx.output(Decoded)
    targets = [i for i, line in enumerate(lines) if line.speaker == target]
    speak = await speaker(ctx)
    clips: list[Audio] = await ctx.map(lambda i: speak(lines[i].text), targets)
    slots = [(lines[i], room_after(lines, i, decoded.duration_s)) for i in targets]
    objects, report = await asyncio.to_thread(_fit_lines, clips, slots, decoded.sample_rate)
    client = voice_client(ctx.request, ctx.models)
    record = Synthesized(lines=report, deployment=client.deployment, model=(await client.info()).identity)
    return StageResult(record=record, objects=objects)


def _fit_lines(
    clips: Sequence[Audio], slots: Sequence[tuple[Line, float]], rate: int
) -> tuple[dict[str, bytes], list[ReplacedLine]]:
    """Each clip trimmed and time-fitted at the input's `rate` to its line's slot (with the silence
    after it): the `line-NNN.wav` objects and the report entries."""
    objects: dict[str, bytes] = {}
    report: list[ReplacedLine] = []
    for n, (clip, (line, room)) in enumerate(zip(clips, slots, strict=True)):
        fitted = fit_line(resample(clip, rate), line.slot_s, room)
        objects[f"line-{n:03d}.wav"] = _wav(fitted.audio)
        report.append(replaced_line(line, fitted, rate))
    return objects, report


async def speaker(ctx: Ctx) -> Callable[[str], Awaitable[Audio]]:
    """How to speak a line in the requested voice. A voice_id is looked up again now, as the job's
    tenant: a voice deleted since admission, or one of another tenant's (a record naming it), fails the
    stage with `voice_not_found` and is never used."""
    voice = ctx.request.voice
    if is_voice_id(voice):
        reference = await asyncio.to_thread(load_voice_reference, ctx.storage, voice, ctx.job.owner)
        clone = ctx.models.voice_clone
        return lambda text: clone.synthesize(text=text, reference=reference)
    tts = ctx.models.tts
    return lambda text: tts.synthesize(text=text, voice=voice)


def load_voice_reference(storage: Storage, voice_id: str, job_owner: str | None) -> VoiceReference:
    """A registered voice's reference clip and transcript, if the job's owner may use it
    (`VoiceNotFoundError`, code `voice_not_found`, if not, or if it was deleted). An admin key's job
    and a job of the open API (no owner) may use any voice, as at admission."""
    audio, transcript = load_voice(storage, voice_id, voice_scope(job_owner, load_settings()))
    return VoiceReference(audio=audio, transcript=transcript)


# 6. remix ----------------------------------------------------------------------------------------


async def remix_stage(ctx: Ctx) -> StageResult:
    """The input with the target's regions replaced by the new lines (over the accompaniment if separated)."""
    return await asyncio.to_thread(_remix, ctx)


def _remix(ctx: Ctx) -> StageResult:
    original = _original(ctx)
    bed = decode(ctx.object(Separated, "accompaniment.wav")) if ctx.output(Separated).separated else None
    entries = ctx.output(Synthesized).lines
    clips = [decode(ctx.object(Synthesized, f"line-{n:03d}.wav")) for n in range(len(entries))]
    regions = [entry.region_samples for entry in entries]
    result, cut_s = remix(original, placements(regions, clips, original.num_samples), bed)
    return StageResult(record=Remixed(cut_s=cut_s), objects={"result.wav": _wav(result)})
