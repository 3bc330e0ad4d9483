"""MusicGen-Melody through transformers: text + melody (chroma) to music; load (debug/folder/hub id), save.

Sampling, seeds, settings and lengths are MusicGen's (models/delayed_codebooks.py): each prompt samples
from its own generator, so its tokens depend only on the prompt, the melody, its seed and the settings.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, cast

import torch
from transformers import (
    AutoTokenizer,
    ByT5Tokenizer,
    FeatureExtractionMixin,
    MusicgenMelodyConfig,
    MusicgenMelodyDecoderConfig,
    MusicgenMelodyForConditionalGeneration,
    PreTrainedTokenizerBase,
    T5Config,
)
from transformers.audio_utils import chroma_filter_bank

from infra.audio import Audio, resample, to_mono, validate
from models.common import hub_loading, load_or_debug, log_loaded, resolve_device
from models.delayed_codebooks import (
    DelayedCodebookModel,
    RowSampler,
    dtype_for,
    samples_for,
    trimmed_audio,
    validate_settings,
)
from models.musicgen import debug_codec, debug_composite, randomize_codebooks, saved_weights_kind
from models.static_decoding import Conditioning, DecoderKind
from models.types import ModelInfo

logger = logging.getLogger(__name__)

FEATURE_EXTRACTOR_FILE = "preprocessor_config.json"
_DEBUG_TORCH_SEED = 0


def _debug_config() -> MusicgenMelodyConfig:
    """A tiny MusicGen-Melody of the real architecture: ByT5-vocabulary T5 (narrower than the decoder, so
    projected, as in the released checkpoints), 32 kHz mono EnCodec at 50 Hz, 4 codebooks, 12 chroma bins."""
    # vocab_size 384 matches `ByT5Tokenizer()`, the one tokenizer that needs no files.
    text = T5Config(vocab_size=384, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2)
    # 4 codebooks of 6 bits at 50 Hz, as the released codec's 2.2 kbps are 4 codebooks of 11 bits.
    audio = debug_codec(target_bandwidth=1.2)
    return debug_composite(MusicgenMelodyConfig, MusicgenMelodyDecoderConfig, text, audio)


@dataclass(frozen=True)
class ChromaExtractor:
    """MusicGen-Melody's melody features: for each STFT frame, a one-hot `[num_chroma]` of its loudest pitch
    class (bin 0 = C, 9 = A).

    The computation of transformers' `MusicgenMelodyFeatureExtractor` (power spectrogram with a periodic Hann
    window of `n_fft` samples, hop `hop_length`, centred and reflect-padded; librosa's chroma filter bank;
    argmax per frame), which cannot be constructed here: it needs torchaudio, which this project does not
    use (ARCHITECTURE.md). Its settings live in the same `preprocessor_config.json`. Defaults are the
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
        randomize_codebooks(cast(Any, model))
    return model, ByT5Tokenizer()


def _load_weights(
    source: str, dtype: torch.dtype, cache_dir: Path | None, revision: str | None
) -> tuple[MusicgenMelodyForConditionalGeneration, PreTrainedTokenizerBase, ChromaExtractor]:
    """Model (safetensors only), tokenizer and chroma settings from a folder or hub id.

    Failures raise ModelLoadingError; HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE are read at call time.
    """
    with hub_loading("MusicGen-Melody", source, cache_dir, revision) as options:
        model = MusicgenMelodyForConditionalGeneration.from_pretrained(
            source, dtype=dtype, use_safetensors=True, **options
        )
        tokenizer = AutoTokenizer.from_pretrained(source, **options)
        chroma_config, _ = FeatureExtractionMixin.get_feature_extractor_dict(source, **options)
    return model, tokenizer, ChromaExtractor.from_config(chroma_config)


