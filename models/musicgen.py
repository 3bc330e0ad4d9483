"""MusicGen text-to-music through transformers: load (debug / folder / hub id), generate, save.

Sampling is done per prompt with its own `torch.Generator`, so a prompt's output depends only on the
prompt, its seed and the settings, never on what it was batched with (see `RowSampler` in
models/delayed_codebooks.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self, TypeVar

import numpy as np
import torch
from transformers import (
    AutoTokenizer,
    ByT5Tokenizer,
    EncodecConfig,
    MusicgenConfig,
    MusicgenDecoderConfig,
    MusicgenForConditionalGeneration,
    MusicgenMelodyConfig,
    MusicgenMelodyDecoderConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    T5Config,
)
from transformers.models.encodec.modeling_encodec import EncodecEuclideanCodebook

from infra.audio import Audio, resample, to_mono, validate
from models.common import hub_loading, load_or_debug, log_loaded, resolve_device, weights_kind
from models.delayed_codebooks import (
    DelayedCodebookModel,
    RowSampler,
    dtype_for,
    samples_for,
    trimmed_audio,
    validate_settings,
)
from models.static_decoding import DecoderKind
from models.types import WeightsKind

logger = logging.getLogger(__name__)

# Saved in config.json, so a saved debug model is still reported as debug-random when loaded back.
WEIGHTS_CONFIG_KEY = "soundstage_weights"
_DEBUG_TORCH_SEED = 0


# The debug decoder (4 codebooks of 64 codes, 32 wide), of MusicGen's and of MusicGen-Melody's debug models.
# The default init (std 0.02) gives near-uniform logits on which the prompt and guidance barely register;
# 0.1 makes the conditioning (text, and the melody's chroma projection) visible in the output, so tests of
# it can fail.
_DEBUG_DECODER: dict[str, Any] = {
    "vocab_size": 64,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "ffn_dim": 64,
    "num_codebooks": 4,
    "pad_token_id": 64,
    "bos_token_id": 64,
    "initializer_factor": 0.1,
}
_Config = TypeVar("_Config", MusicgenConfig, MusicgenMelodyConfig)


def debug_config(
    *,
    sampling_rate: int = 32000,
    upsampling_ratios: Sequence[int] = (8, 5, 4, 4),
    text_hidden_size: int = 32,
    target_bandwidth: float = 2.2,
) -> MusicgenConfig:
    """A tiny MusicGen of the real architecture: ByT5-vocabulary T5, mono EnCodec, 4 codebooks of 64 codes.

    The defaults are MusicGen's debug model: 32 kHz EnCodec at 50 Hz (hop 640), T5 as wide as the decoder
    (32, so no text projection). `target_bandwidth` (kbps) sets the codec's number of quantizers.
    """
    # vocab_size 384 matches `ByT5Tokenizer()`, the one tokenizer that needs no files.
    text = T5Config(vocab_size=384, d_model=text_hidden_size, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    audio = debug_codec(
        sampling_rate=sampling_rate, upsampling_ratios=upsampling_ratios, target_bandwidth=target_bandwidth
    )
    return debug_composite(MusicgenConfig, MusicgenDecoderConfig, text, audio)


def debug_codec(
    *,
    sampling_rate: int = 32000,
    upsampling_ratios: Sequence[int] = (8, 5, 4, 4),
    target_bandwidth: float = 2.2,
) -> EncodecConfig:
    """A tiny mono EnCodec (4 filters, codebooks of 64 codes); `target_bandwidth` (kbps) sets the number
    of quantizers. The defaults are 32 kHz at 50 Hz (hop 640)."""
    return EncodecConfig(
        sampling_rate=sampling_rate,
        audio_channels=1,
        num_filters=4,
        hidden_size=16,
        upsampling_ratios=list(upsampling_ratios),
        codebook_size=64,
        codebook_dim=16,
        num_lstm_layers=1,
        normalize=False,
        target_bandwidths=[target_bandwidth],
    )


def debug_composite(
    config_class: type[_Config],
    decoder_class: type[MusicgenDecoderConfig | MusicgenMelodyDecoderConfig],
    text: T5Config,
    audio: EncodecConfig,
) -> _Config:
    """`config_class` of `text`, `audio` and the debug decoder, marked as debug-random."""
    config = config_class(text_encoder=text, audio_encoder=audio, decoder=decoder_class(**_DEBUG_DECODER))
    config.decoder_start_token_id = config.pad_token_id = _DEBUG_DECODER["pad_token_id"]
    setattr(config, WEIGHTS_CONFIG_KEY, "debug-random")
    return config


def _build_debug(
    config: MusicgenConfig,
) -> tuple[MusicgenForConditionalGeneration, PreTrainedTokenizerBase]:
    """Random-init debug model, the same weights on every call (fixed seed, global RNG left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_DEBUG_TORCH_SEED)
        model = MusicgenForConditionalGeneration(config)
        randomize_codebooks(model)
    return model, ByT5Tokenizer()


