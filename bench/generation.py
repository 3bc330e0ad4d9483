"""Generation throughput: MusicGen / AudioGen prompts batched by the service vs one `generate` at a time.

The weights are random-init (`weights: debug-random`) of the real architecture, at `--size`:
  debug   the wrappers' tiny debug models (`MusicGen/AudioGen.from_pretrained("debug")`)
  small   musicgen-small's published sizes: decoder 24 layers x 1024 (16 heads, FFN 4096), 4 codebooks of
          2048 codes; T5-base text encoder (MusicGen) or T5-large (AudioGen's); the family's EnCodec at
          its released size (MusicGen: 32 kHz, hop 640; AudioGen: 16 kHz, hop 320; both 50 frames/s)
  medium  the medium checkpoints' decoder, 48 layers x 1536 (24 heads, FFN 6144); text encoder and codec
          as for small (audiogen-medium's sizes for AudioGen)
A step costs the same with random weights as with trained ones (same shapes, same number of steps: the
length is fixed by `--duration-s`); only the tokenizer differs (ByT5 bytes instead of T5's SentencePiece,
so prompts are ~4x more text tokens, a small share of the work).

Every path makes one clip per prompt for `--prompts` different prompts, one seed each, same settings:
  sequential   `model.generate([prompt], seed=s)`, one prompt after another, in this process
  batched      `model.generate(prompts, seeds=…)` in batches of `--max-batch-size`, in this process
  handle seq   the deployment handle's `generate.remote(prompt, duration_s, seed).result()`, one by one
  handle conc  every `generate.remote` sent at once, then each result awaited; `@serve.batch` groups them
The handle paths run on the soundstage stack (serve_config.yaml's local profile, one replica per
deployment, `--max-batch-size` and `--batch-wait-s` as the deployments' user_config).

`--device-only` runs the two in-process paths only, on `--device`, and imports neither Ray nor anything from
deployments/ or the Ray/boto3 parts of infra/: the mode for a GPU machine without Ray.

`--device-only --decoders eager static compiled` compares the decoding loops instead
(models/static_decoding.py): for each `--batch-sizes` B, one `generate` of B prompts per loop, after an
untimed warm-up (which compiles); it prints decoder steps/s, audio s per wall s (x real time), peak CUDA
memory, each loop's speed-up over eager at the same B, its throughput at B over its own at B = 1, and how
many clips equal eager's.

Run from the repository root:
  .venv/bin/python bench/generation.py                         # debug models, CPU, with the stack
  python bench/generation.py --device-only --size small --device cuda --duration-s 10 --prompts 8
  python bench/generation.py --device-only --size small --device cuda --duration-s 10 --models musicgen \
      --decoders eager compiled --batch-sizes 1 4 16
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
import torch
import transformers
from machine_info import load_average, machine
from transformers import (
    ByT5Tokenizer,
    EncodecConfig,
    MusicgenConfig,
    MusicgenDecoderConfig,
    MusicgenForConditionalGeneration,
    T5Config,
)
from transformers.models.encodec.modeling_encodec import EncodecEuclideanCodebook

from infra.audio import Audio
from models.audiogen import AudioGen
from models.common import resolve_device
from models.delayed_codebooks import dtype_for
from models.musicgen import WEIGHTS_CONFIG_KEY, MusicGen
from models.static_decoding import DECODER_KINDS, DecoderKind
from models.types import ModelInfo

DEVICE_PACKAGES = ("torch", "transformers", "numpy")
WRAPPERS: dict[str, type[MusicGen]] = {"musicgen": MusicGen, "audiogen": AudioGen}
# family -> (deployment name, app argument holding its model URI)
DEPLOYMENTS = {"musicgen": ("MusicGen", "music_model_uri"), "audiogen": ("AudioGen", "sfx_model_uri")}
PROMPTS = {
    "musicgen": (
        "lo-fi hip hop beat with warm piano chords",
        "fast punk rock with distorted guitars and loud drums",
        "calm ambient pad with slow evolving synth textures",
        "upbeat disco groove with slap bass and strings",
        "solo acoustic guitar ballad in a minor key",
        "epic orchestral trailer music with brass and choir",
        "minimal techno with a deep kick and hi-hats",
        "jazz trio, brushed drums, walking bass, soft piano",
    ),
    "audiogen": (
        "a dog barks twice in the rain",
        "a car engine revs up and drives away",
        "footsteps on gravel, then a door closes",
        "thunder rolls over heavy rain on a tin roof",
        "a crowd applauds and cheers in a large hall",
        "birds chirp in a forest with a stream nearby",
        "a glass shatters on a tiled floor",
        "a steam train whistles and passes by",
    ),
}
# (layers, width, heads) of the released decoders; FFN is 4 x width.
DECODER_SIZES = {"small": (24, 1024, 16), "medium": (48, 1536, 24)}
T5_SIZES = {  # (d_model, d_ff, layers, heads); d_kv 64, vocabulary 32128
    "musicgen": (768, 3072, 12, 12),  # t5-base
    "audiogen": (1024, 4096, 24, 16),  # t5-large
}
CODECS = {  # (sample rate Hz, upsampling ratios): both 50 frames/s, 4 codebooks of 2048 at 2.2 kbps
    "musicgen": (32000, [8, 5, 4, 4]),
    "audiogen": (16000, [8, 5, 4, 2]),
}


@dataclass(frozen=True)
class Workload:
    """`prompts` with one seed each, every clip `duration_s` seconds; in-process batches of `batch_size`."""

    prompts: tuple[str, ...]
    seeds: tuple[int, ...]
    duration_s: float
    batch_size: int

    @property
    def audio_s(self) -> float:
        return len(self.prompts) * self.duration_s

    def batches(self) -> Iterator[tuple[list[str], list[int]]]:
        for start in range(0, len(self.prompts), self.batch_size):
            stop = start + self.batch_size
            yield list(self.prompts[start:stop]), list(self.seeds[start:stop])


def released_size_config(family: str, size: str) -> MusicgenConfig:
    """A MusicgenConfig with the published sizes of `size` (see the module docstring), random-init label."""
    layers, width, heads = DECODER_SIZES[size]
    d_model, d_ff, t5_layers, t5_heads = T5_SIZES[family]
    text = T5Config(
        vocab_size=32128, d_model=d_model, d_ff=d_ff, d_kv=64, num_layers=t5_layers, num_heads=t5_heads
    )
    sample_rate, ratios = CODECS[family]
    audio = EncodecConfig(
        sampling_rate=sample_rate,
        audio_channels=1,
        num_filters=64,
        hidden_size=128,
        upsampling_ratios=ratios,
        codebook_size=2048,
        num_lstm_layers=2,
        normalize=False,
        pad_mode="constant",
        target_bandwidths=[2.2],
    )
    decoder = MusicgenDecoderConfig(
        vocab_size=2048,
        hidden_size=width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        ffn_dim=4 * width,
        num_codebooks=4,
        pad_token_id=2048,
        bos_token_id=2048,
    )
    config = MusicgenConfig(text_encoder=text, audio_encoder=audio, decoder=decoder)
    config.decoder_start_token_id = config.pad_token_id = 2048
    setattr(config, WEIGHTS_CONFIG_KEY, "debug-random")
    return config


def random_model(family: str, size: str, device: str) -> MusicGen:
    """The family's wrapper around random weights of `size` (built on `device`, fixed seed)."""
    wrapper = WRAPPERS[family]
    if size == "debug":
        return wrapper.from_pretrained("debug", device=device)
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(0)
        model = MusicgenForConditionalGeneration(released_size_config(family, size))
        for codebook in model.audio_encoder.modules():  # EnCodec starts with all-zero codebooks
            if isinstance(codebook, EncodecEuclideanCodebook):
                codebook.embed.normal_()
                codebook.embed_avg.copy_(codebook.embed)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    info = ModelInfo(f"random {family}, {size} sizes, {params:.0f} M parameters", None, "debug-random")
    return wrapper(model, ByT5Tokenizer(), info, device)