class MusicGenMelody(DelayedCodebookModel):
    """Text (+ optional melody) to music with MusicGen-Melody: one `Audio` `[C, T]` per prompt."""

    def __init__(
        self,
        model: MusicgenMelodyForConditionalGeneration,
        tokenizer: PreTrainedTokenizerBase,
        chroma: ChromaExtractor,
        info: ModelInfo,
        device: str,
        *,
        decoder: DecoderKind | None = None,
    ) -> None:
        super().__init__(model, tokenizer, info, device, decoder=decoder)
        self._chroma = chroma

    @classmethod
    def from_pretrained(
        cls,
        uri: str,
        *,
        device: str = "auto",
        cache_dir: Path | None = None,
        revision: str | None = None,
        decoder: DecoderKind | None = None,
    ) -> MusicGenMelody:
        """Load `uri`: "debug" (tiny random model, no files), a local folder, or a hub id.

        Folders must hold `save_pretrained` output (safetensors); a hub id such as "facebook/musicgen-melody"
        is fetched with `cache_dir`/`revision`. `device` "auto" picks CUDA when visible; weights are bfloat16
        on CUDA, float32 on CPU. `decoder` is the decoding loop, as in `MusicGen.from_pretrained`.
        Raises `ModelLoadingError`.
        """
        device = resolve_device(device)
        (model, tokenizer, chroma), info = load_or_debug(
            uri,
            revision,
            # The released chroma settings; the debug codec is 32 kHz too.
            debug=lambda: (*_build_debug(), ChromaExtractor()),
            load=lambda source: _load_weights(source, dtype_for(device), cache_dir, revision),
            weights=lambda loaded: saved_weights_kind(loaded[0]),
        )
        log_loaded(logger, "MusicGen-Melody", info, device)
        return cls(model, tokenizer, chroma, info, device, decoder=decoder)

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
        validate_settings(prompts, duration_s, guidance_scale, top_k, temperature)
        features = None if melody is None else self._chroma(melody)
        num_samples = samples_for(duration_s, self.sample_rate)
        sampler = self._sampler(len(prompts), seed, seeds, temperature, top_k)
        waveforms = self._generate_waveforms(list(prompts), features, num_samples, guidance_scale, sampler)
        return trimmed_audio(waveforms, num_samples, self.sample_rate)

    def _generate_waveforms(
        self,
        prompts: list[str],
        chroma: torch.Tensor | None,
        num_samples: int,
        guidance_scale: float,
        sampler: RowSampler,
    ) -> torch.Tensor:
        """Decoded audio `[B, C, T']`, T' >= `num_samples`; `chroma` `[frames, 12]` is shared by the batch."""
        config = self._generation_config(num_samples, guidance_scale)
        inputs: dict[str, Any] = dict(self._tokenizer(prompts, return_tensors="pt", padding=True))
        if chroma is not None:
            inputs["input_features"] = chroma.expand(len(prompts), -1, -1).to(self._model.dtype)
        inputs = {name: tensor.to(self.device) for name, tensor in inputs.items()}
        return self._decode(inputs, config, sampler)

    def _conditioning(self, inputs: Mapping[str, Any], guidance_scale: float) -> Conditioning:
        """MusicGen-Melody's prefix `[R, P, D]`: the projected chroma (or the "no melody" chroma, bin 0),
        looped or cut to `chroma_length` frames, then the projected text states; under guidance the
        unconditional half has the "no melody" chroma and zeroed text."""
        model = cast(MusicgenMelodyForConditionalGeneration, self._model)
        mask = inputs["attention_mask"]
        text = model.text_encoder(input_ids=inputs["input_ids"], attention_mask=mask).last_hidden_state
        if model.text_encoder.config.hidden_size != model.decoder.config.hidden_size:
            text = model.enc_to_dec_proj(text)
        melody = inputs.get("input_features")
        shape = (text.shape[0], 1 if melody is None else melody.shape[1], model.config.num_chroma)
        no_melody = torch.zeros(shape, device=text.device, dtype=text.dtype)
        no_melody[:, :, 0] = 1
        melody = no_melody if melody is None else melody
        if guidance_scale > 1:
            text, mask = torch.cat([text, torch.zeros_like(text)]), torch.cat([mask, torch.zeros_like(mask)])
            melody = torch.cat([melody, no_melody])
        if model.config.num_chroma != model.decoder.config.hidden_size:
            melody = model.audio_enc_to_dec_proj(melody)
        chroma_length = model.config.chroma_length
        melody = melody.repeat(1, -(-chroma_length // melody.shape[1]), 1)[:, :chroma_length]
        return Conditioning(prefix=torch.cat([melody, text * mask[..., None]], dim=1))

    def save_pretrained(self, path: Path) -> None:
        """Write weights (safetensors), config, generation config, tokenizer and chroma settings to `path`."""
        super().save_pretrained(path)
        config = json.dumps(self._chroma.to_config(), indent=2, sort_keys=True)
        (path / FEATURE_EXTRACTOR_FILE).write_text(config + "\n")
