"""Voice-cloning TTS with CSM (transformers): speech in the voice of a reference clip and its transcript.

CSM is a Llama backbone that predicts the first Mimi codebook of each 80 ms frame, plus a small depth
decoder that predicts the other codebooks of that frame; Mimi decodes the codes to 24 kHz mono. The
reference enters as a conversation turn, the format of the checkpoint's chat template:
`<bos>[0]{transcript}<eos><|AUDIO|>…<|AUDIO|><|audio_eos|><bos>[0]{text}<eos>` (speaker 0 says the
reference, then speaker 0 says the new text), with one `<|AUDIO|>` per Mimi frame of the reference.

Length rule: CSM decides itself when an utterance ends (a frame whose codebooks, all but the last, are
`codebook_eos_token_id`); the frames before it are decoded, at most `floor(max_duration_s * 12.5)`.
So every clip has T = 1920 * n samples, 0 <= n <= floor(max_duration_s * 12.5): speech that would run
longer is cut at the cap, mid-word. T = 0 when the model ends at once (rare for the released weights).

Sampling (top-k 50, temperature 0.9 for both decoders, Sesame's defaults) draws from torch's global RNG,
the only one CSM's `generate` uses; it is forked and seeded per text under a lock, so a text, reference
and seed give the same audio whatever else is in the batch or running in other threads of the process.
"""

from __future__ import annotations

import copy
import logging
import math
import secrets
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    CsmConfig,
    CsmDepthDecoderConfig,
    CsmForConditionalGeneration,
    CsmProcessor,
    EncodecFeatureExtractor,
    GenerationConfig,
    MimiConfig,
    PreTrainedTokenizerFast,
)
from transformers.models.mimi.modeling_mimi import MimiEuclideanCodebook

from infra.audio import Audio, resample, to_mono
from models.common import hub_loading, load_or_debug, log_loaded, resolve_device, weights_kind
from models.types import ModelInfo, VoiceReference, WeightsKind

logger = logging.getLogger(__name__)

# Saved in config.json, so a saved debug model is still reported as debug-random when loaded back.
WEIGHTS_CONFIG_KEY = "soundstage_weights"
TOP_K, TEMPERATURE = 50, 0.9
_SPEAKER = 0
_DEBUG_TORCH_SEED = 0
# The special tokens of the CSM tokenizer (Llama 3's, with ids 128002/128003 renamed for audio).
_BOS, _EOS, _AUDIO, _AUDIO_EOS = "<|begin_of_text|>", "<|end_of_text|>", "<|AUDIO|>", "<|audio_eos|>"


def _debug_config(text_vocab_size: int, token_ids: dict[str, int]) -> CsmConfig:
    """A tiny CSM of the real architecture: 2-layer backbone (32 wide), 2-layer depth decoder (16 wide),
    4 codebooks of 128 codes, and a Mimi with the real 24 kHz / 12.5 Hz conv geometry (which the
    processor's frame count assumes) but 4 filters, a 16-wide 1-layer transformer."""
    codec = MimiConfig(
        hidden_size=16,
        num_filters=4,
        num_hidden_layers=1,
        intermediate_size=32,
        num_attention_heads=2,
        num_key_value_heads=2,
        codebook_size=128,
        codebook_dim=16,
        num_quantizers=4,
        vector_quantization_hidden_dimension=16,
        upsample_groups=16,
    )
    depth = CsmDepthDecoderConfig(
        num_codebooks=4,
        backbone_hidden_size=32,
        vocab_size=128,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=5,
    )
    config = CsmConfig(
        # vocab_size equals the codec's codebook_size (the real 2051 has 3 codes Mimi cannot decode, which
        # the trained model never samples but random weights would).
        num_codebooks=4,
        vocab_size=128,
        text_vocab_size=text_vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        codebook_eos_token_id=0,
        codebook_pad_token_id=None,
        bos_token_id=token_ids[_BOS],
        pad_token_id=token_ids[_EOS],
        audio_token_id=token_ids[_AUDIO],
        audio_eos_token_id=token_ids[_AUDIO_EOS],
        depth_decoder_config=depth,
        codec_config=codec,
    )
    setattr(config, WEIGHTS_CONFIG_KEY, "debug-random")
    return config


