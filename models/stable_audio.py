"""Stable Audio Open text-to-audio through diffusers' `StableAudioPipeline`: load (debug / folder / hub id),
generate, save.

The pipeline always denoises the model's whole window (`sample_size` latent frames: 47.55 s of 44.1 kHz
stereo for the released model), conditioned on the requested start (0 s) and end (`duration_s`); the clip
is the first `round(duration_s * sample_rate)` samples of the decoded window. Each prompt draws its initial
noise, and the per-step noise of a stochastic (SDE) scheduler, from its own `torch.Generator`, so its audio
depends only on the prompt, its seed and the settings, not on the other prompts of its batch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

# From their modules, not from `diffusers`: its __init__ re-exports import-error stubs under TYPE_CHECKING,
# which is all mypy would see of these classes.
from diffusers.models.autoencoders.autoencoder_oobleck import AutoencoderOobleck
from diffusers.models.transformers.stable_audio_transformer import StableAudioDiTModel
from diffusers.pipelines.stable_audio.modeling_stable_audio import StableAudioProjectionModel
from diffusers.pipelines.stable_audio.pipeline_stable_audio import StableAudioPipeline
from diffusers.schedulers.scheduling_edm_dpmsolver_multistep import EDMDPMSolverMultistepScheduler
from huggingface_hub.errors import EntryNotFoundError
from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

from infra.audio import Audio
from models.common import hub_loading, load_or_debug, log_loaded, prompt_seeds, resolve_device, weights_kind
from models.types import ModelInfo, WeightsKind

logger = logging.getLogger(__name__)

# Saved in the transformer's config.json, so a saved debug model is still reported as debug-random when
# loaded back. The leading underscore makes diffusers keep the key on load without warning that
# `StableAudioDiTModel.__init__` does not take it.
WEIGHTS_CONFIG_KEY = "_soundstage_weights"
_DEBUG_TORCH_SEED = 0
# The released model's duration conditioning covers 0..512 s; its window is shorter (47.55 s).
_SECONDS_RANGE = (0, 512)


def _debug_pipeline(dtype: torch.dtype) -> StableAudioPipeline:
    """A tiny Stable Audio of the real architecture: 44.1 kHz stereo, 0.74 s window, ByT5-sized T5.

    Same weights on every call (fixed seed, global RNG left untouched), in `dtype`.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_DEBUG_TORCH_SEED)
        # vocab_size 384 matches `ByT5Tokenizer()`, the one tokenizer that needs no files.
        text_encoder = T5EncoderModel(
            T5Config(vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
        )
        # As released: the text width equals the conditioning width (so the text projection is identity)
        # and the global states are the start and end embeddings side by side (2 * 32).
        projection = StableAudioProjectionModel(
            text_encoder_dim=32, conditioning_dim=32, min_value=_SECONDS_RANGE[0], max_value=_SECONDS_RANGE[1]
        )
        transformer = StableAudioDiTModel(
            sample_size=256,
            in_channels=8,
            num_layers=2,
            attention_head_dim=8,
            num_attention_heads=4,
            num_key_value_attention_heads=2,
            out_channels=8,
            cross_attention_dim=32,
            time_proj_dim=16,
            global_states_input_dim=64,
            cross_attention_input_dim=32,
        )
        # hop 2 * 4 * 4 * 4 = 128 samples per latent frame: 256 frames are 32768 samples (0.743 s).
        # The encoder's output holds a mean and a scale per latent channel: 16 = 2 * 8.
        vae = AutoencoderOobleck(
            encoder_hidden_size=16,
            downsampling_ratios=[2, 4, 4, 4],
            channel_multiples=[1, 2, 4, 8],
            decoder_channels=8,
            decoder_input_channels=8,
            audio_channels=2,
            sampling_rate=44100,
        )
    transformer.register_to_config(**{WEIGHTS_CONFIG_KEY: "debug-random"})
    pipeline = StableAudioPipeline(
        vae=vae,
        text_encoder=text_encoder,
        projection_model=projection,
        tokenizer=ByT5Tokenizer(model_max_length=128),
        transformer=transformer,
        # mypy sees the pipeline's scheduler annotation through diffusers' import-error stub of this class.
        scheduler=_debug_scheduler(),  # type: ignore[arg-type]
    )
    if dtype != torch.float32:  # diffusers warns about any dtype cast, float32 to float32 too
        pipeline = pipeline.to(dtype=dtype)
    return pipeline


def _debug_scheduler() -> EDMDPMSolverMultistepScheduler:
    """The released model's sampler settings on the EDM DPM-Solver++ SDE.

    The released model uses `CosineDPMSolverMultistepScheduler`, whose Brownian-tree noise needs the
    `torchsde` package; this one draws its per-step noise from the same per-prompt generators without it.
    """
    return EDMDPMSolverMultistepScheduler(
        sigma_min=0.3,
        sigma_max=500.0,
        sigma_data=1.0,
        sigma_schedule="exponential",
        prediction_type="v_prediction",
        algorithm_type="sde-dpmsolver++",
        solver_order=2,
        final_sigmas_type="zero",
    )


def _dtype_for(device: str) -> torch.dtype:
    """float16 on CUDA (as Stability's own example runs the released model), float32 elsewhere."""
    return torch.float16 if device.startswith("cuda") else torch.float32


def _load_pipeline(
    source: str, dtype: torch.dtype, cache_dir: Path | None, revision: str | None
) -> StableAudioPipeline:
    """All six components (safetensors only) from a folder or hub id; failures raise ModelLoadingError."""
    # ImportError: the released scheduler (CosineDPMSolverMultistepScheduler) needs `torchsde`.
    errors = (ImportError, EntryNotFoundError)
    with hub_loading("Stable Audio", source, cache_dir, revision, errors=errors) as options:
        return StableAudioPipeline.from_pretrained(source, dtype=dtype, use_safetensors=True, **options)


def _weights_kind(pipeline: StableAudioPipeline) -> WeightsKind:
    return weights_kind(pipeline.transformer.config.get(WEIGHTS_CONFIG_KEY, "pretrained"), WEIGHTS_CONFIG_KEY)


def _validate_settings(
    prompts: Sequence[str],
    duration_s: float,
    max_duration_s: float,
    steps: int,
    guidance_scale: float,
    negative_prompt: str | None,
) -> None:
    if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompts must be a non-empty sequence of strings, got {prompts!r}")
    if not (math.isfinite(duration_s) and 0 < duration_s <= max_duration_s):
        raise ValueError(f"duration_s must be in (0, {max_duration_s:.3f}] seconds, got {duration_s!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if not (math.isfinite(guidance_scale) and guidance_scale >= 1.0):
        raise ValueError(f"guidance_scale must be >= 1.0 (1.0 disables guidance), got {guidance_scale!r}")
    if negative_prompt is not None and guidance_scale == 1.0:
        raise ValueError("negative_prompt needs guidance_scale > 1.0 (it steers the unconditional branch)")


class StableAudio:
    """Text-to-audio with Stable Audio Open (diffusers): one `Audio` `[C, T]` per prompt, `sample_rate` Hz."""

    def __init__(self, pipeline: StableAudioPipeline, info: ModelInfo, device: str) -> None:
        self._pipeline = pipeline.to(device=device)
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
    ) -> StableAudio:
        """Load `uri`: "debug" (tiny random model, no files), a local folder, or a hub id.

        Folders must hold `save_pretrained` output (safetensors); a hub id such as
        "stabilityai/stable-audio-open-1.0" (gated: needs an accepted licence and a token) is fetched with
        `cache_dir`/`revision`; its scheduler needs the `torchsde` package. `device` "auto" picks CUDA when
        visible; weights are float16 on CUDA, float32 on CPU. Raises `ModelLoadingError`.
        """
        device = resolve_device(device)
        dtype = _dtype_for(device)
        pipeline, info = load_or_debug(
            uri,
            revision,
            debug=lambda: _debug_pipeline(dtype),
            load=lambda source: _load_pipeline(source, dtype, cache_dir, revision),
            weights=_weights_kind,
        )
        log_loaded(logger, "Stable Audio", info, device)
        return cls(pipeline, info, device)

    @property
    def sample_rate(self) -> int:
        """Output sample rate in Hz (44100 for the released model and the debug model)."""
        return int(self._pipeline.vae.config.sampling_rate)

    @property
    def channels(self) -> int:
        """Output channels (2: stereo)."""
        return int(self._pipeline.vae.config.audio_channels)

    @property
    def max_duration_s(self) -> float:
        """Longest clip in seconds: the denoised window (47.55 s released, 0.743 s debug)."""
        window = self._pipeline.transformer.config.sample_size * self._pipeline.vae.hop_length
        return float(window / self.sample_rate)

    @property
    def info(self) -> ModelInfo:
        return self._info

    def generate(
        self,
        prompts: Sequence[str],
        *,
        duration_s: float,
        seed: int | None = None,
        seeds: Sequence[int] | None = None,
        steps: int = 100,
        guidance_scale: float = 7.0,
        negative_prompt: str | None = None,
    ) -> list[Audio]:
        """One `Audio` `[C, T]` per prompt, T = round(duration_s * sample_rate) samples exactly.

        `duration_s` is in (0, `max_duration_s`]. Seeds: `seeds` gives one per prompt; `seed` is used for
        every prompt (so a prompt gives the same audio alone or in any batch); with neither, each prompt
        gets a random seed. `steps` (default 100, >= 1) denoising steps; `guidance_scale` (classifier-free
        guidance, default 7.0; 1.0 turns it off); `negative_prompt` (default none: an all-zero
        unconditional embedding) steers away from its text, for every prompt, and needs guidance.
        """
        _validate_settings(prompts, duration_s, self.max_duration_s, steps, guidance_scale, negative_prompt)
        num_samples = round(duration_s * self.sample_rate)
        if num_samples < 1:
            raise ValueError(f"duration_s={duration_s!r} is shorter than one sample at {self.sample_rate} Hz")
        # CPU generators: the same seed gives the same noise on any device.
        generators = [torch.Generator().manual_seed(s) for s in prompt_seeds(len(prompts), seed, seeds)]
        negative_prompts = None if negative_prompt is None else [negative_prompt] * len(prompts)
        with torch.inference_mode():
            latents = self._denoise(
                list(prompts), duration_s, steps, guidance_scale, negative_prompts, generators
            )
            # Decoded here, not by the pipeline, which cuts int(duration_s * sample_rate) samples: one short
            # of round() for some durations.
            waveforms = self._pipeline.vae.decode(latents).sample
        assert waveforms.shape[-1] >= num_samples, f"decoded {waveforms.shape[-1]} < {num_samples} samples"
        batch = waveforms[..., :num_samples].float().cpu().numpy()
        return [Audio(np.ascontiguousarray(item), self.sample_rate) for item in batch]

    def _denoise(
        self,
        prompts: list[str],
        duration_s: float,
        steps: int,
        guidance_scale: float,
        negative_prompts: list[str] | None,
        generators: list[torch.Generator],
    ) -> torch.Tensor:
        """Denoised latents `[B, latent channels, sample_size]` of the whole window."""
        # A scheduler holds per-run state (step index, past model outputs, noise sampler): a fresh one per
        # call, in a pipeline that shares every other component, lets concurrent calls share the model.
        pipeline = StableAudioPipeline(**{**self._pipeline.components, "scheduler": self._fresh_scheduler()})
        pipeline.set_progress_bar_config(disable=True)
        output = pipeline(
            prompt=prompts,
            audio_start_in_s=0.0,
            audio_end_in_s=duration_s,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            negative_prompt=negative_prompts,
            generator=generators,
            output_type="latent",
        )
        return cast(torch.Tensor, output.audios)

    def _fresh_scheduler(self) -> Any:
        scheduler = self._pipeline.scheduler
        return type(scheduler).from_config(scheduler.config)

    def save_pretrained(self, path: Path) -> None:
        """Write the six components (weights as safetensors, configs, tokenizer) into folder `path`."""
        path.mkdir(parents=True, exist_ok=True)
        self._pipeline.save_pretrained(path, safe_serialization=True)