def in_process_paths(model: MusicGen, work: Workload) -> dict[str, Callable[[], list[Audio]]]:
    def sequential() -> list[Audio]:
        return [
            model.generate([prompt], duration_s=work.duration_s, seed=seed)[0]
            for prompt, seed in zip(work.prompts, work.seeds, strict=True)
        ]

    def batched() -> list[Audio]:
        return [
            audio
            for prompts, seeds in work.batches()
            for audio in model.generate(prompts, duration_s=work.duration_s, seeds=seeds)
        ]

    return {"sequential": sequential, "batched": batched}


def handle_paths(handle: Any, work: Workload) -> dict[str, Callable[[], list[Audio]]]:
    pairs = list(zip(work.prompts, work.seeds, strict=True))

    def handle_sequential() -> list[Audio]:
        return [handle.generate.remote(p, work.duration_s, s).result().audio for p, s in pairs]

    def handle_concurrent() -> list[Audio]:
        responses = [handle.generate.remote(p, work.duration_s, s) for p, s in pairs]
        return [response.result().audio for response in responses]

    return {"handle seq": handle_sequential, "handle conc": handle_concurrent}


@dataclass
class Measured:
    """Wall seconds per round and peak CUDA memory (GB, 0 on CPU) per path; the warm-up round's clips."""

    seconds: dict[str, list[float]]
    peak_gb: dict[str, float]
    clips: dict[str, list[Audio]]


