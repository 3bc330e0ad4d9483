"""MusicGen text-to-music through transformers: load (debug / folder / hub id), generate, save.

Sampling is done per prompt with its own `torch.Generator`, so a prompt's output depends only on the
prompt, its seed and the settings, never on what it was batched with (see `_RowSampler`).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self, cast, get_args

import numpy as np
import torch
from safetensors import SafetensorError
from transformers import (
    AutoTokenizer,
    ByT5Tokenizer,
    EncodecConfig,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    MusicgenConfig,
    MusicgenDecoderConfig,
    MusicgenForConditionalGeneration,
    PreTrainedTokenizerBase,
    T5Config,
)
from transformers.models.encodec.modeling_encodec import EncodecEuclideanCodebook

from infra.audio import Audio, resample, to_mono, validate
from models.common import (
    DEBUG_URI,
    ModelInfo,
    ModelLoadingError,
    WeightsKind,
    folder_or_hub_id,
    hub_offline,
    prompt_seeds,
    resolve_device,
)

logger = logging.getLogger(__name__)

# Saved in config.json, so a saved debug model is still reported as debug-random when loaded back.
WEIGHTS_CONFIG_KEY = "soundstage_weights"
_DEBUG_TORCH_SEED = 0


def _debug_config(
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
    audio = EncodecConfig(
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
    decoder = MusicgenDecoderConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        ffn_dim=64,
        num_codebooks=4,
        pad_token_id=64,
        bos_token_id=64,
        # The default init (std 0.02) gives near-uniform logits on which the prompt and guidance barely
        # register; 0.1 makes the text conditioning visible in the output, so tests of it can fail.
        initializer_factor=0.1,
    )
    config = MusicgenConfig(text_encoder=text, audio_encoder=audio, decoder=decoder)
    config.decoder_start_token_id = config.pad_token_id = 64
    setattr(config, WEIGHTS_CONFIG_KEY, "debug-random")
    return config


def _build_debug(
    config: MusicgenConfig,
) -> tuple[MusicgenForConditionalGeneration, PreTrainedTokenizerBase]:
    """Random-init debug model, the same weights on every call (fixed seed, global RNG left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_DEBUG_TORCH_SEED)
        model = MusicgenForConditionalGeneration(config)
        _randomize_codebooks(model)
    return model, ByT5Tokenizer()


def _randomize_codebooks(model: MusicgenForConditionalGeneration) -> None:
    """EnCodec initialises its codebooks to zeros (they are learnt by k-means), which would decode every
    token sequence to the same audio; random codebooks make the debug model's output depend on its tokens."""
    for codebook in model.audio_encoder.modules():
        if isinstance(codebook, EncodecEuclideanCodebook):
            codebook.embed.normal_()
            codebook.embed_avg.copy_(codebook.embed)


def _dtype_for(device: str) -> torch.dtype:
    """float16 on CUDA (half the memory, tensor cores), float32 elsewhere (CPU half is slow and lossy)."""
    return torch.float16 if device.startswith("cuda") else torch.float32


def _load_weights(
    source: str, dtype: torch.dtype, cache_dir: Path | None, revision: str | None, name: str = "MusicGen"
) -> tuple[MusicgenForConditionalGeneration, PreTrainedTokenizerBase]:
    """Model (safetensors only) and tokenizer from a folder or hub id; failures raise ModelLoadingError."""
    # huggingface_hub reads HF_HUB_OFFLINE once, at import; honour it at call time too, so that an offline
    # process fails at once instead of retrying the network for half a minute.
    offline = hub_offline()
    options: dict[str, Any] = {"cache_dir": cache_dir, "revision": revision, "local_files_only": offline}
    try:
        model = MusicgenForConditionalGeneration.from_pretrained(
            source, dtype=dtype, use_safetensors=True, **options
        )
        tokenizer = AutoTokenizer.from_pretrained(source, **options)
    except (OSError, ValueError, SafetensorError) as e:
        raise ModelLoadingError(
            f"could not load {name} from {source!r} (revision={revision!r}, cache_dir={cache_dir}, "
            f"offline={offline}, safetensors only): {e}"
        ) from e
    return model, tokenizer


