"""OpenAI-compatible renderings of a transcript: json, text, srt, vtt, verbose_json (pure functions), and
the streamed text events."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

from deployments.http.errors import domain_error
from models.types import Segment, Transcript

logger = logging.getLogger(__name__)

ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
RESPONSE_FORMATS: tuple[ResponseFormat, ...] = ("json", "text", "srt", "vtt", "verbose_json")
Granularity = Literal["word", "segment"]


def _timestamp(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _cue_text(segment: Segment, speaker: str | None) -> str:
    text = segment.text.strip()
    return f"[{speaker}] {text}" if speaker else text


def to_srt(transcript: Transcript, speakers: Sequence[str | None] | None = None) -> str:
    """SubRip cues, one per segment (`[SPEAKER_00] …` prefixes when speakers are given)."""
    cues = []
    for i, segment in enumerate(transcript.segments):
        speaker = speakers[i] if speakers else None
        span = f"{_timestamp(segment.start, ',')} --> {_timestamp(segment.end, ',')}"
        cues.append(f"{i + 1}\n{span}\n{_cue_text(segment, speaker)}\n")
    return "\n".join(cues)


def to_vtt(transcript: Transcript, speakers: Sequence[str | None] | None = None) -> str:
    """WebVTT cues, one per segment (`<v SPEAKER_00>` voice tags when speakers are given)."""
    lines = ["WEBVTT", ""]
    for i, segment in enumerate(transcript.segments):
        speaker = speakers[i] if speakers else None
        lines.append(f"{_timestamp(segment.start, '.')} --> {_timestamp(segment.end, '.')}")
        text = segment.text.strip()
        lines.append(f"<v {speaker}>{text}" if speaker else text)
        lines.append("")
    return "\n".join(lines)


def to_verbose_json(
    transcript: Transcript,
    granularities: Sequence[Granularity],
    model: dict[str, Any],
    segment_speakers: Sequence[str | None] | None = None,
    word_speakers: Sequence[Sequence[str | None]] | None = None,
    task: str = "transcribe",
) -> dict[str, Any]:
    """OpenAI's `verbose_json` shape (+ `model`, and `speaker` fields when diarized); `task`:
    `transcribe` or `translate`, `language` the spoken one, by name as OpenAI writes it (`german`; the ISO
    code where the model gave no name)."""
    body: dict[str, Any] = {
        "task": task,
        "language": transcript.language_name or transcript.language,  # OpenAI writes the name: `german`
        "duration": round(transcript.duration_s, 3),
        "text": transcript.text,
        "model": model,
    }
    if "segment" in granularities:
        body["segments"] = [
            _segment_json(i, s, segment_speakers[i] if segment_speakers else None)
            for i, s in enumerate(transcript.segments)
        ]
    if "word" in granularities:
        body["words"] = [
            _word_json(word.text, word.start, word.end, word_speakers[i][j] if word_speakers else None)
            for i, segment in enumerate(transcript.segments)
            for j, word in enumerate(segment.words)
        ]
    return body


def _segment_json(index: int, segment: Segment, speaker: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": index,
        "seek": segment.seek,
        "start": segment.start,
        "end": segment.end,
        "text": segment.text,
        "tokens": list(segment.tokens),
        "temperature": segment.temperature,
        "avg_logprob": segment.avg_logprob,
        "compression_ratio": segment.compression_ratio,
        "no_speech_prob": segment.no_speech_prob,
    }
    if speaker is not None:
        body["speaker"] = speaker
    return body


def word_logprobs(transcript: Transcript) -> list[dict[str, Any]]:
    """OpenAI's `logprobs` (`include[]=logprobs`), one entry per word: Whisper here reports a probability
    per word (the product of its tokens'), so `token` is the word and `logprob` its natural log."""
    return [
        {"token": w.text, "logprob": math.log(max(w.probability, 1e-12)), "bytes": list(w.text.encode())}
        for segment in transcript.segments
        for w in segment.words
    ]


async def text_events(pieces: AsyncIterator[Transcript]) -> AsyncIterator[bytes]:
    """OpenAI's transcription stream (Server-Sent Events) over transcript pieces as they are decoded (the
    ASR's `transcribe_stream`): a `transcript.text.delta` per segment, each sent before the next piece is
    asked for, then `transcript.text.done` with the whole text and the decoder's token count as usage.
    A failure after the response has started ends it with an `error` event (`{"type": "error",
    "error": {code, message}}`) instead of `transcript.text.done`."""
    texts: list[str] = []
    tokens = 0
    try:
        async for piece in pieces:
            for segment in piece.segments:
                tokens += len(segment.tokens)
                if segment.text:  # deltas join as `Transcript.text` does: one space between segments
                    delta = f" {segment.text}" if texts else segment.text
                    yield _event({"type": "transcript.text.delta", "delta": delta})
                    texts.append(segment.text)
    except Exception as e:  # after the 200 has started: an `error` event ends the stream, never a silent cut
        yield _event({"type": "error", "error": _stream_error(e)})
        return
    usage = {"type": "tokens", "input_tokens": 0, "output_tokens": tokens, "total_tokens": tokens}
    yield _event({"type": "transcript.text.done", "text": " ".join(texts), "usage": usage})


def _stream_error(error: Exception) -> dict[str, str]:
    """The error event's body: a client fault (a model's clean words about its input, or any other error
    `errors.domain_error` answers with a 4xx) as the edge words it, else a generic message (the
    exception's own text, through Ray, names replicas, pids and paths: it stays in the log)."""
    mapped = domain_error(error)
    if mapped is not None and mapped.status < 500:
        return {"code": mapped.code, "message": mapped.message}
    logger.warning("transcription stream failed mid-way: %s", type(error).__name__, exc_info=error)
    return {"code": "stream_failed", "message": "transcription failed part-way; retry the request"}


def _event(body: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(body)}\n\n".encode()


def _word_json(text: str, start: float, end: float, speaker: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"word": text.strip(), "start": start, "end": end}
    if speaker is not None:
        body["speaker"] = speaker
    return body
