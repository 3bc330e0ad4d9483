"""Singing voice conversion (RVC v2 family): content features + F0 → a voice model's NSF HiFi-GAN.

`SingingVoiceConverter` holds the content encoder (a HuBERT / ContentVec `HubertModel`, one per replica);
`VoiceModel` holds one voice's synthesizer (`models/svc_net.py`), loaded from a folder of `config.json` +
`model.safetensors` that `models/convert/svc.py` writes once from an RVC `.pth`. Nothing here unpickles.
The F0 comes from outside (SwiftF0 through the pitch deployment), already transposed by the caller.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.nn import functional as F
from transformers import HubertConfig, HubertModel

from infra.audio import Audio, resample, to_mono, validate
from models.common import DEBUG_URI, hub_loading, load_or_debug, log_loaded, resolve_device, weights_kind
from models.svc_net import PITCH_BINS, SynthConfig, Synthesizer
from models.types import ConvertedVoice, ModelInfo, ModelLoadingError, PitchContour, WeightsKind

logger = logging.getLogger(__name__)

CONTENT_RATE = 16000  # the encoder reads 16 kHz mono
FRAME_HOP = 160  # synthesizer frames: one per 10 ms of 16 kHz input
MODEL_TYPE = "rvc-v2-nsf"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_CONFIG_KEY = "soundstage_weights"
# RVC's coarse pitch: mel-scale F0 between 50 and 1100 Hz quantised to bins 1..255 (1 also = unvoiced).
F0_MIN_HZ, F0_MAX_HZ = 50.0, 1100.0
_MIN_INPUT = 400  # the encoder's receptive field in 16 kHz samples (25 ms)
_DEBUG_SEED = 0


def _mel(f0: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log1p(f0 / 700.0)


def coarse_pitch(f0_hz: np.ndarray) -> np.ndarray:
    """F0 `[T]` in Hz (0 = unvoiced) → int64 bins in [1, 255] on RVC's mel scale."""
    lo, hi = _mel(np.array(F0_MIN_HZ)), _mel(np.array(F0_MAX_HZ))
    scaled = np.where(f0_hz > 0, (_mel(f0_hz) - lo) * (PITCH_BINS - 2) / (hi - lo) + 1, 1.0)
    return np.clip(np.rint(scaled), 1, PITCH_BINS - 1).astype(np.int64)


def frame_f0(pitch: PitchContour, frames: int) -> np.ndarray:
    """The contour on the synthesizer's 10 ms grid, `[frames]` Hz: F0 interpolated between voiced frames,
    0 where the nearest contour frame is unvoiced (or the contour is empty)."""
    voiced = pitch.voiced & (pitch.f0_hz > 0)
    if not voiced.any():
        return np.zeros(frames)
    if not np.isfinite(pitch.f0_hz).all() or (pitch.f0_hz < 0).any():
        raise ValueError("pitch contour F0 must be finite and >= 0 Hz")
    times = np.arange(frames) * FRAME_HOP / CONTENT_RATE
    f0 = np.interp(times, pitch.times_s[voiced], pitch.f0_hz[voiced])
    nearest = np.clip(np.searchsorted(pitch.times_s, times), 0, len(pitch.times_s) - 1)
    return np.where(voiced[nearest], f0, 0.0)


def _debug_encoder() -> HubertModel:
    """A tiny random HuBERT with the real interface: 768-d features at 50 per second of 16 kHz input."""
    config = HubertConfig(
        hidden_size=768,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=512,
        conv_dim=(32,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_DEBUG_SEED)
        return HubertModel(config).eval()


def debug_synth_config() -> SynthConfig:
    """A small synthesizer of the real v2 architecture at 40 kHz (hop 400): 4 speakers, 2 encoder layers."""
    return SynthConfig(
        inter_channels=32,
        hidden_channels=32,
        filter_channels=64,
        n_layers=2,
        upsample_initial_channel=64,
        spk_embed_dim=4,
        gin_channels=16,
    )


def _debug_synthesizer() -> Synthesizer:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_DEBUG_SEED + 1)
        return Synthesizer(debug_synth_config()).eval()


def write_voice_folder(
    path: Path,
    config: SynthConfig,
    state: dict[str, torch.Tensor],
    weights: WeightsKind,
    revision: str | None,
) -> None:
    """`config.json` (model type, weights kind, revision, synthesizer config) + `model.safetensors`."""
    record = {
        "model_type": MODEL_TYPE,
        WEIGHTS_CONFIG_KEY: weights,
        "revision": revision,
        "synth": config.to_json(),
    }
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().cpu().contiguous() for k, v in state.items()}, path / WEIGHTS_FILE)
    (path / CONFIG_FILE).write_text(json.dumps(record, indent=2) + "\n")


def _read_voice_config(folder: Path) -> dict[str, Any]:
    try:
        record = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError) as e:
        raise ModelLoadingError(
            f"no voice model at {folder}: could not read {CONFIG_FILE} ({e}); an RVC .pth must first be "
            "converted with `soundstage models convert svc` (models/convert/svc.py)"
        ) from e
    if not isinstance(record, dict) or record.get("model_type") != MODEL_TYPE:
        raise ModelLoadingError(f"{folder / CONFIG_FILE} does not describe a voice model ({MODEL_TYPE!r})")
    return record


