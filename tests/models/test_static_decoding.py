"""The static decoding loop (models/static_decoding.py) on the debug models: the same tokens, hence the same
audio, as transformers' `generate` for the same seeds; the delay pattern's layout; the sampler's draws."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

from infra.audio import Audio
from models import delayed_codebooks, static_decoding
from models.audiogen import AudioGen
from models.delayed_codebooks import RowSampler
from models.musicgen import MusicGen
from models.musicgen_melody import MusicGenMelody
from models.static_decoding import DecoderKind, DelayPattern, sample_top_k

PROMPTS = ["lofi hip hop beat with warm piano", "a much longer prompt: fast techno with acid bass and a kick"]
FAMILIES = [MusicGen, AudioGen, MusicGenMelody]
# Measured on the debug models (CPU, float32): the static path's guided logits differ from transformers' by
# <= 3e-6 (the attention sums over a padded static cache, in another order). A token can then differ only
# where a draw falls within ~1e-6 of a CDF edge: a few sequences in a hundred (bench/README.md).
LOGIT_ATOL = 1e-4
FLIP_MARGIN = 1e-5


def twin(model: Any, decoder: DecoderKind) -> Any:
    """A wrapper around the same weights with another decoding loop."""
    extra = (model._chroma,) if isinstance(model, MusicGenMelody) else ()
    return type(model)(model._model, model._tokenizer, *extra, model.info, "cpu", decoder=decoder)


@pytest.fixture(scope="module", params=FAMILIES, ids=lambda cls: cls.__name__)
def eager(request: pytest.FixtureRequest) -> Any:
    return request.param.from_pretrained("debug", device="cpu", decoder="eager")


@pytest.fixture(scope="module")
def static(eager: Any) -> Any:
    return twin(eager, "static")


@pytest.fixture
def codes(eager: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[torch.Tensor]]:
    """The codes `[B, K, F]` every generation hands the (shared) codec, in call order."""
    codec = eager._model.audio_encoder
    captured: list[torch.Tensor] = []
    decode = codec.decode

    def capture(frames: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        captured.append(frames[0].clone())
        return decode(frames, *args, **kwargs)

    monkeypatch.setattr(codec, "decode", capture)
    yield captured


@dataclass(frozen=True)
class Draw:
    """One `sample_top_k` call: guided logits `[R, V]`, uniforms `[R]`, settings, and the tokens `[R]`."""

    logits: torch.Tensor
    draws: torch.Tensor
    temperature: float | torch.Tensor
    top_k: int
    tokens: torch.Tensor

    def boundary_margin(self, row: int) -> float:
        """How far this row's scaled draw lies from the nearest edge of its top-k CDF."""
        logits = self.logits[row : row + 1] / self.temperature
        kth = torch.topk(logits, min(self.top_k, logits.shape[-1])).values[:, -1:]
        cdf = torch.cumsum(torch.softmax(logits.masked_fill(logits < kth, -math.inf), -1), -1)[0]
        return float((cdf - self.draws[row] * cdf[-1]).abs().min())


@pytest.fixture
def draws(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Draw]]:
    """Every sampling call of the eager path (RowSampler) and of the static path, in order."""
    recorded: dict[str, list[Draw]] = {"eager": [], "static": []}
    for name, module in (("eager", delayed_codebooks), ("static", static_decoding)):

        def record(
            logits: torch.Tensor, u: torch.Tensor, t: Any, k: int, *, into: list[Draw] = recorded[name]
        ) -> Any:
            tokens = sample_top_k(logits, u, t, k)
            into.append(Draw(logits.clone(), u.clone(), t, k, tokens.clone()))
            return tokens

        monkeypatch.setattr(module, "sample_top_k", record)
    return recorded


def assert_same_tokens(
    recorded: dict[str, list[Draw]], eager_audio: list[Audio], static_audio: list[Audio]
) -> None:
    """Step by step, the static path's guided logits equal the eager path's within LOGIT_ATOL and it samples
    the same tokens from the same draws; the only allowed difference is a draw within FLIP_MARGIN of a CDF
    edge (float rounding on the other side of it), after which the sequences go separate ways. With no
    such draw, the audio is bit-identical."""
    eager, static = recorded["eager"], recorded["static"]
    assert len(eager) == len(static) > 0
    for e, s in zip(eager, static, strict=True):
        torch.testing.assert_close(s.logits, e.logits, rtol=0, atol=LOGIT_ATOL)
        assert torch.equal(s.draws, e.draws)
        flipped = (s.tokens != e.tokens).nonzero().flatten().tolist()
        if flipped:
            assert max(e.boundary_margin(row) for row in flipped) < FLIP_MARGIN
            return
    for a, b in zip(eager_audio, static_audio, strict=True):
        np.testing.assert_array_equal(a.samples, b.samples)


@pytest.mark.parametrize("guidance_scale", [3.0, 1.0])
def test_static_samples_the_tokens_generate_samples(
    eager: Any,
    static: Any,
    draws: dict[str, list[Draw]],
    codes: list[torch.Tensor],
    guidance_scale: float,
) -> None:
    settings: dict[str, Any] = {"duration_s": 0.5, "seeds": [1, 2], "guidance_scale": guidance_scale}
    assert_same_tokens(draws, eager.generate(PROMPTS, **settings), static.generate(PROMPTS, **settings))
    assert len(draws["static"]) == 25 + 3  # frames + delay steps
    assert codes[-1].shape == codes[-2].shape == (2, 4, 25)


