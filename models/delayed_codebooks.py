"""The wrapper shared by MusicGen and MusicGen-Melody (delayed-codebook decoders over an EnCodec codec):
read-only audio facts, per-prompt sampling, the length arithmetic of the delay pattern, and decoding.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    MusicgenForConditionalGeneration,
    MusicgenMelodyForConditionalGeneration,
    PreTrainedTokenizerBase,
)

from infra.audio import Audio
from models.common import prompt_seeds
from models.types import ModelInfo


def dtype_for(device: str) -> torch.dtype:
    """float16 on CUDA (half the memory, tensor cores), float32 elsewhere (CPU half is slow and lossy)."""
    return torch.float16 if device.startswith("cuda") else torch.float32


class RowSampler(LogitsProcessor):
    """Top-k / temperature sampling with one `torch.Generator` per prompt, as a transformers logits processor.

    Runs after MusicGen's classifier-free-guidance processor, on scores `[B * K, V]` whose row
    `b * K + k` is codebook `k` of prompt `b` (K = num_codebooks). Prompt `b` draws its K uniforms per step
    from its own CPU generator, so its tokens do not depend on the other rows. Returns scores that are
    -inf everywhere except the sampled token, so greedy search (`do_sample=False`) picks it.
    """

    def __init__(self, seeds: Sequence[int], num_codebooks: int, *, temperature: float, top_k: int) -> None:
        self._generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        self._num_codebooks = num_codebooks
        self._temperature = temperature
        self._top_k = top_k

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows = len(self._generators) * self._num_codebooks
        # Invariant: guidance already merged the doubled (conditional + unconditional) batch.
        assert scores.shape[0] == rows, f"expected {rows} rows of scores, got {tuple(scores.shape)}"
        tokens = self._sample(scores.float())
        chosen = torch.full_like(scores, -math.inf)
        return cast(torch.FloatTensor, chosen.scatter_(1, tokens[:, None], 0.0))

    def _sample(self, logits: torch.Tensor) -> torch.Tensor:
        """Inverse-CDF sampling of one token per row `[B * K]` from the top-k of `logits / temperature`."""
        logits = logits / self._temperature
        kth = torch.topk(logits, min(self._top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        probs = torch.softmax(logits.masked_fill(logits < kth, -math.inf), dim=-1)
        cdf = torch.cumsum(probs, dim=-1)
        draws = torch.cat([torch.rand(self._num_codebooks, generator=g) for g in self._generators])
        # right=True never lands on a zero-probability token; scaling by cdf[-1] keeps it in range.
        targets = draws.to(cdf.device)[:, None] * cdf[:, -1:]
        return torch.searchsorted(cdf, targets, right=True).squeeze(1)


class _SamplerLastList(LogitsProcessorList):
    """Keeps the sampler last: MusicGen's `generate` appends its guidance processor to the caller's list."""

    def append(self, processor: LogitsProcessor) -> None:
        assert self, "the sampler must be in the list before anything is appended"
        self.insert(len(self) - 1, processor)


def validate_settings(
    prompts: Sequence[str], duration_s: float, guidance_scale: float, top_k: int, temperature: float
) -> None:
    if isinstance(prompts, str) or not prompts:
        raise ValueError(f"prompts must be a non-empty sequence of strings, got {prompts!r}")
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration_s must be a positive number of seconds, got {duration_s!r}")
    if not guidance_scale >= 1.0:
        raise ValueError(f"guidance_scale must be >= 1.0 (1.0 disables guidance), got {guidance_scale!r}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")


def samples_for(duration_s: float, sample_rate: int) -> int:
    """`round(duration_s * sample_rate)`; a duration under one sample raises ValueError."""
    num_samples = round(duration_s * sample_rate)
    if num_samples < 1:
        raise ValueError(f"duration_s={duration_s!r} is shorter than one sample at {sample_rate} Hz")
    return num_samples


def _frames_to_generate(num_samples: int, hop_length: int, delay_steps: int) -> int:
    """Codec frames covering `num_samples`, at least `delay_steps`: transformers skips the delay pattern
    (misaligning the codebooks) when fewer than 2 * delay + 1 steps are generated; the surplus is trimmed."""
    return max(math.ceil(num_samples / hop_length), delay_steps)


def _decoding_config(base: GenerationConfig, guidance_scale: float, max_new_tokens: int) -> GenerationConfig:
    """A copy of `base` for `RowSampler`: greedy search on its one-hot scores, `max_new_tokens` steps."""
    config = copy.deepcopy(base)
    config.update(
        do_sample=False,
        num_beams=1,
        top_k=None,
        top_p=None,
        temperature=None,
        guidance_scale=guidance_scale,
        max_new_tokens=max_new_tokens,
    )
    return config


def trimmed_audio(waveforms: torch.Tensor, num_samples: int, sample_rate: int) -> list[Audio]:
    """Decoded `[B, C, T']` (T' >= `num_samples`) as B float32 `Audio` `[C, num_samples]`."""
    assert waveforms.shape[-1] >= num_samples, f"decoded {waveforms.shape[-1]} < {num_samples} samples"
    batch = waveforms[..., :num_samples].float().cpu().numpy()
    return [Audio(np.ascontiguousarray(item), sample_rate) for item in batch]


class DelayedCodebookModel:
    """What MusicGen and MusicGen-Melody share: a transformers model, its tokenizer, the `ModelInfo` that
    names its weights, and the device it runs on."""

    def __init__(
        self,
        model: MusicgenForConditionalGeneration | MusicgenMelodyForConditionalGeneration,
        tokenizer: PreTrainedTokenizerBase,
        info: ModelInfo,
        device: str,
    ) -> None:
        # transformers wraps `PreTrainedModel.to` in functools.wraps(nn.Module.to): mypy sees it unbound.
        self._model = model.to(device=device, dtype=dtype_for(device)).eval()  # type: ignore[call-arg]
        self._tokenizer = tokenizer
        self._info = info
        self.device = device

    @property
    def sample_rate(self) -> int:
        """Output sample rate in Hz (32000 for the released checkpoints)."""
        return int(self._model.config.audio_encoder.sampling_rate)

    @property
    def channels(self) -> int:
        """Output channels: 1, or 2 for the stereo checkpoints."""
        return int(self._model.config.decoder.audio_channels)

    @property
    def frame_rate(self) -> float:
        """Codec frames (decoder steps) per second of audio, in Hz."""
        return self.sample_rate / self._hop_length

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def _hop_length(self) -> int:
        return int(np.prod(self._model.config.audio_encoder.upsampling_ratios))

    @property
    def _delay_steps(self) -> int:
        """Decoder steps that complete no frame: the delay pattern offsets codebook k (of each channel's
        K / channels codebooks; stereo interleaves them) by k steps."""
        return self._model.decoder.num_codebooks // self.channels - 1

    def save_pretrained(self, path: Path) -> None:
        """Write model weights (safetensors), config, generation config and tokenizer into folder `path`."""
        path.mkdir(parents=True, exist_ok=True)
        self._model.save_pretrained(path)
        self._tokenizer.save_pretrained(path)

    def _generation_config(
        self, num_samples: int, guidance_scale: float, prompt_frames: int = 0
    ) -> GenerationConfig:
        """The decoding config for `num_samples` of audio, of which the first `prompt_frames` codec frames
        are given as codes (the delay pattern forces each codebook's prompt codes)."""
        frames = _frames_to_generate(num_samples, self._hop_length, self._delay_steps)
        steps = frames - prompt_frames + self._delay_steps
        return _decoding_config(self._model.generation_config, guidance_scale, steps)

    def _sampler(
        self, count: int, seed: int | None, seeds: Sequence[int] | None, temperature: float, top_k: int
    ) -> RowSampler:
        """The sampler of `count` prompts, seeded as `prompt_seeds` says."""
        return RowSampler(
            prompt_seeds(count, seed, seeds),
            self._model.decoder.num_codebooks,
            temperature=temperature,
            top_k=top_k,
        )

    def _decode(
        self, inputs: Mapping[str, Any], config: GenerationConfig, sampler: RowSampler, **extra: Any
    ) -> torch.Tensor:
        """Decoded audio `[B, C, T']` of `generate` on the tokenized `inputs` (and `extra` arguments)."""
        with torch.inference_mode():
            return cast(
                torch.Tensor,
                self._model.generate(
                    **inputs, **extra, generation_config=config, logits_processor=_SamplerLastList([sampler])
                ),
            )
