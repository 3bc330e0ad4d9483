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
from models.static_decoding import (
    DECODER_KINDS,
    Conditioning,
    DecoderKind,
    DelayPattern,
    StaticDecoder,
    sample_top_k,
)
from models.types import ModelInfo


def dtype_for(device: str) -> torch.dtype:
    """bfloat16 on CUDA (half the memory, tensor cores, and float32's range: T5 overflows in float16),
    float32 elsewhere (CPU half precision is slow and lossy)."""
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def default_decoder(device: str) -> DecoderKind:
    """ "compiled" on CUDA (static cache, CUDA graphs); "eager" (transformers' `generate`) elsewhere, where
    compiling costs more than it saves on short clips."""
    return "compiled" if device.startswith("cuda") else "eager"


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

    @property
    def temperature(self) -> float:
        return self._temperature

    @property
    def top_k(self) -> int:
        return self._top_k

    def _sample(self, logits: torch.Tensor) -> torch.Tensor:
        """One token per row `[B * K]` from the top-k of `logits / temperature`, K uniforms per prompt."""
        draws = torch.cat([torch.rand(self._num_codebooks, generator=g) for g in self._generators])
        return sample_top_k(logits, draws, self._temperature, self._top_k)

    def draws(self, steps: int) -> torch.Tensor:
        """The uniforms of the next `steps` steps at once, `[steps, B * K]`: the same numbers, in the same
        order, as `steps` calls would draw (a CPU generator's stream does not depend on how it is split)."""
        return torch.cat([torch.rand(steps, self._num_codebooks, generator=g) for g in self._generators], 1)


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
    names its weights, the device it runs on, and the decoding loop (`decoder`):
      eager     transformers' `generate` (dynamic cache, one Python-driven forward per step)
      static    `models.static_decoding.StaticDecoder`: static KV cache, guidance in one 2B-row forward
      compiled  the same with the step `torch.compile`d (CUDA graphs on CUDA)
    All three sample the same tokens for the same seed; None picks `default_decoder(device)`."""

    def __init__(
        self,
        model: MusicgenForConditionalGeneration | MusicgenMelodyForConditionalGeneration,
        tokenizer: PreTrainedTokenizerBase,
        info: ModelInfo,
        device: str,
        *,
        decoder: DecoderKind | None = None,
    ) -> None:
        decoder = default_decoder(device) if decoder is None else decoder
        if decoder not in DECODER_KINDS:
            raise ValueError(f"decoder must be one of {DECODER_KINDS}, got {decoder!r}")
        # transformers wraps `PreTrainedModel.to` in functools.wraps(nn.Module.to): mypy sees it unbound.
        self._model = model.to(device=device, dtype=dtype_for(device)).eval()  # type: ignore[call-arg]
        self._tokenizer = tokenizer
        self._info = info
        self.device = device
        self.decoder: DecoderKind = decoder
        self._static = None
        if decoder != "eager":
            self._static = StaticDecoder(self._model.decoder, compiled=decoder == "compiled")

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
        """Decoded audio `[B, C, T']` for the tokenized `inputs`, `config.max_new_tokens` sampled steps and
        `config.guidance_scale`; `extra` may hold `decoder_input_ids` (prompt codes `[B * K, S]`)."""
        with torch.inference_mode():
            if self._static is None:
                return cast(
                    torch.Tensor,
                    self._model.generate(
                        **inputs,
                        **extra,
                        generation_config=config,
                        logits_processor=_SamplerLastList([sampler]),
                    ),
                )
            return self._codes_to_audio(
                self._static_codes(inputs, config, sampler, extra.get("decoder_input_ids"))
            )

    def _static_codes(
        self,
        inputs: Mapping[str, Any],
        config: GenerationConfig,
        sampler: RowSampler,
        prompt_codes: torch.Tensor | None,
    ) -> torch.Tensor:
        """Codes `[B, K, F]` sampled by the static decoder (the same tokens as `generate` would sample)."""
        assert self._static is not None and config.max_new_tokens is not None
        batch, num_codebooks = inputs["input_ids"].shape[0], self._model.decoder.num_codebooks
        if prompt_codes is None:
            prompt_codes = torch.zeros((batch * num_codebooks, 0), dtype=torch.long, device=self.device)
        pad_id = self._model.generation_config.decoder_start_token_id
        assert isinstance(pad_id, int), f"decoder_start_token_id must be set, got {pad_id!r}"
        prompt = prompt_codes.reshape(batch, num_codebooks, -1)
        pattern = DelayPattern.build(prompt, config.max_new_tokens, pad_id, self.channels)
        guidance = float(config.guidance_scale or 1.0)
        tokens = self._static.generate(
            self._conditioning(inputs, guidance),
            pattern,
            sampler.draws(config.max_new_tokens).to(self.device),
            guidance_scale=guidance,
            temperature=sampler.temperature,
            top_k=sampler.top_k,
        )
        return pattern.frames(tokens)

    def _conditioning(self, inputs: Mapping[str, Any], guidance_scale: float) -> Conditioning:
        """MusicGen's cross-attention states `[R, S, D]`: the text encoder's (projected to the decoder's
        width), then zeros for the unconditional half under guidance, masked to the prompt's tokens."""
        model = cast(MusicgenForConditionalGeneration, self._model)
        mask = inputs["attention_mask"]
        states = model.text_encoder(input_ids=inputs["input_ids"], attention_mask=mask).last_hidden_state
        if guidance_scale > 1:
            states = torch.cat([states, torch.zeros_like(states)])
            mask = torch.cat([mask, torch.zeros_like(mask)])
        projection = getattr(model, "enc_to_dec_proj", None)
        if projection is not None:  # exists when the text encoder is narrower or wider than the decoder
            states = projection(states)
        return Conditioning(states=states * mask[..., None], mask=mask)

    def _codes_to_audio(self, codes: torch.Tensor) -> torch.Tensor:
        """The codec's audio `[B, C, T']` for codes `[B, K, F]` (stereo: even codebooks left, odd right)."""
        codec = self._model.audio_encoder
        frames, scales = codes[None], [None] * codes.shape[0]
        if self.channels == 1:
            return cast(torch.Tensor, codec.decode(frames, audio_scales=scales).audio_values)
        sides = [codec.decode(frames[:, :, side::2], audio_scales=scales).audio_values for side in (0, 1)]
        return torch.cat(sides, dim=1)
