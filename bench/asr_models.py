"""What serving multilingual Whisper base instead of tiny.en costs: the same transcriptions, both models.

The work is what the stack tests ask of the ASR deployment: the two-speaker dialog fixture (tests/dialog.py,
31 s, hibari TTS) through `transcribe_batch` (the unary route's path) and `transcribe` (the streaming
route's path, windows one after another), plus one 4 s sentence through `transcribe_batch`. Both models
are CTranslate2 int8 on CPU with one thread (as in a local replica); base detects the language, tiny.en
is English-only. The models take turns, round-robin, after a warm-up round, so background load affects
both alike. Prints seconds per round for each, base/tiny ratios, and each model's dialog WER.

Run from the repository root:  .venv/bin/python bench/asr_models.py [--reps 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `tests.dialog`, `tests.wer`

from machine_info import load_average, machine, timed

from models import whisper_multilingual
from models.tts import StockTTS
from models.whisper import PACKAGE_URI, Whisper
from tests.dialog import build_dialog
from tests.wer import word_error_rate

PACKAGES = ("faster-whisper", "ctranslate2", "hibari-tts")
SENTENCE = "The ferry leaves at nine in the morning. Bring a warm coat and something to read."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="timed rounds (default 3)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    tts = StockTTS.from_pretrained()
    dialog = build_dialog(tts)
    sentence = tts.synthesize([SENTENCE])[0]
    models = {
        "tiny.en": Whisper.from_pretrained(PACKAGE_URI, device="cpu"),
        "base": Whisper.from_pretrained(whisper_multilingual.URI, device="cpu"),
    }
    work: dict[str, Callable[[Whisper], object]] = {
        "dialog batch": lambda m: m.transcribe_batch([dialog.audio]),
        "dialog stream": lambda m: list(m.stream(dialog.audio, word_timestamps=False).segments),
        "sentence batch": lambda m: m.transcribe_batch([sentence]),
    }
    print("\n".join(machine(PACKAGES)))
    print(f"load avg  {load_average()} at start; dialog {dialog.audio.duration_s:.1f} s, reps {args.reps}")
    for name, model in models.items():
        wer = word_error_rate(dialog.text, model.transcribe_batch([dialog.audio])[0].text)
        print(f"WER       {name}: {wer:.1%} on the dialog")
    seconds: dict[tuple[str, str], list[float]] = {(w, m): [] for w in work for m in models}
    for rep in range(args.reps + 1):
        for (job, name), samples in seconds.items():
            took = timed(partial(work[job], models[name]))
            if rep:  # round 0 is the warm-up
                samples.append(took)
    for job in work:
        tiny, base = (statistics.median(seconds[(job, m)]) for m in ("tiny.en", "base"))
        print(f"{job:15s} tiny.en {tiny:6.2f} s   base {base:6.2f} s   base/tiny {base / tiny:4.2f}x")
    print(f"load avg  {load_average()} at end")


if __name__ == "__main__":
    main()