def randomize_codebooks(model: MusicgenForConditionalGeneration) -> None:
    """EnCodec initialises its codebooks to zeros (they are learnt by k-means), which would decode every
    token sequence to the same audio; random codebooks make the debug model's output depend on its tokens."""
    for codebook in model.audio_encoder.modules():
        if isinstance(codebook, EncodecEuclideanCodebook):
            codebook.embed.normal_()
            codebook.embed_avg.copy_(codebook.embed)


def _load_weights(
    source: str, dtype: torch.dtype, cache_dir: Path | None, revision: str | None, name: str = "MusicGen"
) -> tuple[MusicgenForConditionalGeneration, PreTrainedTokenizerBase]:
    """Model (safetensors only) and tokenizer from a folder or hub id; failures raise ModelLoadingError."""
    with hub_loading(name, source, cache_dir, revision) as options:
        model = MusicgenForConditionalGeneration.from_pretrained(
            source, dtype=dtype, use_safetensors=True, **options
        )
        tokenizer = AutoTokenizer.from_pretrained(source, **options)
    return model, tokenizer


def saved_weights_kind(model: PreTrainedModel) -> WeightsKind:
    return weights_kind(getattr(model.config, WEIGHTS_CONFIG_KEY, "pretrained"), WEIGHTS_CONFIG_KEY)


def _conform(audio: Audio, sample_rate: int, channels: int) -> Audio:
    """`audio` resampled to `sample_rate` Hz with `channels` channels (others: mixed to mono, then copied)."""
    if audio.channels != channels:
        audio = Audio(np.repeat(to_mono(audio).samples, channels, axis=0), audio.sample_rate)
    return resample(audio, sample_rate)