def measure(calls: dict[str, Callable[[], list[Audio]]], reps: int, device: str) -> Measured:
    """One untimed warm-up round (its clips kept for the comparison), then `reps` rounds in turns."""
    cuda = device.startswith("cuda")
    clips = {name: call() for name, call in calls.items()}
    result = Measured({name: [] for name in calls}, dict.fromkeys(calls, 0.0), clips)
    for _ in range(reps):
        for name, call in calls.items():
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            call()
            result.seconds[name].append(time.perf_counter() - start)
            if cuda:
                peak = torch.cuda.max_memory_allocated() / 1e9
                result.peak_gb[name] = max(result.peak_gb[name], peak)
    return result


def agreement(clips: dict[str, list[Audio]], atol: float = 1e-5) -> str:
    """How many clips of each path match the sequential path's (to `atol`: batched matrix products round
    differently), and the largest difference."""
    reference = clips["sequential"]
    parts = []
    for name, got in clips.items():
        if name == "sequential":
            continue
        diffs = [float(np.max(np.abs(a.samples - b.samples))) for a, b in zip(got, reference, strict=True)]
        close = sum(d <= atol for d in diffs)
        parts.append(f"{name} {close}/{len(diffs)} (max |diff| {max(diffs):.2g})")
    return f"clips equal to sequential within {atol:g}: " + ", ".join(parts)


def report(family: str, measured: Measured, work: Workload) -> list[str]:
    """Median wall s, audio s per wall s and real-time factor per path; the ratios of interest."""
    m = {name: float(np.median(times)) for name, times in measured.seconds.items()}
    cuda = any(measured.peak_gb.values())  # peak memory is only tracked on CUDA
    lines = [
        f"{family:<9}{'path':<13}{'n':>3}{'median s':>10}{'min s':>8}{'audio s/wall s':>16}{'RTF':>8}"
        + (f"{'peak GB':>9}" if cuda else "")
    ]
    for name, times in measured.seconds.items():
        lines.append(
            f"{'':<9}{name:<13}{len(times):>3}{m[name]:>10.2f}{min(times):>8.2f}"
            f"{work.audio_s / m[name]:>16.2f}{m[name] / work.audio_s:>8.3f}"
            + (f"{measured.peak_gb[name]:>9.2f}" if cuda else "")
        )
    ratios = [("batched / sequential, in-process", m["sequential"] / m["batched"], "throughput")]
    if "handle conc" in m:
        ratios += [
            ("service (handle conc) / sequential", m["sequential"] / m["handle conc"], "throughput"),
            ("handle conc / handle seq", m["handle seq"] / m["handle conc"], "throughput"),
            ("handle conc / in-process batched", m["handle conc"] / m["batched"], "wall time"),
        ]
    lines += [f"{'':<9}{label:<38}{value:.2f}x {unit}" for label, value, unit in ratios]
    return [*lines, f"{'':<9}{agreement(measured.clips)}"]