class VoiceModel:
    """One voice: its synthesizer (output at `sample_rate` Hz, mono) and the identity of its weights."""

    def __init__(self, synth: Synthesizer, info: ModelInfo) -> None:
        self.synth = synth
        self.info = info

    @classmethod
    def load(cls, uri: str, *, device: str = "cpu", revision: str | None = None) -> VoiceModel:
        """ "debug" (a small random synthesizer, fixed seed) or a local folder from `save` / the converter.
        The revision is `revision` (the model store's) or else the one the folder records."""
        if uri == DEBUG_URI:
            return cls(_debug_synthesizer().to(device), ModelInfo(DEBUG_URI, None, "debug-random"))
        synth, record = _load_synth(Path(uri).expanduser())
        kind = weights_kind(record.get(WEIGHTS_CONFIG_KEY, "pretrained"), WEIGHTS_CONFIG_KEY)
        return cls(synth.to(device), ModelInfo(uri, revision or record.get("revision"), kind))

    @property
    def sample_rate(self) -> int:
        return self.synth.config.sample_rate

    @property
    def speakers(self) -> int:
        return self.synth.config.spk_embed_dim

    def save(self, path: Path) -> None:
        write_voice_folder(
            path, self.synth.config, self.synth.state_dict(), self.info.weights, self.info.revision
        )


def _load_synth(folder: Path) -> tuple[Synthesizer, dict[str, Any]]:
    record = _read_voice_config(folder)
    try:
        synth = Synthesizer(SynthConfig.from_json(record["synth"]))
        synth.load_state_dict(load_file(folder / WEIGHTS_FILE))
    except (OSError, KeyError, TypeError, ValueError, RuntimeError, SafetensorError) as e:
        raise ModelLoadingError(f"could not load the voice model in {folder} (safetensors only): {e}") from e
    return synth.eval(), record


class SingingVoiceConverter:
    """The content encoder of a replica; `convert` turns vocals + F0 into one voice model's singing."""

    def __init__(self, encoder: HubertModel, info: ModelInfo, device: str) -> None:
        self._encoder = encoder.to(device=device).eval()  # type: ignore[call-arg]
        self._info = info
        self.device = device

    @classmethod
    def from_pretrained(
        cls, uri: str, *, device: str = "auto", cache_dir: Path | None = None, revision: str | None = None
    ) -> SingingVoiceConverter:
        """ "debug" (tiny random HuBERT, 768-d), a local folder or a hub id of a `HubertModel` checkpoint
        (ContentVec / HuBERT base: RVC v2 reads its layer-12 features). Raises `ModelLoadingError`."""
        device = resolve_device(device)

        def load(source: str) -> HubertModel:
            with hub_loading("the content encoder", source, cache_dir, revision) as options:
                return HubertModel.from_pretrained(source, use_safetensors=True, **options)

        encoder, info = load_or_debug(uri, revision, debug=_debug_encoder, load=load, weights=_pretrained)
        log_loaded(logger, "content encoder", info, device)
        return cls(encoder, info, device)

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def sample_rate(self) -> int:
        """The rate the encoder reads (16000 Hz); results come at the voice model's own rate."""
        return CONTENT_RATE

    @property
    def channels(self) -> int:
        return 1

    def load_voice(
        self, source: str, *, revision: str | None = None, cache_dir: Path | None = None
    ) -> VoiceModel:
        """A voice model on this replica's device: "debug", a converted local folder, or a hub id whose
        repository holds such a folder (its `config.json` + `model.safetensors` only are fetched)."""
        if source != DEBUG_URI and not Path(source).expanduser().is_dir():
            source = _hub_voice_folder(source, revision, cache_dir)
        return VoiceModel.load(source, device=self.device, revision=revision)

    def content(self, audio: Audio) -> torch.Tensor:
        """Encoder features `[1, T', 768]` (50 per second) of `audio` mixed to mono at 16 kHz."""
        mono = resample(to_mono(validate(audio)), CONTENT_RATE).samples[0]
        wave = torch.from_numpy(np.pad(mono, (0, max(_MIN_INPUT - len(mono), 0))))[None].to(self.device)
        with torch.inference_mode():
            hidden: torch.Tensor = self._encoder(wave).last_hidden_state
        return hidden

    def convert(
        self, audio: Audio, *, voice: VoiceModel, pitch: PitchContour, speaker: int = 0, seed: int = 0
    ) -> ConvertedVoice:
        """`audio` `[C, T]` (vocals) sung by `voice` along `pitch` (Hz; transpose it first): `[1, T']` at
        `voice.sample_rate`, T' = the input's duration at that rate. `seed` fixes the prior's noise and the
        source's phases and noise, so equal inputs give equal samples. Raises `ValueError` for a speaker
        outside `[0, voice.speakers)` or a bad contour, `AudioError` for empty or non-finite audio."""
        if not 0 <= speaker < voice.speakers:
            raise ValueError(f"speaker {speaker} is not in [0, {voice.speakers}) for this voice model")
        audio = validate(audio)
        frames = max(int(np.ceil(audio.duration_s * CONTENT_RATE / FRAME_HOP)), 1)
        f0 = frame_f0(pitch, frames)
        features = F.interpolate(self.content(audio).transpose(1, 2), size=frames, mode="linear")
        generator = torch.Generator().manual_seed(seed)
        with torch.inference_mode():
            wave = voice.synth.infer(
                features.transpose(1, 2),
                torch.from_numpy(coarse_pitch(f0))[None].to(self.device),
                torch.from_numpy(f0).float()[None].to(self.device),
                speaker,
                generator,
            )
        length = round(audio.duration_s * voice.sample_rate)
        samples = wave[0, :, :length].float().cpu().numpy()
        return ConvertedVoice(
            Audio(np.ascontiguousarray(samples), voice.sample_rate), seed, self._info, voice.info
        )


def _hub_voice_folder(repo: str, revision: str | None, cache_dir: Path | None) -> str:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    with hub_loading("a voice model", repo, cache_dir, revision, errors=(HfHubHTTPError,)) as options:
        return str(snapshot_download(repo, allow_patterns=[CONFIG_FILE, WEIGHTS_FILE], **options))


def _pretrained(_: HubertModel) -> WeightsKind:
    return "pretrained"
