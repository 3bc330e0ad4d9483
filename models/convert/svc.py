"""Conversion of RVC voice model `.pth` files into the safetensors folders `VoiceModel` loads.

An RVC inference checkpoint is a torch pickle of plain data: `{"weight": {name: tensor}, "config": [18
hyper-parameters], "sr": "40k", "f0": 1, "version": "v2", "info": ...}`. It is read with
`torch.load(weights_only=True)` (tensors and plain containers only: nothing in the file can run), its
top-level entries checked against `_ALLOWED_ENTRIES`, weight norm folded into plain weights, and the result
checked to load into `Synthesizer` exactly. Run offline, once (`soundstage models convert svc`).
`export_rvc_checkpoint` writes the same layout back (tests, and a round trip for debugging a conversion).
"""

from __future__ import annotations

import hashlib
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from models.svc import VoiceModel, write_voice_folder
from models.svc_net import SynthConfig, Synthesizer
from models.types import ModelLoadingError, WeightsKind

# Top-level entries an RVC checkpoint may hold, with their types; anything else is refused.
_ALLOWED_ENTRIES: dict[str, tuple[type, ...]] = {
    "weight": (dict,),
    "config": (list, tuple),
    "info": (str, int),
    "sr": (str, int),
    "f0": (int, bool),
    "version": (str,),
    "params": (dict,),
}
_REQUIRED = ("weight", "config")
DEBUG_INFO = "soundstage:debug-random"  # `info` of a checkpoint exported from debug weights
# The modules RVC trains with weight norm (their `.weight` is stored as `weight_g` + `weight_v`).
_WEIGHT_NORMED = re.compile(r"^(dec\.ups\.|dec\.resblocks\.|flow\.flows\.\d+\.enc\.).*\.weight$")
_NORM_SUFFIXES = {
    ".weight_g": ".weight_v",
    ".parametrizations.weight.original0": ".parametrizations.weight.original1",
}


def convert_rvc_checkpoint(checkpoint: Path, out_dir: Path) -> Path:
    """Convert an RVC v2 pitch-model `.pth` into `out_dir` (`config.json` + `model.safetensors`, loadable
    by `VoiceModel.load(str(out_dir))`); returns `out_dir`. The revision recorded is `sha256:` + the
    first 12 hex digits of the file. Raises `ModelLoadingError` naming what is wrong with the file."""
    package = _read(checkpoint)
    config = _synth_config(package, checkpoint)
    state = fold_weight_norm({k: v for k, v in package["weight"].items() if not k.startswith("enc_q.")})
    try:
        Synthesizer(config).load_state_dict(state)
    except (RuntimeError, ValueError) as e:
        raise ModelLoadingError(f"{checkpoint} does not load into the RVC v2 synthesizer: {e}") from e
    weights: WeightsKind = "debug-random" if package.get("info") == DEBUG_INFO else "pretrained"
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:12]
    write_voice_folder(out_dir, config, state, weights, revision=f"sha256:{digest}")
    return out_dir


def _read(checkpoint: Path) -> dict[str, Any]:
    try:
        package = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
        raise ModelLoadingError(
            f"{checkpoint} is not an RVC checkpoint of tensors and plain data ({type(e).__name__}: {e})"
        ) from e
    if not isinstance(package, dict) or any(key not in package for key in _REQUIRED):
        raise ModelLoadingError(f"{checkpoint} is not an RVC checkpoint: it needs the entries {_REQUIRED}")
    for key, value in package.items():
        allowed = _ALLOWED_ENTRIES.get(str(key))
        if allowed is None or not isinstance(value, allowed):
            raise ModelLoadingError(
                f"{checkpoint}: entry {key!r} ({type(value).__name__}) is not allowed; "
                f"an RVC checkpoint holds {sorted(_ALLOWED_ENTRIES)}"
            )
    if not all(isinstance(v, torch.Tensor) for v in package["weight"].values()):
        raise ModelLoadingError(f"{checkpoint}: 'weight' must map parameter names to tensors")
    return package


def _synth_config(package: dict[str, Any], checkpoint: Path) -> SynthConfig:
    version, f0 = package.get("version", "v1"), package.get("f0", 1)
    if version != "v2" or not f0:
        raise ModelLoadingError(
            f"{checkpoint} is an RVC {version} model{'' if f0 else ' without pitch'}; only v2 models with "
            "pitch (768-d content features, NSF decoder) are supported"
        )
    try:
        return SynthConfig.from_rvc_list(list(package["config"]))
    except (TypeError, ValueError) as e:
        raise ModelLoadingError(f"{checkpoint}: its config list is not an RVC synthesizer config: {e}") from e


def fold_weight_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`weight = g * v / ||v||` for each weight-normed pair (norm over the axes where `g` is 1); float32."""
    folded: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        suffix = next((s for s in (*_NORM_SUFFIXES, *_NORM_SUFFIXES.values()) if key.endswith(s)), None)
        if suffix is None:
            folded[key] = tensor.float()
        elif suffix in _NORM_SUFFIXES:
            base = key[: -len(suffix)]
            v = state.get(base + _NORM_SUFFIXES[suffix])
            if v is None:
                raise ModelLoadingError(f"{key} has no matching {_NORM_SUFFIXES[suffix]}")
            g, v = tensor.float(), v.float()
            axes = [i for i in range(v.ndim) if g.shape[i] == 1]
            folded[base + ".weight"] = g * v / v.norm(dim=axes, keepdim=True)
    return folded


def export_rvc_checkpoint(voice: VoiceModel, path: Path, *, half: bool = True) -> Path:
    """Write `voice` as an RVC v2 `.pth` (weight norm unfolded into `weight_g`/`weight_v`, float16 when
    `half`, as RVC saves them); a debug voice is marked in `info` so its conversion stays `debug-random`."""
    dtype = torch.float16 if half else torch.float32
    weight: dict[str, torch.Tensor] = {}
    for key, tensor in voice.synth.state_dict().items():
        if _WEIGHT_NORMED.match(key):
            base = key[: -len(".weight")]
            axes = list(range(1, tensor.ndim))
            weight[base + ".weight_g"] = tensor.norm(dim=axes, keepdim=True).to(dtype)
            weight[base + ".weight_v"] = tensor.to(dtype)
        else:
            weight[key] = tensor.to(dtype)
    c = voice.synth.config
    config = [_plain(getattr(c, name)) for name in list(SynthConfig.__dataclass_fields__)[:18]]
    info = DEBUG_INFO if voice.info.weights == "debug-random" else voice.info.model_id
    rate = f"{c.sample_rate // 1000}k"
    torch.save({"weight": weight, "config": config, "info": info, "sr": rate, "f0": 1, "version": "v2"}, path)
    return path


def _plain(value: Any) -> Any:
    """Tuples as lists, all the way down (an RVC config list holds lists)."""
    return [_plain(item) for item in value] if isinstance(value, tuple | list) else value
