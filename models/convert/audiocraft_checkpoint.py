"""Read an audiocraft release (LM + compression model) into what `convert_audiocraft_checkpoint` takes.

audiocraft publishes a model as two `torch.save` files, each the dict `audiocraft.utils.export` writes:
`{"best_state": {name: tensor}, "xp.cfg": <the training config as OmegaConf YAML text>, "version": …,
"exported": True}` — the LM in `state_dict.bin`, its EnCodec in `compression_state_dict.bin`. Those load
with `torch.load(weights_only=True)`. A file whose config is a pickled omegaconf object needs full
unpickling (`trust_pickle=True`), which runs code from the file: trusted files only.

The YAML is not resolved: OmegaConf node references (`${seanet.causal}`, relative `${.dimension}`) are
resolved here, without omegaconf; resolver calls (`${oc.env:HOME}`) are left as text (conversion reads no
setting that uses one).
"""

from __future__ import annotations

import importlib
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

LM_FILE = "state_dict.bin"
COMPRESSION_FILE = "compression_state_dict.bin"
_REQUIRED_KEYS = ("best_state", "xp.cfg")
_REFERENCE = re.compile(r"\$\{(\.*)([A-Za-z_][\w\-]*(?:\.[A-Za-z_][\w\-]*)*)\}")
_MAX_REFERENCE_DEPTH = 32
_MISSING = object()


class CheckpointFileError(ValueError):
    """A checkpoint file that is missing, unreadable, or not laid out as an audiocraft export."""


@dataclass(frozen=True)
class AudiocraftRelease:
    """`state_dict`: LM tensors under `lm.`, codec tensors under `compression_model.`;
    `config`: `{"lm": xp.cfg, "compression_model": xp.cfg}`, plain dicts with references resolved."""

    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any]


def release_files(checkpoint: Path, compression: Path | None = None) -> tuple[Path, Path]:
    """(LM file, compression file) of `checkpoint`: a folder holding both files, or the LM file itself.

    `compression` names the compression file explicitly (default: `compression_state_dict.bin` beside the
    LM file). Missing files raise `CheckpointFileError`.
    """
    lm_file = checkpoint / LM_FILE if checkpoint.is_dir() else checkpoint
    codec_file = compression if compression is not None else lm_file.parent / COMPRESSION_FILE
    for role, path in (("LM checkpoint", lm_file), ("compression checkpoint", codec_file)):
        if not path.is_file():
            raise CheckpointFileError(
                f"{role} {path} does not exist (expected {LM_FILE} + {COMPRESSION_FILE})"
            )
    return lm_file, codec_file


def read_audiocraft_release(
    lm_file: Path, codec_file: Path, *, trust_pickle: bool = False
) -> AudiocraftRelease:
    """Both files' tensors (prefixed `lm.`, `compression_model.`) and configs; bad files raise
    `CheckpointFileError`."""
    lm_state, lm_config = _read_export(lm_file, trust_pickle=trust_pickle)
    codec_state, codec_config = _read_export(codec_file, trust_pickle=trust_pickle)
    state_dict = {f"lm.{key}": value for key, value in lm_state.items()}
    state_dict |= {f"compression_model.{key}": value for key, value in codec_state.items()}
    return AudiocraftRelease(state_dict, {"lm": lm_config, "compression_model": codec_config})