def test_reused_workspace_leaves_nothing_behind(
    eager: Any, static: Any, draws: dict[str, list[Draw]]
) -> None:
    # Same shape bucket each time (batch 1, guided): a longer clip and prompt, then shorter ones.
    for prompt, duration_s in [(PROMPTS[1], 0.8), (PROMPTS[0], 0.3), ("kick", 0.1)]:
        settings: dict[str, Any] = {"duration_s": duration_s, "seed": 9}
        for recorded in draws.values():
            recorded.clear()
        assert_same_tokens(draws, eager.generate([prompt], **settings), static.generate([prompt], **settings))


def sine(seconds: float, hz: float = 440.0, rate: int = 32000) -> Audio:
    t = np.arange(round(seconds * rate)) / rate
    return Audio((0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)[None], rate)


def test_continuation_tokens_equal(draws: dict[str, list[Draw]], eager: Any) -> None:
    if not isinstance(eager, MusicGen):
        pytest.skip("continuation is MusicGen's and AudioGen's")
    static = twin(eager, "static")
    assert isinstance(static, MusicGen)
    settings: dict[str, Any] = {"duration_s": 0.6, "seeds": [4, 5]}
    clip = sine(0.25, rate=eager.sample_rate)
    eager_audio = eager.continue_audio(clip, PROMPTS, **settings)
    assert_same_tokens(draws, eager_audio, static.continue_audio(clip, PROMPTS, **settings))


def test_melody_tokens_equal(draws: dict[str, list[Draw]], eager: Any) -> None:
    if not isinstance(eager, MusicGenMelody):
        pytest.skip("melody conditioning is MusicGen-Melody's")
    static = twin(eager, "static")
    assert isinstance(static, MusicGenMelody)
    settings: dict[str, Any] = {"melody": sine(1.0, 330.0), "duration_s": 0.4, "seeds": [6, 7]}
    assert_same_tokens(draws, eager.generate(PROMPTS, **settings), static.generate(PROMPTS, **settings))


def test_compiled_step_traces_whole_and_runs_the_static_step(
    monkeypatch: pytest.MonkeyPatch, static: Any, codes: list[torch.Tensor]
) -> None:
    # fullgraph=True fails on any graph break; the "eager" backend runs the traced graph (the same kernels as
    # the static path, so the same tokens bit for bit) without inductor's C++ build (about a minute on 2
    # cores), which bench/generation.py measures instead.
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    compiled = twin(static, "compiled")
    settings: dict[str, Any] = {"duration_s": 0.3, "seeds": [3, 8]}
    for a, b in zip(
        static.generate(PROMPTS, **settings), compiled.generate(PROMPTS, **settings), strict=True
    ):
        np.testing.assert_array_equal(a.samples, b.samples)
    assert torch.equal(codes[-2], codes[-1])


def test_delay_pattern_layout() -> None:
    pattern = DelayPattern.build(torch.zeros((1, 4, 0), dtype=torch.long), 7, pad_id=9, channels=1)
    P = 9
    # The layout transformers' build_delay_pattern_mask documents for 4 codebooks over 8 columns.
    expected = [
        [P, -1, -1, -1, -1, P, P, P],
        [P, P, -1, -1, -1, -1, P, P],
        [P, P, P, -1, -1, -1, -1, P],
        [P, P, P, P, -1, -1, -1, -1],
    ]
    assert pattern.forced[0].tolist() == expected
    assert pattern.first_sampled == 1
    tokens = torch.arange(32).view(1, 4, 8)
    assert pattern.frames(tokens)[0].tolist() == [
        [1, 2, 3, 4],
        [10, 11, 12, 13],
        [19, 20, 21, 22],
        [28, 29, 30, 31],
    ]


def test_delay_pattern_with_prompt_and_stereo() -> None:
    prompt = torch.tensor([[[1, 2], [3, 4], [5, 6], [7, 8]]])  # [B=1, K=4, S=2], stereo: L0 R0 L1 R1
    pattern = DelayPattern.build(prompt, 3, pad_id=0, channels=2)
    assert pattern.forced[0].tolist() == [
        [0, 1, 2, -1, -1, 0],
        [0, 3, 4, -1, -1, 0],
        [0, 0, 5, 6, -1, -1],
        [0, 0, 7, 8, -1, -1],
    ]
    assert pattern.first_sampled == 3
    assert pattern.frames(pattern.forced)[0, :, :2].tolist() == prompt[0].tolist()


def test_draws_at_once_equal_draws_step_by_step() -> None:
    def sampler() -> RowSampler:
        return RowSampler([11, 12], num_codebooks=4, temperature=1.0, top_k=5)

    stepwise = sampler()
    one_by_one = torch.stack(
        [torch.cat([torch.rand(4, generator=g) for g in stepwise._generators]) for _ in range(300)]
    )
    torch.testing.assert_close(sampler().draws(300), one_by_one, rtol=0, atol=0)


def test_unknown_decoder_raises(eager: Any) -> None:
    with pytest.raises(ValueError, match="decoder must be one of"):
        twin(eager, "graphs")  # type: ignore[arg-type]


def test_default_decoder_on_cpu_is_eager() -> None:
    assert MusicGen.from_pretrained("debug", device="cpu").decoder == "eager"