class MusicGen(DelayedCodebookModel):
    """Text-to-music with MusicGen (transformers): one `Audio` `[C, T]` per prompt at `sample_rate` Hz."""

    @classmethod
    def from_pretrained(
        cls,
        uri: str,
        *,
        device: str = "auto",
        cache_dir: Path | None = None,
        revision: str | None = None,
        decoder: DecoderKind | None = None,
    ) -> Self:
        """Load `uri`: "debug" (tiny random model, no files), a local folder, or a hub id.

        Folders must hold `save_pretrained` output (safetensors); a hub id such as
        "facebook/musicgen-small" is fetched with `cache_dir`/`revision`. `device` "auto" picks CUDA when
        visible; weights are bfloat16 on CUDA, float32 on CPU. `decoder` ("eager", "static" or
        "compiled"; default "compiled" on CUDA, "eager" elsewhere) is the decoding loop, see
        `DelayedCodebookModel`. Raises `ModelLoadingError`.
        """
        device = resolve_device(device)
        (model, tokenizer), info = load_or_debug(
            uri,
            revision,
            debug=lambda: _build_debug(cls._tiny_config()),
            load=lambda source: _load_weights(source, dtype_for(device), cache_dir, revision, cls.__name__),
            weights=lambda loaded: saved_weights_kind(loaded[0]),
        )
        log_loaded(logger, cls.__name__, info, device)
        return cls(model, tokenizer, info, device, decoder=decoder)

    @classmethod
    def _tiny_config(cls) -> MusicgenConfig:
        """Config of the `debug` model; subclasses for other checkpoints of this architecture override it."""
        return debug_config()

    def generate(
        self,
        prompts: Sequence[str],
        *,
        duration_s: float,
        seed: int | None = None,
        seeds: Sequence[int] | None = None,
        guidance_scale: float = 3.0,
        top_k: int = 250,
        temperature: float = 1.0,
    ) -> list[Audio]:
        """One `Audio` `[C, T]` per prompt, T = round(duration_s * sample_rate) samples exactly.

        Seeds: `seeds` gives one per prompt; `seed` is used for every prompt (so a prompt gives the same
        audio alone or in any batch, and equal prompts in one batch give equal audio); with neither,
        each prompt gets a random seed. `guidance_scale` (classifier-free guidance, default 3.0; 1.0 turns it
        off), `top_k` (default 250) and `temperature` (default 1.0, > 0) shape the sampling.
        """
        validate_settings(prompts, duration_s, guidance_scale, top_k, temperature)
        num_samples = samples_for(duration_s, self.sample_rate)
        sampler = self._sampler(len(prompts), seed, seeds, temperature, top_k)
        waveforms = self._generate_waveforms(list(prompts), num_samples, guidance_scale, sampler)
        return trimmed_audio(waveforms, num_samples, self.sample_rate)

    def _generate_waveforms(
        self, prompts: list[str], num_samples: int, guidance_scale: float, sampler: RowSampler
    ) -> torch.Tensor:
        """Decoded audio `[B, C, T']`, T' >= `num_samples`."""
        config = self._generation_config(num_samples, guidance_scale)
        inputs = self._tokenizer(prompts, return_tensors="pt", padding=True).to(self.device)
        return self._decode(inputs, config, sampler)

    def continue_audio(
        self,
        prompt_audio: Audio,
        prompts: Sequence[str],
        *,
        duration_s: float,
        seed: int | None = None,
        seeds: Sequence[int] | None = None,
        guidance_scale: float = 3.0,
        top_k: int = 250,
        temperature: float = 1.0,
    ) -> list[Audio]:
        """Extend `prompt_audio` `[C', T']` (any rate and channel count) once per text prompt.

        Returns one `Audio` `[C, T]` per prompt, T = round(duration_s * sample_rate) samples: `duration_s` is
        the total length (seconds) and must exceed the clip's. The clip is resampled, mixed to `channels`
        and encoded by the codec; the model continues its codes and the whole sequence is decoded, so the
        output starts with the codec's reconstruction of the clip (not the clip itself), and new audio
        starts at the first codec frame boundary at or after the clip's end. A causal codec (the debug
        model's) reproduces that reconstruction up to float rounding; the released checkpoints' non-causal
        EnCodec also lets the clip's last few milliseconds hear the continuation. Seeds and sampling
        settings work as in `generate`. Bad settings raise ValueError, empty or non-finite audio an
        `AudioError` (a ValueError).
        """
        validate_settings(prompts, duration_s, guidance_scale, top_k, temperature)
        clip = _conform(validate(prompt_audio), self.sample_rate, self.channels)
        num_samples = samples_for(duration_s, self.sample_rate)
        if num_samples <= clip.num_samples:
            raise ValueError(
                f"duration_s={duration_s!r} is the total length and must exceed the prompt audio's "
                f"{prompt_audio.duration_s:.3f} s"
            )
        sampler = self._sampler(len(prompts), seed, seeds, temperature, top_k)
        codes = self._clip_codes(clip).repeat(len(prompts), 1)
        waveforms = self._continue_waveforms(list(prompts), codes, num_samples, guidance_scale, sampler)
        return trimmed_audio(waveforms, num_samples, self.sample_rate)

    def _clip_codes(self, clip: Audio) -> torch.Tensor:
        """The decoder's codes `[K, S]` for `clip` `[C, T]` at the model's rate, S = ceil(T / hop) frames."""
        codec = self._model.audio_encoder
        per_channel = self._model.decoder.num_codebooks // self.channels
        samples = torch.from_numpy(clip.samples).to(device=self.device, dtype=self._model.dtype)
        with torch.inference_mode():
            # The codec is mono: stereo checkpoints interleave per-channel codebooks (L0 R0 L1 R1 ...), as
            # transformers' own audio-prompt path does. Residual quantisers past the decoder's codebooks
            # only refine the first ones (which they leave unchanged), and the decoder does not model them.
            encoded = [codec.encode(samples[None, c : c + 1]) for c in range(self.channels)]
        # Scales exist only for normalising codecs, which MusicGen's are not; decoding ignores them.
        assert all(e.audio_scales == [None] for e in encoded), "MusicGen's codec must not normalise"
        codes = torch.stack([e.audio_codes[0, 0, :per_channel] for e in encoded], dim=1)
        assert codes.shape[0] == per_channel, f"codec gave {codes.shape[0]} < {per_channel} codebooks"
        return codes.reshape(per_channel * self.channels, -1)

    def _continue_waveforms(
        self,
        prompts: list[str],
        codes: torch.Tensor,
        num_samples: int,
        guidance_scale: float,
        sampler: RowSampler,
    ) -> torch.Tensor:
        """Decoded audio `[B, C, T']`, T' >= `num_samples`, continuing `codes` `[B * K, S]`."""
        # The codes fill the first S frames.
        config = self._generation_config(num_samples, guidance_scale, prompt_frames=codes.shape[-1])
        inputs = self._tokenizer(prompts, return_tensors="pt", padding=True).to(self.device)
        return self._decode(inputs, config, sampler, decoder_input_ids=codes)