def _weights_kind(model: MusicgenForConditionalGeneration) -> WeightsKind:
    kind = getattr(model.config, WEIGHTS_CONFIG_KEY, "pretrained")
    if kind not in get_args(WeightsKind):
        raise ModelLoadingError(f"config {WEIGHTS_CONFIG_KEY}={kind!r} is not one of {get_args(WeightsKind)}")
    return cast(WeightsKind, kind)


class _RowSampler(LogitsProcessor):
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


def _validate_settings(
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


def _num_samples(duration_s: float, sample_rate: int) -> int:
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
    """A copy of `base` for `_RowSampler`: greedy search on its one-hot scores, `max_new_tokens` steps."""
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


def _trimmed_audio(waveforms: torch.Tensor, num_samples: int, sample_rate: int) -> list[Audio]:
    """Decoded `[B, C, T']` (T' >= `num_samples`) as B float32 `Audio` `[C, num_samples]`."""
    assert waveforms.shape[-1] >= num_samples, f"decoded {waveforms.shape[-1]} < {num_samples} samples"
    batch = waveforms[..., :num_samples].float().cpu().numpy()
    return [Audio(np.ascontiguousarray(item), sample_rate) for item in batch]


def _conform(audio: Audio, sample_rate: int, channels: int) -> Audio:
    """`audio` resampled to `sample_rate` Hz with `channels` channels (others: mixed to mono, then copied)."""
    if audio.channels != channels:
        audio = Audio(np.repeat(to_mono(audio).samples, channels, axis=0), audio.sample_rate)
    return resample(audio, sample_rate)


class MusicGen:
    """Text-to-music with MusicGen (transformers): one `Audio` `[C, T]` per prompt at `sample_rate` Hz."""

    def __init__(
        self,
        model: MusicgenForConditionalGeneration,
        tokenizer: PreTrainedTokenizerBase,
        info: ModelInfo,
        device: str,
    ) -> None:
        # transformers wraps `PreTrainedModel.to` in functools.wraps(nn.Module.to): mypy sees it unbound.
        self._model = model.to(device=device, dtype=_dtype_for(device)).eval()  # type: ignore[call-arg]
        self._tokenizer = tokenizer
        self._info = info
        self.device = device

    @classmethod
    def from_pretrained(
        cls,
        uri: str,
        *,
        device: str = "auto",
        cache_dir: Path | None = None,
        revision: str | None = None,
    ) -> Self:
        """Load `uri`: "debug" (tiny random model, no files), a local folder, or a hub id.

        Folders must hold `save_pretrained` output (safetensors); a hub id such as
        "facebook/musicgen-small" is fetched with `cache_dir`/`revision`. `device` "auto" picks CUDA when
        visible; weights are float16 on CUDA, float32 on CPU. Raises `ModelLoadingError`.
        """
        device = resolve_device(device)
        if uri == DEBUG_URI:
            model, tokenizer = _build_debug(cls._tiny_config())
            info = ModelInfo(model_id=DEBUG_URI, revision=None, weights="debug-random")
        else:
            source = folder_or_hub_id(uri)
            model, tokenizer = _load_weights(source, _dtype_for(device), cache_dir, revision, cls.__name__)
            info = ModelInfo(model_id=uri, revision=revision, weights=_weights_kind(model))
        fields = {"model": info.model_id, "weights": info.weights, "device": device}
        logger.info("loaded %s", cls.__name__, extra=fields)
        return cls(model, tokenizer, info, device)

    @classmethod
    def _tiny_config(cls) -> MusicgenConfig:
        """Config of the `debug` model; subclasses for other checkpoints of this architecture override it."""
        return _debug_config()

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
        _validate_settings(prompts, duration_s, guidance_scale, top_k, temperature)
        num_samples = round(duration_s * self.sample_rate)
        if num_samples < 1:
            raise ValueError(f"duration_s={duration_s!r} is shorter than one sample at {self.sample_rate} Hz")
        sampler = _RowSampler(
            prompt_seeds(len(prompts), seed, seeds),
            self._model.decoder.num_codebooks,
            temperature=temperature,
            top_k=top_k,
        )
        waveforms = self._generate_waveforms(list(prompts), num_samples, guidance_scale, sampler)
        assert waveforms.shape[-1] >= num_samples, f"decoded {waveforms.shape[-1]} < {num_samples} samples"
        batch = waveforms[..., :num_samples].float().cpu().numpy()
        return [Audio(np.ascontiguousarray(item), self.sample_rate) for item in batch]

    def _generate_waveforms(
        self, prompts: list[str], num_samples: int, guidance_scale: float, sampler: _RowSampler
    ) -> torch.Tensor:
        """Decoded audio `[B, C, T']`, T' >= `num_samples`."""
        # transformers skips the delay pattern (misaligning the codebooks) when fewer than 2 * delay + 1
        # steps are generated: ask for at least `delay` frames; the surplus is trimmed.
        frames = max(math.ceil(num_samples / self._hop_length), self._delay_steps)
        config: GenerationConfig = copy.deepcopy(self._model.generation_config)
        config.update(
            do_sample=False,
            num_beams=1,
            top_k=None,
            top_p=None,
            temperature=None,
            guidance_scale=guidance_scale,
            max_new_tokens=frames + self._delay_steps,
        )
        inputs = self._tokenizer(prompts, return_tensors="pt", padding=True).to(self.device)
        with torch.inference_mode():
            return cast(
                torch.Tensor,
                self._model.generate(
                    **inputs, generation_config=config, logits_processor=_SamplerLastList([sampler])
                ),
            )

    def save_pretrained(self, path: Path) -> None:
        """Write model weights (safetensors), config, generation config and tokenizer into folder `path`."""
        path.mkdir(parents=True, exist_ok=True)
        self._model.save_pretrained(path)
        self._tokenizer.save_pretrained(path)

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
        _validate_settings(prompts, duration_s, guidance_scale, top_k, temperature)
        clip = _conform(validate(prompt_audio), self.sample_rate, self.channels)
        num_samples = _num_samples(duration_s, self.sample_rate)
        if num_samples <= clip.num_samples:
            raise ValueError(
                f"duration_s={duration_s!r} is the total length and must exceed the prompt audio's "
                f"{prompt_audio.duration_s:.3f} s"
            )
        sampler = _RowSampler(
            prompt_seeds(len(prompts), seed, seeds),
            self._model.decoder.num_codebooks,
            temperature=temperature,
            top_k=top_k,
        )
        codes = self._clip_codes(clip).repeat(len(prompts), 1)
        waveforms = self._continue_waveforms(list(prompts), codes, num_samples, guidance_scale, sampler)
        return _trimmed_audio(waveforms, num_samples, self.sample_rate)

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
        sampler: _RowSampler,
    ) -> torch.Tensor:
        """Decoded audio `[B, C, T']`, T' >= `num_samples`, continuing `codes` `[B * K, S]`."""
        frames = _frames_to_generate(num_samples, self._hop_length, self._delay_steps)
        # The codes fill the first S frames; the delay pattern forces each codebook's prompt codes.
        steps = frames - codes.shape[-1] + self._delay_steps
        config = _decoding_config(self._model.generation_config, guidance_scale, steps)
        inputs = self._tokenizer(prompts, return_tensors="pt", padding=True).to(self.device)
        with torch.inference_mode():
            return cast(
                torch.Tensor,
                self._model.generate(
                    **inputs,
                    decoder_input_ids=codes,
                    generation_config=config,
                    logits_processor=_SamplerLastList([sampler]),
                ),
            )