def _debug_processor() -> CsmProcessor:
    """A processor needing no files: a byte-level tokenizer (one token per UTF-8 byte, no merges) with
    CSM's special tokens, and the 24 kHz mono feature extractor of Mimi."""
    byte_vocab = {symbol: i for i, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    backend = Tokenizer(models.BPE(vocab=byte_vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([_BOS, _EOS, _AUDIO, _AUDIO_EOS])
    # As in the CSM checkpoint, padding uses the end-of-text token.
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=_BOS, eos_token=_EOS, pad_token=_EOS
    )
    features = EncodecFeatureExtractor(feature_size=1, sampling_rate=24000, padding_value=0.0)
    return CsmProcessor(feature_extractor=features, tokenizer=tokenizer)


def _build_debug() -> tuple[CsmForConditionalGeneration, CsmProcessor]:
    """Random-init debug model, the same weights on every call (fixed seed, global RNG left untouched)."""
    processor = _debug_processor()
    tokenizer = processor.tokenizer
    token_ids = {
        token: int(tokenizer.convert_tokens_to_ids(token)) for token in (_BOS, _EOS, _AUDIO, _AUDIO_EOS)
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_DEBUG_TORCH_SEED)
        model = CsmForConditionalGeneration(_debug_config(len(tokenizer), token_ids))
        _randomize_codebooks(model)
    return model, processor


def _randomize_codebooks(model: CsmForConditionalGeneration) -> None:
    """Mimi initialises its codebooks to zeros (they are learnt by k-means), which would encode every
    reference to code 0 (the end-of-audio code) and decode every code to the same audio."""
    for codebook in model.codec_model.modules():
        if isinstance(codebook, MimiEuclideanCodebook):
            codebook.embed_sum.normal_()
            codebook._embed = None  # the cached centroids are derived from embed_sum


def _load_weights(
    source: str, cache_dir: Path | None, revision: str | None
) -> tuple[CsmForConditionalGeneration, CsmProcessor]:
    """Model (safetensors only, float32 as stored) and processor from a folder or hub id; failures raise
    ModelLoadingError."""
    with hub_loading("CSM", source, cache_dir, revision) as options:
        model = CsmForConditionalGeneration.from_pretrained(
            source, dtype=torch.float32, use_safetensors=True, **options
        )
        processor = CsmProcessor.from_pretrained(source, **options)
    # A loaded tokenizer lists `pad_to_multiple_of` among its init kwargs; CsmProcessor forwards those to
    # every modality, and Mimi's feature extractor rejects it, so no audio could be processed
    # (transformers issue #41598, still so in 5.23). It is None here, the tokenizer's default anyway.
    processor.tokenizer.init_kwargs.pop("pad_to_multiple_of", None)
    return model, processor


def _weights_kind(model: CsmForConditionalGeneration) -> WeightsKind:
    return weights_kind(getattr(model.config, WEIGHTS_CONFIG_KEY, "pretrained"), WEIGHTS_CONFIG_KEY)


def _dtype_for(device: str) -> torch.dtype:
    """bfloat16 on CUDA (CSM's training precision), float32 elsewhere (CPU half is slow and lossy)."""
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def frames_before_end(codes: torch.Tensor, eos: int) -> int:
    """Frames of `codes` `[N, K]` before the first end-of-audio frame, by the rule of CSM's `generate`:
    every codebook but the last is `eos`. N when there is none."""
    ends = (codes[:, :-1] == eos).all(dim=-1).nonzero()
    return int(ends[0, 0]) if ends.numel() else int(codes.shape[0])


def _validate_texts(texts: Sequence[str], max_duration_s: float) -> None:
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string")
    for i, text in enumerate(texts):
        if not text.strip():
            raise ValueError(f"text {i} is empty or whitespace")
    if not (math.isfinite(max_duration_s) and max_duration_s > 0):
        raise ValueError(f"max_duration_s must be a positive number of seconds, got {max_duration_s!r}")


class VoiceCloner:
    """Text to 24 kHz mono speech in the voice of a `VoiceReference`, with CSM (transformers)."""

    def __init__(
        self, model: CsmForConditionalGeneration, processor: CsmProcessor, info: ModelInfo, device: str
    ) -> None:
        # transformers wraps `PreTrainedModel.to` in functools.wraps(nn.Module.to): mypy sees it unbound.
        self._model = model.to(device=device).eval()  # type: ignore[call-arg]
        # Only the transformers go to half precision; Mimi stays float32 as in Sesame's own generator.
        for part in self._model.children():
            if part is not self._model.codec_model:
                part.to(dtype=_dtype_for(device))
        self._processor = processor
        self._info = info
        self._lock = threading.Lock()
        self.device = device

    @classmethod
    def from_pretrained(
        cls, uri: str, *, device: str = "auto", cache_dir: Path | None = None, revision: str | None = None
    ) -> VoiceCloner:
        """Load `uri`: "debug" (tiny random CSM, no files), a local folder, or a hub id ("sesame/csm-1b").

        Folders must hold `save_pretrained` output (safetensors); hub ids are fetched with
        `cache_dir`/`revision` unless HF_HUB_OFFLINE is set. `device` "auto" picks CUDA when visible;
        backbone and depth decoder are bfloat16 on CUDA, float32 on CPU. Raises `ModelLoadingError`.
        """
        device = resolve_device(device)
        (model, processor), info = load_or_debug(
            uri,
            revision,
            debug=_build_debug,
            load=lambda source: _load_weights(source, cache_dir, revision),
            weights=lambda loaded: _weights_kind(loaded[0]),
        )
        log_loaded(logger, "CSM voice cloner", info, device)
        return cls(model, processor, info, device)

    @property
    def sample_rate(self) -> int:
        """Output sample rate in Hz (24000, Mimi's)."""
        return int(self._model.config.codec_config.sampling_rate)

    @property
    def channels(self) -> int:
        return 1

    @property
    def frame_rate(self) -> float:
        """Codec frames (generation steps) per second of audio, in Hz (12.5)."""
        return float(self._model.config.codec_config.frame_rate)

    @property
    def info(self) -> ModelInfo:
        return self._info

    def synthesize(
        self,
        texts: Sequence[str],
        reference: VoiceReference,
        *,
        seed: int | None = 0,
        max_duration_s: float = 20.0,
    ) -> list[Audio]:
        """One `Audio` `[1, T]` at `sample_rate` per text, spoken in the voice of `reference`.

        Length: T = 1920 * n, n the frames before CSM's end-of-audio frame, capped at
        floor(max_duration_s * 12.5) frames (so T <= max_duration_s * 24000; module docstring).
        seed: a text, reference, seed and cap give the same audio whatever else is in the batch;
        `None` draws a fresh seed. Texts are rendered one after another.
        Raises `ValueError` for a blank text, a cap under one frame (80 ms), or a context (reference
        frames + tokens + cap) longer than the backbone's `max_position_embeddings`.
        """
        _validate_texts(texts, max_duration_s)
        frames = math.floor(max_duration_s * self.frame_rate)
        if frames < 1:
            raise ValueError(
                f"max_duration_s={max_duration_s!r} is shorter than one {1 / self.frame_rate:g} s frame"
            )
        voice = resample(to_mono(reference.audio), self.sample_rate).samples[0]
        seed = secrets.randbits(63) if seed is None else int(seed)
        return [self._synthesize_one(text, reference.transcript, voice, frames, seed) for text in texts]

    def _synthesize_one(
        self, text: str, transcript: str, voice: npt.NDArray[np.float32], frames: int, seed: int
    ) -> Audio:
        prompt = self._conversation(transcript, text)
        inputs = self._processor(text=[prompt], audio=[voice], return_tensors="pt").to(self.device)
        context = int(inputs["input_ids"].shape[1]) + frames
        if context > self._model.config.max_position_embeddings:
            raise ValueError(
                f"reference, text and max_duration_s need {context} positions; the model has "
                f"{self._model.config.max_position_embeddings} (shorten the reference, the text or the cap)"
            )
        codes = self._generate_codes(inputs, frames, seed)
        n = frames_before_end(codes, int(self._model.config.codebook_eos_token_id))
        if n == 0:
            return Audio(np.zeros((1, 0), np.float32), self.sample_rate)
        with torch.inference_mode():
            wave = self._model.codec_model.decode(codes[:n].T[None]).audio_values  # [1, 1, 1920 * n]
        return Audio(np.ascontiguousarray(wave[0].float().cpu().numpy()), self.sample_rate)

    def _conversation(self, transcript: str, text: str) -> str:
        """The checkpoint chat template's rendering of [reference turn with audio, new turn], speaker 0."""
        tokenizer = self._processor.tokenizer
        bos, eos = tokenizer.bos_token, tokenizer.eos_token
        audio = f"{self._processor.audio_token}{self._processor.audio_eos_token}"
        return f"{bos}[{_SPEAKER}]{transcript}{eos}{audio}{bos}[{_SPEAKER}]{text}{eos}"

    def _generate_codes(self, inputs: Any, frames: int, seed: int) -> torch.Tensor:
        """Sampled codes `[N, K]`, N <= `frames` (the last one the end frame when the model stopped)."""
        config: GenerationConfig = copy.deepcopy(self._model.generation_config)
        config.update(do_sample=True, top_k=TOP_K, temperature=TEMPERATURE, top_p=None, max_new_tokens=frames)
        devices = [torch.device(self.device)] if self.device.startswith("cuda") else []
        with self._lock, torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(seed)
            codes = self._model.generate(
                **inputs,
                generation_config=config,
                depth_decoder_do_sample=True,
                depth_decoder_top_k=TOP_K,
                depth_decoder_temperature=TEMPERATURE,
            )
        return cast(torch.Tensor, codes)[0]

    def save_pretrained(self, path: Path) -> None:
        """Write model weights (safetensors), config, generation config and processor into folder `path`."""
        path.mkdir(parents=True, exist_ok=True)
        self._model.save_pretrained(path)
        self._processor.save_pretrained(path)