def _read_export(path: Path, *, trust_pickle: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    package = _load(path, trust_pickle=trust_pickle)
    if not isinstance(package, dict):
        raise CheckpointFileError(f"{path} holds a {type(package).__name__}, not an audiocraft export dict")
    if "pretrained" in package:
        raise CheckpointFileError(
            f"{path} only names a pretrained codec ({package['pretrained']!r}) instead of holding its "
            "weights; AudioGen's 16 kHz EnCodec must be exported with its tensors"
        )
    missing = [key for key in _REQUIRED_KEYS if key not in package]
    if missing:
        raise CheckpointFileError(
            f"{path} lacks {missing} (has {sorted(map(str, package))}); "
            f"an audiocraft export holds {_REQUIRED_KEYS}"
        )
    state = package["best_state"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointFileError(f"{path}: 'best_state' must map tensor names to tensors")
    return state, resolve_references(_config_dict(package["xp.cfg"], path))


def _load(path: Path, *, trust_pickle: bool) -> Any:
    if trust_pickle:
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # full unpickling can raise anything; report it as a bad file
            raise CheckpointFileError(f"could not unpickle {path}: {e!r}") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if refused:
            raise CheckpointFileError(
                f"{path} holds a pickled {refused.group(1)} object beyond tensors and plain data; "
                "if you trust the file, convert with --trust-pickle, which runs code from it"
            ) from e
        raise CheckpointFileError(f"{path} is not a torch checkpoint ({type(e).__name__})") from e


def _config_dict(blob: object, path: Path) -> dict[str, Any]:
    """`xp.cfg` as a plain dict: YAML text (an export), a dict, or an omegaconf object (trusted files)."""
    if type(blob).__module__.startswith("omegaconf"):
        omegaconf = importlib.import_module("omegaconf")
        blob = omegaconf.OmegaConf.to_container(blob, resolve=True)
    elif isinstance(blob, str):
        try:
            blob = yaml.safe_load(blob)
        except yaml.YAMLError as e:
            raise CheckpointFileError(f"{path}: 'xp.cfg' is not valid YAML: {e}") from e
    if not isinstance(blob, dict):
        raise CheckpointFileError(f"{path}: 'xp.cfg' must be a config mapping, not {type(blob).__name__}")
    return blob


def resolve_references(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of `config` with OmegaConf node references replaced by their values.

    `${a.b}` is absolute; `${.b}` is a sibling, `${..b}` a sibling of the parent, and so on. A value that is
    one whole reference takes the referenced value (any type); references inside text are substituted as
    text. Unknown paths and resolver calls stay as written; a reference cycle raises `CheckpointFileError`.
    """
    return _resolve_node(config, config, (), 0)


def _resolve_node(root: dict[str, Any], value: Any, path: tuple[Any, ...], depth: int) -> Any:
    if isinstance(value, dict):
        return {key: _resolve_node(root, item, (*path, key), depth) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve_node(root, item, (*path, i), depth) for i, item in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value
    if depth > _MAX_REFERENCE_DEPTH:
        raise CheckpointFileError(f"config reference cycle at {'.'.join(map(str, path))}: {value!r}")
    whole = _REFERENCE.fullmatch(value)
    if whole:
        return _dereference(root, path, whole, depth, default=value)

    def substitute(match: re.Match[str]) -> str:
        return str(_dereference(root, path, match, depth, default=match.group(0)))

    return _REFERENCE.sub(substitute, value)


def _dereference(
    root: dict[str, Any], path: tuple[Any, ...], reference: re.Match[str], depth: int, *, default: str
) -> Any:
    """The resolved value `reference` (found in the value at `path`) points to, or `default` if none."""
    target = _target_path(path, reference)
    found = _MISSING if target is None else _lookup(root, target)
    if target is None or found is _MISSING:
        return default
    return _resolve_node(root, found, target, depth + 1)


def _target_path(path: tuple[Any, ...], reference: re.Match[str]) -> tuple[Any, ...] | None:
    """The referenced node's path, or None for a relative reference that climbs above the root."""
    dots, dotted = reference.group(1), reference.group(2).split(".")
    if not dots:
        return tuple(dotted)
    if len(dots) > len(path):
        return None
    container = path[: len(path) - len(dots)]  # one dot: the node holding this value
    return (*container, *dotted)


def _lookup(root: dict[str, Any], path: tuple[Any, ...]) -> Any:
    node: Any = root
    for part in path:
        if isinstance(node, list) and str(part).isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return _MISSING
    return node