def workload(family: str, args: argparse.Namespace) -> Workload:
    prompts = tuple(PROMPTS[family][i % len(PROMPTS[family])] for i in range(args.prompts))
    seeds = tuple(args.seed + i for i in range(args.prompts))
    return Workload(prompts, seeds, args.duration_s, args.max_batch_size)


def describe(family: str, model: MusicGen, work: Workload) -> str:
    return (
        f"model     {family}: {model.info.model_id} ({model.info.weights}), {model.sample_rate} Hz, "
        f"{model.frame_rate:g} frames/s on {model.device}; {len(work.prompts)} prompts x "
        f"{work.duration_s:g} s = {work.audio_s:g} s of audio per round"
    )


def with_decoder(model: MusicGen, decoder: DecoderKind) -> MusicGen:
    """The same weights and tokenizer behind another decoding loop."""
    return type(model)(model._model, model._tokenizer, model.info, model.device, decoder=decoder)


def decoder_rows(family: str, model: MusicGen, args: argparse.Namespace) -> list[str]:
    """Eager vs static vs compiled at each batch size: steps/s, x real time, peak memory and ratios."""
    steps = math.ceil(args.duration_s * model.frame_rate) + model._model.decoder.num_codebooks - 1
    loops = {decoder: with_decoder(model, decoder) for decoder in args.decoders}
    lines = [
        f"{family:<9}{'loop':<10}{'B':>4}{'median s':>10}{'steps/s':>9}{'x real time':>13}{'peak GB':>9}"
        f"{'vs eager':>10}{'vs B=1':>8}  clips = eager"
    ]
    per_clip: dict[str, float] = {}
    for batch in args.batch_sizes:
        work = Workload(
            workload(family, args).prompts[:1] * batch, tuple(range(batch)), args.duration_s, batch
        )
        calls: dict[str, Callable[[], list[Audio]]] = {
            name: functools.partial(
                loop.generate, list(work.prompts), duration_s=work.duration_s, seeds=list(work.seeds)
            )
            for name, loop in loops.items()
        }
        measured = measure(calls, args.reps, model.device)
        for name, times in measured.seconds.items():
            median = float(np.median(times))
            per_clip.setdefault(name, median)  # the first batch size is the baseline
            eager = float(np.median(measured.seconds.get("eager", times)))
            same = sum(
                np.array_equal(a.samples, b.samples)
                for a, b in zip(measured.clips[name], measured.clips.get("eager", []), strict=False)
            )
            lines.append(
                f"{'':<9}{name:<10}{batch:>4}{median:>10.3f}{steps / median:>9.1f}"
                f"{work.audio_s / median:>13.2f}"
                f"{measured.peak_gb[name]:>9.2f}{eager / median:>9.2f}x"
                f"{batch * per_clip[name] / median / args.batch_sizes[0]:>7.2f}x  {same}/{batch}"
            )
    return lines


