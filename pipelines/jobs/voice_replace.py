"""Voice replacement jobs: decode → separate → diarize → transcribe → synthesize → remix → store.

One speaker's lines are re-spoken in another voice (a stock TTS voice or a registered `voice_id`),
time-fitted to the original lines (infra/dsp/time_fit.py) and mixed back in (infra/dsp/remix.py); every
other sample of the input is kept. Each stage commits its output, so a resumed job skips finished stages.

Diarization and transcription listen at `WORK_RATE` (16 kHz mono, the rate of the VAD, speaker and
Whisper models); separation reads and the remix writes the input's own rate and channels.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from infra.audio import Audio, AudioFormat, decode, encode, peak_dbfs, resample, to_mono
from infra.dsp.regions import Turn
from infra.dsp.remix import match_layout, remix
from infra.dsp.segments import DEFAULT_OVERLAP_S, DEFAULT_SEGMENT_S
from infra.dsp.stems import two_stems
from infra.dsp.time_fit import MAX_RATE, MIN_RATE, fit_line
from infra.storage import output_key
from infra.voice_store import load_voice
from models.types import Segment as TranscriptSegment
from models.types import Transcript, VoiceReference
from pipelines.engine.outputs import store_audio, store_json
from pipelines.engine.stages import Stage, StageContext, StageResult
from pipelines.jobs.separation import load_input, separate_in_segments
from pipelines.voice.lines import (
    TARGET_PATTERN,
    Line,
    attribute_words,
    group_lines,
    lines_to_srt,
    plan_chunks,
    resolve_target,
    room_after,
)
from pipelines.voice.report import (
    debug_weights,
    line_entry,
    placements,
    replaced_region,
    transcript_body,
)

VOICE_REPLACE_JOB = "voice-replace"
WORK_RATE = 16000
SILENT_PEAK_DBFS = -70.0  # an input whose loudest sample is quieter than this has nothing to replace
VOICE_ID = re.compile(r"^[0-9a-f]{32}$")
MODEL_KEYS = ("model_id", "revision", "weights")


class SilentInputError(ValueError):
    code = "silent_input"


class NoSpeechError(ValueError):
    code = "no_speech"


class VoiceReplaceJobRequest(BaseModel):
    """`POST /v1/jobs/voice-replace` (after the ingress turned a direct file into an upload)."""

    model_config = ConfigDict(extra="forbid")

    upload_id: str = Field(pattern="^[0-9a-f]{32}$")
    voice: str = Field(min_length=1, max_length=64, description="Stock voice name or registered voice_id.")
    target_speaker: str = Field(default="auto", pattern=TARGET_PATTERN)
    separate: bool = Field(default=False, description="Split vocals from accompaniment first.")
    analyze: Literal["vocals", "input"] = Field(
        default="vocals",
        description="With `separate`: diarize and transcribe the separated vocals or the input mix.",
    )
    num_speakers: int | None = Field(default=None, ge=1, le=8)
    format: AudioFormat = "wav"


def _request(ctx: StageContext) -> VoiceReplaceJobRequest:
    return VoiceReplaceJobRequest.model_validate(ctx.request)


def _wav(audio: Audio) -> bytes:
    return encode(audio, "wav")


# 1. decode ---------------------------------------------------------------------------------------


async def decode_stage(ctx: StageContext) -> StageResult:
    """The input as mono at `WORK_RATE` (`speech.wav`); the original stays in the upload for the remix."""
    return await asyncio.to_thread(_decode, ctx)


def _decode(ctx: StageContext) -> StageResult:
    original = load_input(ctx, _request(ctx).upload_id)
    if peak_dbfs(original) < SILENT_PEAK_DBFS:
        raise SilentInputError(f"the input is silent (peak below {SILENT_PEAK_DBFS:g} dBFS)")
    facts = {
        "sample_rate": original.sample_rate,
        "channels": original.channels,
        "num_samples": original.num_samples,
        "duration_s": original.duration_s,
    }
    return StageResult(objects={"speech.wav": _wav(resample(to_mono(original), WORK_RATE))}, facts=facts)


# 2. separate -------------------------------------------------------------------------------------


async def separate_stage(ctx: StageContext) -> StageResult:
    """With `separate`: vocals (mono, `WORK_RATE`) and accompaniment (the input's layout), separated in
    overlapping segments fanned out over the Separation replicas. Without: nothing (speech-only input)."""
    request = _request(ctx)
    if not request.separate:
        return StageResult(facts={"separated": False})
    handle = ctx.handles["Separation"]
    info: dict[str, Any] = await handle.info.remote()
    original = await asyncio.to_thread(load_input, ctx, request.upload_id)
    audio = await asyncio.to_thread(resample, original, info["sample_rate"])
    stems, segments = await separate_in_segments(ctx, audio, DEFAULT_SEGMENT_S, DEFAULT_OVERLAP_S)
    layout = (original.sample_rate, original.channels, original.num_samples)
    objects = await asyncio.to_thread(_stem_objects, stems, layout)
    facts = {"separated": True, "segments": segments, "model": _model(info)}
    return StageResult(objects=objects, facts=facts)


def _stem_objects(stems: dict[str, Audio], layout: tuple[int, int, int]) -> dict[str, bytes]:
    """The stems as `vocals.wav` (mono, `WORK_RATE`) and `accompaniment.wav` (in `layout`: the input's
    sample rate, channels and length)."""
    stems = two_stems(stems, keep="vocals")
    return {
        "vocals.wav": _wav(resample(to_mono(stems["vocals"]), WORK_RATE)),
        "accompaniment.wav": _wav(match_layout(stems["no_vocals"], *layout)),
    }


def analysis_audio(ctx: StageContext) -> Audio:
    """What diarization and transcription listen to: the separated vocals or the (mono) input."""
    if ctx.facts("separate")["separated"] and _request(ctx).analyze == "vocals":
        return decode(ctx.object("separate", "vocals.wav"))
    return decode(ctx.object("decode", "speech.wav"))


# 3. diarize --------------------------------------------------------------------------------------


async def diarize_stage(ctx: StageContext) -> StageResult:
    """Speaker turns of the analysed audio and the resolved target speaker."""
    request = _request(ctx)
    audio = await asyncio.to_thread(analysis_audio, ctx)
    turns: list[Turn] = await ctx.handles["Diarizer"].diarize.remote(audio, request.num_speakers)
    if not turns:
        raise NoSpeechError(f"no speech found in the {_source(ctx)}")
    target = resolve_target(turns, request.target_speaker)
    model = _model(await ctx.handles["Diarizer"].info.remote())
    return StageResult(facts={"turns": [asdict(t) for t in turns], "target": target, "model": model})


def _source(ctx: StageContext) -> str:
    separated = ctx.facts("separate")["separated"] and _request(ctx).analyze == "vocals"
    return "separated vocals" if separated else "input"


def _turns(ctx: StageContext) -> list[Turn]:
    return [Turn(**t) for t in ctx.facts("diarize")["turns"]]


# 4. transcribe -----------------------------------------------------------------------------------


async def transcribe_stage(ctx: StageContext) -> StageResult:
    """Whisper over chunks of consecutive turns (fanned out), words attributed to speakers, lines."""
    audio = await asyncio.to_thread(analysis_audio, ctx)
    turns, target = _turns(ctx), ctx.facts("diarize")["target"]
    chunks = plan_chunks(turns, audio.duration_s)
    asr = ctx.handles["ASR"]
    transcripts: list[Transcript] = await ctx.map(
        lambda chunk: asr.transcribe.remote(_span(audio, *chunk), None, True), chunks
    )
    segments = [
        _shifted(s, start) for (start, _), t in zip(chunks, transcripts, strict=True) for s in t.segments
    ]
    lines = group_lines(attribute_words(segments, turns), turns)
    if not any(line.speaker == target for line in lines):
        raise NoSpeechError(f"no words were transcribed for the target speaker {target}")
    facts = {
        "lines": [asdict(line) for line in lines],
        "model": _model(await asr.info.remote()),
        "language": transcripts[0].language if transcripts else None,
    }
    return StageResult(facts=facts)


def _span(audio: Audio, start_s: float, end_s: float) -> Audio:
    start, end = round(start_s * audio.sample_rate), round(end_s * audio.sample_rate)
    return Audio(audio.samples[:, start:end].copy(), audio.sample_rate)


def _shifted(segment: TranscriptSegment, offset_s: float) -> TranscriptSegment:
    words = tuple(replace(w, start=w.start + offset_s, end=w.end + offset_s) for w in segment.words)
    return replace(segment, start=segment.start + offset_s, end=segment.end + offset_s, words=words)


def _lines(ctx: StageContext) -> list[Line]:
    return [Line(**line) for line in ctx.facts("transcribe")["lines"]]


# 5. synthesize -----------------------------------------------------------------------------------


async def synthesize_stage(ctx: StageContext) -> StageResult:
    """Each target line spoken in the new voice (fanned out), trimmed and time-fitted to its slot."""
    request = _request(ctx)
    lines, target = _lines(ctx), ctx.facts("diarize")["target"]
    duration, rate = ctx.facts("decode")["duration_s"], ctx.facts("decode")["sample_rate"]
    targets = [i for i, line in enumerate(lines) if line.speaker == target]
    speak, handle = await _speaker(ctx, request.voice)
    clips: list[Audio] = await ctx.map(lambda i: speak(lines[i].text), targets)
    slots = [(lines[i], room_after(lines, i, duration)) for i in targets]
    objects, report = await asyncio.to_thread(_fit_lines, clips, slots, rate)
    facts = {"lines": report, "model": _model(await ctx.handles[handle].info.remote()), "deployment": handle}
    return StageResult(objects=objects, facts=facts)


def _fit_lines(
    clips: Sequence[Audio], slots: Sequence[tuple[Line, float]], rate: int
) -> tuple[dict[str, bytes], list[dict[str, Any]]]:
    """Each clip trimmed and time-fitted at the input's `rate` to its line's slot (with the silence
    after it): the `line-NNN.wav` objects and the report entries."""
    objects: dict[str, bytes] = {}
    report: list[dict[str, Any]] = []
    for n, (clip, (line, room)) in enumerate(zip(clips, slots, strict=True)):
        fitted = fit_line(resample(clip, rate), line.slot_s, room)
        objects[f"line-{n:03d}.wav"] = _wav(fitted.audio)
        entry = line_entry(
            line, fitted.natural_s, fitted.duration_s, fitted.rate, fitted.overrun_s, fitted.overlap_s
        )
        report.append(
            {**entry, "region_samples": replaced_region(line, fitted.overrun_s - fitted.overlap_s, rate)}
        )
    return objects, report


async def _speaker(ctx: StageContext, voice: str) -> tuple[Callable[[str], Awaitable[Audio]], str]:
    """How to speak a line in `voice`, and the deployment that does it."""
    if VOICE_ID.match(voice):
        reference = await asyncio.to_thread(load_voice_reference, ctx, voice)
        return (lambda text: ctx.handles["VoiceClone"].synthesize.remote(text, reference)), "VoiceClone"
    return (lambda text: ctx.handles["TTS"].synthesize.remote(text, voice, 1.0)), "TTS"


def load_voice_reference(ctx: StageContext, voice_id: str) -> VoiceReference:
    """A registered voice's reference clip and transcript (`VoiceNotFoundError` if it was deleted)."""
    audio, transcript = load_voice(ctx.storage, voice_id)
    return VoiceReference(audio=audio, transcript=transcript)


# 6. remix ----------------------------------------------------------------------------------------


async def remix_stage(ctx: StageContext) -> StageResult:
    """The input with the target's regions replaced by the new lines (over the accompaniment if separated)."""
    return await asyncio.to_thread(_remix, ctx)


def _remix(ctx: StageContext) -> StageResult:
    original = load_input(ctx, _request(ctx).upload_id)
    bed = decode(ctx.object("separate", "accompaniment.wav")) if ctx.facts("separate")["separated"] else None
    entries = ctx.facts("synthesize")["lines"]
    clips = [decode(ctx.object("synthesize", f"line-{n:03d}.wav")) for n in range(len(entries))]
    result, cut_s = remix(original, placements(entries, clips, original.num_samples), bed)
    return StageResult(objects={"result.wav": _wav(result)}, facts={"cut_s": cut_s})


# 7. store ----------------------------------------------------------------------------------------


async def store_stage(ctx: StageContext) -> StageResult:
    return await asyncio.to_thread(_store, ctx)


def _store(ctx: StageContext) -> StageResult:
    request = _request(ctx)
    lines = _lines(ctx)
    srt_key = output_key(ctx.job.id, "transcript.srt")
    ctx.storage.put_bytes(srt_key, lines_to_srt(lines).encode(), "application/x-subrip")
    models = used_models(ctx)
    result = {
        "audio": store_audio(ctx, "result", decode(ctx.object("remix", "result.wav")), request.format),
        "transcript": store_json(ctx, "transcript", transcript_body(lines, ctx.facts("transcribe"))),
        "subtitles": {"key": srt_key, "media_type": "application/x-subrip"},
        "report": store_json(ctx, "report", _report(ctx, models)),
        "metadata": {
            "target_speaker": ctx.facts("diarize")["target"],
            "voice": request.voice,
            "lines_replaced": len(ctx.facts("synthesize")["lines"]),
            "models": models,
            "debug_weights": debug_weights(models),
        },
    }
    return StageResult(facts={"result": result})


def used_models(ctx: StageContext) -> dict[str, dict[str, Any]]:
    """Model id, revision and weights kind of every deployment the job called, by deployment name."""
    models = {"Diarizer": ctx.facts("diarize")["model"], "ASR": ctx.facts("transcribe")["model"]}
    models[ctx.facts("synthesize")["deployment"]] = ctx.facts("synthesize")["model"]
    if ctx.facts("separate")["separated"]:
        models["Separation"] = ctx.facts("separate")["model"]
    return models


def _report(ctx: StageContext, models: dict[str, dict[str, Any]]) -> dict[str, Any]:
    request = _request(ctx)
    lines = [
        {**entry, "cut_s": round(cut_s, 3)}
        for entry, cut_s in zip(ctx.facts("synthesize")["lines"], ctx.facts("remix")["cut_s"], strict=True)
    ]
    return {
        "target_speaker": ctx.facts("diarize")["target"],
        "voice": request.voice,
        "separate": request.separate,
        "analyzed": _source(ctx),
        "stretch_bounds": [MIN_RATE, MAX_RATE],
        "duration_s": round(ctx.facts("decode")["duration_s"], 6),
        "lines": lines,
        "models": models,
        "debug_weights": debug_weights(models),
    }


def _model(info: Mapping[str, Any]) -> dict[str, Any]:
    return {key: info.get(key) for key in MODEL_KEYS}


def _separation_models(request: Mapping[str, Any]) -> Sequence[str]:
    return ("Separation",) if request.get("separate") else ()


def _voice_models(request: Mapping[str, Any]) -> Sequence[str]:
    return ("VoiceClone",) if VOICE_ID.match(str(request.get("voice", ""))) else ("TTS",)


VOICE_REPLACE_STAGES = (
    Stage("decode", decode_stage),
    Stage("separate", separate_stage, models=_separation_models),
    Stage("diarize", diarize_stage, models=("Diarizer",)),
    Stage("transcribe", transcribe_stage, models=("ASR",)),
    Stage("synthesize", synthesize_stage, models=_voice_models),
    Stage("remix", remix_stage),
    Stage("store", store_stage),
)
