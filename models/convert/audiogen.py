"""Conversion of audiocraft AudioGen checkpoints onto transformers' MusicGen architecture (offline, once).

AudioGen is MusicGen's design applied to sound: a frozen T5 text encoder (t5-large for the released
`audiogen-medium`), a 16 kHz EnCodec (4 codebooks of 2048 codes at 50 Hz) and a decoder over the delayed
codebooks. `AudioGen` is the MusicGen wrapper with a 16 kHz debug model; `convert_audiocraft_checkpoint`
maps an audiocraft checkpoint onto `MusicgenForConditionalGeneration` and writes a safetensors folder that
`AudioGen.from_pretrained` loads.

Checkpoint: one dict holding the LM's tensors (audiocraft's `state_dict.bin` `best_state`) under `lm.` and
the compression model's (`compression_state_dict.bin` `best_state`) under `compression_model.`.
Key mapping, transformers <- audiocraft (i: layer, k: codebook, n: SEANet module, q: quantizer):
  decoder.model.decoder.embed_tokens.{k}.weight      <- lm.emb.{k}.weight
  decoder.model.decoder.layers.{i}.
    self_attn.{q,k,v}_proj.weight                    <- lm.transformer.layers.{i}.self_attn.in_proj_weight
                                                        (rows split in thirds: q, k, v)
    self_attn.out_proj.weight                        <- ….self_attn.out_proj.weight
    encoder_attn.{q,k,v}_proj / out_proj.weight      <- ….cross_attention.in_proj_weight / out_proj.weight
    self_attn_layer_norm / encoder_attn_layer_norm / final_layer_norm.{weight,bias}
                                                     <- ….norm1 / norm_cross / norm2.{weight,bias}
    fc1 / fc2.weight                                 <- ….linear1 / linear2.weight
  decoder.model.decoder.layer_norm.{weight,bias}     <- lm.out_norm.{weight,bias}
  decoder.lm_heads.{k}.weight                        <- lm.linears.{k}.weight
  enc_to_dec_proj.{weight,bias}                      <- lm.condition_provider.conditioners.description.
                                                        output_proj.{weight,bias}
  audio_encoder.{encoder,decoder}.layers.{n}.[block.{j}.|shortcut.]conv.
    {bias, parametrizations.weight.original0, .original1}
                                                     <- compression_model.{encoder,decoder}.model.{n}.
                                                        [block.{j}.|shortcut.]conv.conv.{bias,weight_g,weight_v}
                                                        (convtr.convtr.* for the decoder's upsampling layers)
  audio_encoder.{encoder,decoder}.layers.{n}.lstm.*  <- compression_model.{encoder,decoder}.model.{n}.lstm.*
  audio_encoder.quantizer.layers.{q}.codebook.{inited,cluster_size,embed,embed_avg}
                                                     <- compression_model.quantizer.vq.layers.{q}._codebook.*
Accepted aliases: `….mha.` attention names (audiocraft's non-custom attention) and torch's parametrized
weight norm (`….parametrizations.weight.original0/1`). Every checkpoint tensor must land and every model
tensor must be filled; nothing is dropped (the codebooks' training buffers land in transformers' buffers).
Not in the checkpoint: the T5 (frozen, so audiocraft does not save it; taken from `text_encoder`) and the
sinusoidal positions (computed).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoTokenizer,
    ByT5Tokenizer,
    MusicgenConfig,
    MusicgenForConditionalGeneration,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    T5Config,
    T5EncoderModel,
)
from transformers.models.encodec.modeling_encodec import EncodecConvTranspose1d

from models.common import DEBUG_URI, hub_offline
from models.convert.audiogen_config import (
    CheckpointConversionError,
    check_settings,
    encodec_config,
    lm_decoder_config,
    section,
    setting,
)
from models.musicgen import WEIGHTS_CONFIG_KEY
from models.types import ModelLoadingError, WeightsKind

logger = logging.getLogger(__name__)

LM_PREFIX = "lm."
CODEC_PREFIX = "compression_model."
_PROJ_KEY = LM_PREFIX + "condition_provider.conditioners.description.output_proj.weight"
_MAX_LISTED_KEYS = 40

_LAYER = r"decoder\.model\.decoder\.layers\.(\d+)\."
_LM_LAYER = r"lm.transformer.layers.\1."
_SEANET = r"audio_encoder\.(encoder|decoder)\.layers\.(\d+)\."
_CODEC_MODEL = r"compression_model.\1.model.\2."
_CONV = r"((?:block\.\d+\.|shortcut\.)?)conv\."  # a SEANet conv: direct, in a residual block, or its shortcut
_WEIGHT_NORM = _CONV + r"parametrizations\.weight\.original"
_CODEBOOK = r"audio_encoder\.quantizer\.layers\.(\d+)\.codebook\.(inited|cluster_size|embed|embed_avg)"
# transformers key (full match) -> audiocraft key; group `qkv` picks a third of a fused in_proj_weight.
_SOURCE_RULES: tuple[tuple[str, str], ...] = (
    (r"decoder\.model\.decoder\.embed_tokens\.(\d+)\.weight", r"lm.emb.\1.weight"),
    (_LAYER + r"self_attn\.(?P<qkv>[qkv])_proj\.weight", _LM_LAYER + "self_attn.in_proj_weight"),
    (_LAYER + r"self_attn\.out_proj\.weight", _LM_LAYER + "self_attn.out_proj.weight"),
    (_LAYER + r"encoder_attn\.(?P<qkv>[qkv])_proj\.weight", _LM_LAYER + "cross_attention.in_proj_weight"),
    (_LAYER + r"encoder_attn\.out_proj\.weight", _LM_LAYER + "cross_attention.out_proj.weight"),
    (_LAYER + r"self_attn_layer_norm\.(weight|bias)", _LM_LAYER + r"norm1.\2"),
    (_LAYER + r"encoder_attn_layer_norm\.(weight|bias)", _LM_LAYER + r"norm_cross.\2"),
    (_LAYER + r"final_layer_norm\.(weight|bias)", _LM_LAYER + r"norm2.\2"),
    (_LAYER + r"fc1\.weight", _LM_LAYER + "linear1.weight"),
    (_LAYER + r"fc2\.weight", _LM_LAYER + "linear2.weight"),
    (r"decoder\.model\.decoder\.layer_norm\.(weight|bias)", r"lm.out_norm.\1"),
    (r"decoder\.lm_heads\.(\d+)\.weight", r"lm.linears.\1.weight"),
    (r"enc_to_dec_proj\.(weight|bias)", r"lm.condition_provider.conditioners.description.output_proj.\1"),
    (_SEANET + _CONV + "bias", _CODEC_MODEL + r"\3conv.conv.bias"),
    (_SEANET + _WEIGHT_NORM + "0", _CODEC_MODEL + r"\3conv.conv.weight_g"),
    (_SEANET + _WEIGHT_NORM + "1", _CODEC_MODEL + r"\3conv.conv.weight_v"),
    (_SEANET + r"lstm\.((?:weight|bias)_(?:ih|hh)_l\d+)", _CODEC_MODEL + r"lstm.\3"),
    (_CODEBOOK, r"compression_model.quantizer.vq.layers.\1._codebook.\2"),
)  # fmt: skip
# Other spellings of the same audiocraft tensors -> the canonical names above.
_SOURCE_ALIASES: tuple[tuple[str, str], ...] = (
    (r"\.(self_attn|cross_attention)\.mha\.", r".\1."),
    (r"\.parametrizations\.weight\.original0$", ".weight_g"),
    (r"\.parametrizations\.weight\.original1$", ".weight_v"),
)


def convert_audiocraft_checkpoint(
    state_dict: dict[str, torch.Tensor],
    config: dict[str, Any],
    out_dir: Path,
    *,
    text_encoder: str | None = None,
) -> Path:
    """Convert an audiocraft AudioGen checkpoint into a folder for `AudioGen.from_pretrained` (`out_dir`).

    `state_dict`: LM tensors under `lm.`, compression-model tensors under `compression_model.` (see the
    module docstring for the mapping). `config`: `{"lm": …, "compression_model": …}`, each the resolved
    `xp.cfg` of its checkpoint as a plain dict (`transformer_lm`, `codebooks_pattern`, `conditioners`,
    `fuser`; `sample_rate`, `channels`, `seanet`, `rvq`, `encodec`). `text_encoder`: a hub id or folder of the
    T5 the LM was trained with (default: the config's `conditioners.description.t5.name`, t5-large for
    AudioGen), or "debug" for a tiny random T5 (the result is then reported as `debug-random`).
    Raises `CheckpointConversionError` naming every missing, unmapped or mis-shaped key or setting.
    """
    if not all(any(key.startswith(prefix) for key in state_dict) for prefix in (LM_PREFIX, CODEC_PREFIX)):
        raise CheckpointConversionError(
            f"state_dict must hold the LM's tensors under {LM_PREFIX!r}, the codec's under {CODEC_PREFIX!r}"
        )
    lm, codec = section(config, "lm"), section(config, "compression_model")
    check_settings({"lm": lm, "compression_model": codec})
    decoder_config = lm_decoder_config(lm)
    source = (
        text_encoder
        if text_encoder is not None
        else str(setting(lm, "conditioners.description.t5.name", "lm"))
    )
    t5, tokenizer = _load_text_encoder(source, state_dict, decoder_config.hidden_size)
    weights: WeightsKind = "debug-random" if source == DEBUG_URI else "pretrained"
    musicgen_config = MusicgenConfig(
        text_encoder=t5.config, audio_encoder=encodec_config(codec, lm), decoder=decoder_config
    )
    musicgen_config.decoder_start_token_id = musicgen_config.pad_token_id = decoder_config.vocab_size
    setattr(musicgen_config, WEIGHTS_CONFIG_KEY, weights)
    model = MusicgenForConditionalGeneration(musicgen_config)
    model.text_encoder.load_state_dict(t5.state_dict())
    result = model.load_state_dict(_map_tensors(state_dict, model), strict=False)
    assert not result.unexpected_keys and all(k.startswith("text_encoder.") for k in result.missing_keys), (
        result
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    logger.info("converted audiocraft checkpoint", extra={"out_dir": str(out_dir), "weights": weights})
    return out_dir


def _map_tensors(
    state_dict: dict[str, torch.Tensor], model: MusicgenForConditionalGeneration
) -> dict[str, torch.Tensor]:
    """Every non-T5 tensor of `model`, taken from `state_dict`; raises unless the two match one to one."""
    sources = _canonical_sources(state_dict)
    transposed = tuple(
        n + ".conv." for n, m in model.named_modules() if isinstance(m, EncodecConvTranspose1d)
    )
    converted: dict[str, torch.Tensor] = {}
    missing: dict[str, None] = {}  # an ordered set: q, k and v share one source
    mis_shaped: list[str] = []
    for target, expected in model.state_dict().items():
        if target.startswith("text_encoder."):
            continue
        key, part = _source_of(target, transposed=target.startswith(transposed))
        if key not in sources:
            missing[key] = None
            continue
        original, tensor = sources[key]
        if part is not None:
            rows = tensor.shape[0] // 3
            tensor = tensor[part * rows : (part + 1) * rows]
        if tensor.shape != expected.shape:
            mis_shaped.append(f"{original} {tuple(tensor.shape)} -> {target} {tuple(expected.shape)}")
        converted[target] = tensor
    used = {_source_of(t, transposed=t.startswith(transposed))[0] for t in converted}
    unmapped = [original for key, (original, _) in sources.items() if key not in used]
    if missing or unmapped or mis_shaped:
        problems = {"missing keys": list(missing), "unmapped keys": unmapped, "shape mismatches": mis_shaped}
        raise CheckpointConversionError(
            "the audiocraft checkpoint does not match the MusicGen architecture its config describes: "
            + "; ".join(_listing(title, keys) for title, keys in problems.items() if keys)
        )
    return converted


def _source_of(target: str, *, transposed: bool = False) -> tuple[str, int | None]:
    """The audiocraft key of transformers tensor `target`, and which third (q, k, v) of it, if fused.

    `transposed`: `target` belongs to a transposed convolution (audiocraft names those `convtr.convtr`).
    """
    for pattern, replacement in _SOURCE_RULES:
        match = re.fullmatch(pattern, target)
        if match:
            key = match.expand(replacement)
            key = key.replace(".conv.conv.", ".convtr.convtr.") if transposed else key
            part = match.groupdict().get("qkv")
            return key, None if part is None else "qkv".index(part)
    raise CheckpointConversionError(f"transformers tensor {target!r} has no known audiocraft counterpart")


def _canonical_sources(state_dict: dict[str, torch.Tensor]) -> dict[str, tuple[str, torch.Tensor]]:
    """Canonical audiocraft name -> (name as given, tensor); two spellings of one tensor raise."""
    sources: dict[str, tuple[str, torch.Tensor]] = {}
    for original, tensor in state_dict.items():
        key = original
        for pattern, replacement in _SOURCE_ALIASES:
            key = re.sub(pattern, replacement, key)
        if key in sources:
            raise CheckpointConversionError(f"keys {sources[key][0]!r} and {original!r} are the same tensor")
        sources[key] = (original, tensor)
    return sources


def _listing(title: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED_KEYS])
    more = f" … and {len(keys) - _MAX_LISTED_KEYS} more" if len(keys) > _MAX_LISTED_KEYS else ""
    return f"{title} ({len(keys)}): [{shown}{more}]"


def _load_text_encoder(
    source: str, state_dict: dict[str, torch.Tensor], decoder_width: int
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The T5 encoder and tokenizer from `source` (or a tiny random one for "debug"), checked against the
    width the checkpoint's text projection expects."""
    projection = state_dict.get(_PROJ_KEY)
    width = int(projection.shape[1]) if projection is not None else None
    model, tokenizer = (
        _debug_text_encoder(width or 48) if source == DEBUG_URI else _pretrained_text_encoder(source)
    )
    if width is not None and model.config.d_model != width:
        raise CheckpointConversionError(
            f"text encoder {source!r} is {model.config.d_model} wide, "
            f"the checkpoint's output_proj takes {width} features"
        )
    if model.config.d_model == decoder_width:
        # transformers' MusicGen only has a text projection when the widths differ; audiocraft always has one.
        raise CheckpointConversionError(
            f"T5 and LM are both {decoder_width} wide: the text projection has no place"
        )
    return model, tokenizer


def _debug_text_encoder(width: int) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A tiny random T5 of `width` with the byte-level tokenizer (the one that needs no files)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = T5EncoderModel(
            T5Config(vocab_size=384, d_model=width, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
        )
    return model, ByT5Tokenizer()


def _pretrained_text_encoder(source: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    offline = hub_offline()
    try:
        model = T5EncoderModel.from_pretrained(source, use_safetensors=True, local_files_only=offline)
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=offline)
    except (OSError, ValueError) as e:
        raise ModelLoadingError(
            f"could not load the T5 text encoder {source!r} (offline={offline}): {e}"
        ) from e
    return model, tokenizer