def run_device_only(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    if device.startswith("cuda"):
        print(f"gpu       {torch.cuda.get_device_name(device)}, {dtype_for(device)} weights")
    for family in args.models:
        if args.decoders:
            model = random_model(family, args.size, device)
            print(describe(family, model, workload(family, args)).split(";")[0])
            print("\n".join(decoder_rows(family, model, args)))
            del model
            continue
        model = random_model(family, args.size, device)
        work = workload(family, args)
        print(describe(family, model, work))
        measured = measure(in_process_paths(model, work), args.reps, device)
        print("\n".join(report(family, measured, work)))
        del model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()


def saved_models(args: argparse.Namespace, folder: Path) -> tuple[dict[str, MusicGen], dict[str, str]]:
    """In-process CPU models and the URIs the deployments load: "debug", or the same weights saved."""
    models, uris = {}, {}
    for family in args.models:
        model = random_model(family, args.size, "cpu")
        uri = "debug"
        if args.size != "debug":
            uri = str(folder / family)
            model.save_pretrained(Path(uri))
        models[family], uris[DEPLOYMENTS[family][1]] = model, uri
    return models, uris


def run_served(args: argparse.Namespace) -> None:
    from machine_info import start_quiet_stack, stop_stack

    from deployments.tools.local_stack import LocalStackOptions
    from deployments.tools.serve_config import APP_NAME
    from infra.embedded_s3 import free_port

    batching = {"max_batch_size": args.max_batch_size, "batch_wait_timeout_s": args.batch_wait_s}
    started = time.perf_counter()
    with TemporaryDirectory(prefix="generation-bench-") as folder:
        models, uris = saved_models(args, Path(folder))
        user_configs = {DEPLOYMENTS[family][0]: batching for family in args.models}
        options = LocalStackOptions(
            port=free_port(), max_replicas=1, model_uris=uris, user_configs=user_configs
        )
        stack = start_quiet_stack(options)  # sets Ray's auth mode, which must precede `import ray`
        print(f"startup   models + stack up in {time.perf_counter() - started:.1f} s on {stack.base_url}")
        try:
            from ray import serve

            for family, model in models.items():
                work = workload(family, args)
                handle = serve.get_deployment_handle(DEPLOYMENTS[family][0], app_name=APP_NAME)
                print(describe(family, model, work))
                calls = {**in_process_paths(model, work), **handle_paths(handle, work)}
                print("\n".join(report(family, measure(calls, args.reps, "cpu"), work)))
        finally:
            stop_stack(stack)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device-only", action="store_true", help="in-process paths only, no Ray")
    parser.add_argument("--models", nargs="+", choices=list(WRAPPERS), default=list(WRAPPERS))
    parser.add_argument("--size", choices=["debug", *DECODER_SIZES], default="debug", help="(debug)")
    parser.add_argument("--device", default="auto", help="--device-only: auto, cpu or cuda[:N] (auto)")
    parser.add_argument("--prompts", type=int, default=8, help="prompts per round (8)")
    parser.add_argument("--duration-s", type=float, default=2.0, help="seconds per clip (2)")
    parser.add_argument("--reps", type=int, default=3, help="timed rounds per path (3)")
    parser.add_argument("--seed", type=int, default=1234, help="first prompt's seed; the next get +1 (1234)")
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=4,
        help="in-process batch and @serve.batch size (4, as configured)",
    )
    parser.add_argument(
        "--decoders",
        nargs="+",
        choices=DECODER_KINDS,
        default=[],
        help="--device-only: compare decoding loops",
    )
    parser.add_argument(
        "--batch-sizes", nargs="+", type=int, default=[1, 4, 16], help="with --decoders (1 4 16)"
    )
    parser.add_argument("--batch-wait-s", type=float, default=0.05, help="batch_wait_timeout_s (0.05)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads in-process (1, as a replica)"
    )
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    # transformers warns on every model build that the pad/bos id (= codebook size, as in the released
    # MusicGen configs) lies outside the vocabulary: expected here, and it would break up the tables.
    transformers.logging.set_verbosity_error()
    print("\n".join(machine(DEVICE_PACKAGES if args.device_only else ("ray", *DEVICE_PACKAGES))))
    print(
        f"config    size {args.size}, {args.prompts} prompts x {args.duration_s:g} s, "
        f"batch {args.max_batch_size}"
        f"{'' if args.device_only else f', batch wait {args.batch_wait_s:g} s, 1 replica'}, "
        f"{args.threads} torch thread(s), reps {args.reps}, guidance 3, top-k 250"
    )
    print(f"load avg  {load_average()} (1/5/15 min) at start")
    started = time.perf_counter()
    if args.device_only:
        run_device_only(args)
    else:
        run_served(args)
    print(f"load avg  {load_average()} at end; total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
