"""MusicGen-Melody through transformers: text + melody (chroma) to music; load (debug/folder/hub id), save.

Sampling, seeds, settings and lengths are MusicGen's (models/musicgen.py): each prompt samples from its own
generator, so its tokens depend only on the prompt, the melody, its seed and the settings.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, cast

import torch
from safetensors import SafetensorError
from transformers import (
    AutoTokenizer,
    ByT5Tokenizer,
    EncodecConfig,
    FeatureExtractionMixin,
    MusicgenMelodyConfig,
    MusicgenMelodyDecoderConfig,
    MusicgenMelodyForConditionalGeneration,
    PreTrainedTokenizerBase,
    T5Config,
)
from transformers.audio_utils import chroma_filter_bank

from infra.audio import Audio, resample, to_mono, validate
from models.common import (
    DEBUG_URI,
    ModelInfo,
    ModelLoadingError,
    folder_or_hub_id,
    hub_offline,
    prompt_seeds,
    resolve_device,
)
from models.musicgen import (
    WEIGHTS_CONFIG_KEY,
    _decoding_config,
    _dtype_for,
    _frames_to_generate,
    _num_samples,
    _randomize_codebooks,
    _RowSampler,
    _SamplerLastList,
    _trimmed_audio,
    _validate_settings,
    _weights_kind,
)

logger = logging.getLogger(__name__)

FEATURE_EXTRACTOR_FILE = "preprocessor_config.json"
_DEBUG_TORCH_SEED = 0


def _debug_config() -> MusicgenMelodyConfig:
    """A tiny MusicGen-Melody of the real architecture: ByT5-vocabulary T5 (narrower than the decoder, so
    projected, as in the released checkpoints), 32 kHz mono EnCodec at 50 Hz, 4 codebooks, 12 chroma bins."""
    # vocab_size 384 matches `ByT5Tokenizer()`, the one tokenizer that needs no files.
    text = T5Config(vocab_size=384, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2)
    audio = EncodecConfig(
        sampling_rate=32000,
        audio_channels=1,
        num_filters=4,
        hidden_size=16,
        upsampling_ratios=[8, 5, 4, 4],
        codebook_size=64,
        codebook_dim=16,
        num_lstm_layers=1,
        normalize=False,
        # 4 codebooks of 6 bits at 50 Hz, as the released codec's 2.2 kbps are 4 codebooks of 11 bits.
        target_bandwidths=[1.2],
    )
    decoder = MusicgenMelodyDecoderConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        ffn_dim=64,
        num_codebooks=4,
        pad_token_id=64,
        bos_token_id=64,
        # As in MusicGen's debug model: std 0.1 instead of 0.02 makes the conditioning (text and the
        # chroma projection) visible in the sampled tokens, so tests of it can fail.
        initializer_factor=0.1,
    )
    config = MusicgenMelodyConfig(text_encoder=text, audio_encoder=audio, decoder=decoder)
    config.decoder_start_token_id = config.pad_token_id = 64
    setattr(config, WEIGHTS_CONFIG_KEY, "debug-random")
    return config


@dataclass(frozen=True)
class ChromaExtractor:
    """MusicGen-Melody's melody features: for each STFT frame, a one-hot `[num_chroma]` of its loudest pitch
    class (bin 0 = C, 9 = A).

    The computation of transformers' `MusicgenMelodyFeatureExtractor` (power spectrogram with a periodic Hann
    window of `n_fft` samples, hop `hop_length`, centred and reflect-padded; librosa's chroma filter bank;
    argmax per frame), which cannot be constructed here: it needs torchaudio, which this project does not
    use (DESIGN.md section 2). Its settings live in the same `preprocessor_config.json`. Defaults are the
    released checkpoints': 32 kHz, n_fft 16384, hop 4096 (7.8 frames/s), 12 bins, the first 30 s.
    """

    sampling_rate: int = 32000
    n_fft: int = 16384
    hop_length: int = 4096
    num_chroma: int = 12
    chunk_length: int = 30

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ChromaExtractor:
        """From a `preprocessor_config.json` dict; keys it does not use are ignored."""
        names = {field.name for field in fields(cls)}
        return cls(**{key: value for key, value in config.items() if key in names})

    def to_config(self) -> dict[str, Any]:
        """The `preprocessor_config.json` dict transformers' feature extractor reads."""
        return {
            "feature_extractor_type": "MusicgenMelodyFeatureExtractor",
            "feature_size": self.num_chroma,
            **asdict(self),
            "padding_side": "right",
            "padding_value": 0.0,
            "return_attention_mask": False,
            "stem_indices": [3, 2],
        }

    def __call__(self, melody: Audio) -> torch.Tensor:
        """One-hot chroma `[frames, num_chroma]` of `melody` (mixed to mono, resampled to `sampling_rate`,
        cut to `chunk_length` s), frames = 1 + T // hop_length with T >= n_fft."""
        audio = resample(to_mono(validate(melody)), self.sampling_rate)
        wave = torch.from_numpy(audio.samples[0, : self.chunk_length * self.sampling_rate])
        if wave.shape[-1] < self.n_fft:  # as transformers does: centre a short melody in zeros
            pad = self.n_fft - wave.shape[-1]
            wave = torch.nn.functional.pad(wave, (pad // 2, pad - pad // 2))
        window = torch.hann_window(self.n_fft)
        spectrum = torch.stft(wave, self.n_fft, self.hop_length, window=window, return_complex=True)
        filters = chroma_filter_bank(
            num_frequency_bins=self.n_fft,
            num_chroma=self.num_chroma,
            sampling_rate=self.sampling_rate,
            tuning=0,
        )
        chroma = torch.from_numpy(filters).float() @ spectrum.abs().square()  # [num_chroma, frames]
        return torch.nn.functional.one_hot(chroma.argmax(dim=0), self.num_chroma).float()


def _build_debug() -> tuple[MusicgenMelodyForConditionalGeneration, PreTrainedTokenizerBase]:
    """Random-init debug model, the same weights on every call (fixed seed, global RNG left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_DEBUG_TORCH_SEED)
        model = MusicgenMelodyForConditionalGeneration(_debug_config())
        # The helper touches only `model.audio_encoder`, which both architectures share.
        _randomize_codebooks(cast(Any, model))
    return model, ByT5Tokenizer()


def _load_weights(
    source: str, dtype: torch.dtype, cache_dir: Path | None, revision: str | None
) -> tuple[MusicgenMelodyForConditionalGeneration, PreTrainedTokenizerBase, ChromaExtractor]:
    """Model (safetensors only), tokenizer and chroma settings from a folder or hub id.

    Failures raise ModelLoadingError; HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE are read at call time.
    """
    offline = hub_offline()
    options: dict[str, Any] = {"cache_dir": cache_dir, "revision": revision, "local_files_only": offline}
    try:
        model = MusicgenMelodyForConditionalGeneration.from_pretrained(
            source, dtype=dtype, use_safetensors=True, **options
        )
        tokenizer = AutoTokenizer.from_pretrained(source, **options)
        chroma_config, _ = FeatureExtractionMixin.get_feature_extractor_dict(source, **options)
    except (OSError, ValueError, SafetensorError) as e:
        raise ModelLoadingError(
            f"could not load MusicGen-Melody from {source!r} (revision={revision!r}, cache_dir={cache_dir}, "
            f"offline={offline}, safetensors only): {e}"
        ) from e
    return model, tokenizer, ChromaExtractor.from_config(chroma_config)


class MusicGenMelody:
    """Text (+ optional melody) to music with MusicGen-Melody: one `Audio` `[C, T]` per prompt."""

    def __init__(
        self,
        model: MusicgenMelodyForConditionalGeneration,
        tokenizer: PreTrainedTokenizerBase,
        chroma: ChromaExtractor,
        info: ModelInfo,
        device: str,
    ) -> None:
        # transformers wraps `PreTrainedModel.to` in functools.wraps(nn.Module.to): mypy sees it unbound.
        self._model = model.to(device=device, dtype=_dtype_for(device)).eval()  # type: ignore[call-arg]
        self._tokenizer = tokenizer
        self._chroma = chroma
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
    ) -> MusicGenMelody:
        """Load `uri`: "debug" (tiny random model, no files), a local folder, or a hub id.

        Folders must hold `save_pretrained` output (safetensors); a hub id such as "facebook/musicgen-melody"
        is fetched with `cache_dir`/`revision`. `device` "auto" picks CUDA when visible; weights are float16
        on CUDA, float32 on CPU. Raises `ModelLoadingError`.
        """
        device = resolve_device(device)
        if uri == DEBUG_URI:
            model, tokenizer = _build_debug()
            chroma = ChromaExtractor()  # the released settings; the debug codec is 32 kHz too
            info = ModelInfo(model_id=DEBUG_URI, revision=None, weights="debug-random")
        else:
            source = folder_or_hub_id(uri)
            model, tokenizer, chroma = _load_weights(source, _dtype_for(device), cache_dir, revision)
            info = ModelInfo(model_id=uri, revision=revision, weights=_weights_kind(cast(Any, model)))
        log_fields = {"model": info.model_id, "weights": info.weights, "device": device}
        logger.info("loaded MusicGen-Melody", extra=log_fields)
        return cls(model, tokenizer, chroma, info, device)

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
        return math.prod(self._model.config.audio_encoder.upsampling_ratios)

    @property
    def _delay_steps(self) -> int:
        """Decoder steps that complete no frame (the delay pattern offsets codebook k by k steps)."""
        return self._model.decoder.num_codebooks // self.channels - 1

    def melody_chroma(self, melody: Audio) -> torch.Tensor:
        """The one-hot chroma `[frames, 12]` the model is conditioned on (see `ChromaExtractor`)."""
        return self._chroma(melody)

    def generate(
        self,
        prompts: Sequence[str],
        *,
        melody: Audio | None = None,
        duration_s: float,
        seed: int | None = None,
        seeds: Sequence[int] | None = None,
        guidance_scale: float = 3.0,
        top_k: int = 250,
        temperature: float = 1.0,
    ) -> list[Audio]:
        """One `Audio` `[C, T]` per prompt, T = round(duration_s * sample_rate) samples exactly.

        `melody` `[C', T']` (any rate and channel count; its first 30 s are used, looped over the model's
        chroma window when shorter) conditions every prompt; without it the model gets its "no melody"
        input, which is chroma bin 0 throughout: the same input as a melody that is pure C (or silent).
        Guidance contrasts text + melody with neither. Seeds and settings work as in
        `MusicGen.generate`, except that transformers lets MusicGen-Melody attend to the (zeroed) padding
        of shorter prompts, so a prompt batched with longer ones can give different audio than alone.
        Bad settings raise ValueError, an empty or non-finite melody an `AudioError` (a ValueError).
        """
        _validate_settings(prompts, duration_s, guidance_scale, top_k, temperature)
        features = None if melody is None else self._chroma(melody)
        num_samples = _num_samples(duration_s, self.sample_rate)
        sampler = _RowSampler(
            prompt_seeds(len(prompts), seed, seeds),
            self._model.decoder.num_codebooks,
            temperature=temperature,
            top_k=top_k,
        )
        waveforms = self._generate_waveforms(list(prompts), features, num_samples, guidance_scale, sampler)
        return _trimmed_audio(waveforms, num_samples, self.sample_rate)

    def _generate_waveforms(
        self,
        prompts: list[str],
        chroma: torch.Tensor | None,
        num_samples: int,
        guidance_scale: float,
        sampler: _RowSampler,
    ) -> torch.Tensor:
        """Decoded audio `[B, C, T']`, T' >= `num_samples`; `chroma` `[frames, 12]` is shared by the batch."""
        frames = _frames_to_generate(num_samples, self._hop_length, self._delay_steps)
        config = _decoding_config(self._model.generation_config, guidance_scale, frames + self._delay_steps)
        inputs: dict[str, Any] = dict(self._tokenizer(prompts, return_tensors="pt", padding=True))
        if chroma is not None:
            inputs["input_features"] = chroma.expand(len(prompts), -1, -1).to(self._model.dtype)
        inputs = {name: tensor.to(self.device) for name, tensor in inputs.items()}
        with torch.inference_mode():
            return cast(
                torch.Tensor,
                self._model.generate(
                    **inputs, generation_config=config, logits_processor=_SamplerLastList([sampler])
                ),
            )

    def save_pretrained(self, path: Path) -> None:
        """Write weights (safetensors), config, generation config, tokenizer and chroma settings to `path`."""
        path.mkdir(parents=True, exist_ok=True)
        self._model.save_pretrained(path)
        self._tokenizer.save_pretrained(path)
        config = json.dumps(self._chroma.to_config(), indent=2, sort_keys=True)
        (path / FEATURE_EXTRACTOR_FILE).write_text(config + "\n")
