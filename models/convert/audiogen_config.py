"""audiocraft's AudioGen settings (each checkpoint's resolved `xp.cfg`, as a plain dict) as transformers'
MusicGen decoder and EnCodec configs, for `convert.audiogen`: the settings transformers implements are
checked (`REQUIRED_SETTINGS`), the sizes carried over; anything else raises `CheckpointConversionError`.
"""

from __future__ import annotations

import math
from typing import Any

from transformers import EncodecConfig, MusicgenDecoderConfig

from models.audiogen import bandwidth_kbps
from models.types import ModelLoadingError

# Settings transformers' MusicGen / EnCodec implement, as (section, dotted path, the only supported value).
REQUIRED_SETTINGS: tuple[tuple[str, str, object], ...] = (
    ("lm", "transformer_lm.norm_first", True),
    ("lm", "transformer_lm.causal", True),
    ("lm", "transformer_lm.activation", "gelu"),
    ("lm", "transformer_lm.positional_embedding", "sin"),
    ("lm", "codebooks_pattern.modeling", "delay"),
    ("lm", "conditioners.description.model", "t5"),
    ("lm", "conditioners.description.t5.finetune", False),
    ("lm", "fuser.cross", ["description"]),
    ("compression_model", "channels", 1),
    ("compression_model", "seanet.norm", "weight_norm"),
    ("compression_model", "seanet.activation", "ELU"),
    ("compression_model", "seanet.activation_params.alpha", 1.0),
    ("compression_model", "seanet.disable_norm_outer_blocks", 0),
    ("compression_model", "seanet.decoder.final_activation", None),
)


class CheckpointConversionError(ModelLoadingError):
    """An audiocraft checkpoint or config that cannot be mapped exactly onto transformers' MusicGen."""


def section(config: dict[str, Any], name: str) -> dict[str, Any]:
    section = config.get(name)
    if not isinstance(section, dict):
        raise CheckpointConversionError(f"config[{name!r}] must be the {name} checkpoint's xp.cfg as a dict")
    return section


def setting(section: dict[str, Any], path: str, name: str) -> Any:
    """The value at dotted `path` of config section `name`; a missing one raises."""
    value: Any = section
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise CheckpointConversionError(f"config[{name!r}] has no setting {path!r}")
        value = value[part]
    return value


def check_settings(sections: dict[str, dict[str, Any]]) -> None:
    wrong = [
        f"{name}.{path}={value!r} (supported: {supported!r})"
        for name, path, supported in REQUIRED_SETTINGS
        if (value := setting(sections[name], path, name)) != supported
    ]
    lm = sections["lm"]
    delays = setting(lm, "codebooks_pattern.delay.delays", "lm")
    if list(delays) != list(range(setting(lm, "transformer_lm.n_q", "lm"))):
        wrong.append(f"lm.codebooks_pattern.delay.delays={delays!r} (supported: 0, 1, … n_q - 1)")
    if wrong:
        raise CheckpointConversionError(
            "settings transformers' MusicGen does not implement: " + ", ".join(wrong)
        )


def lm_decoder_config(lm: dict[str, Any]) -> MusicgenDecoderConfig:
    def get(key: str) -> Any:
        return setting(lm, "transformer_lm." + key, "lm")

    dim, card = int(get("dim")), int(get("card"))
    return MusicgenDecoderConfig(
        vocab_size=card,
        hidden_size=dim,
        num_hidden_layers=int(get("num_layers")),
        num_attention_heads=int(get("num_heads")),
        ffn_dim=int(get("hidden_scale") * dim),
        num_codebooks=int(get("n_q")),
        activation_function="gelu",
        pad_token_id=card,
        bos_token_id=card,
        tie_word_embeddings=False,
    )


def encodec_config(codec: dict[str, Any], lm: dict[str, Any]) -> EncodecConfig:
    def get(key: str) -> Any:
        return setting(codec, key, "compression_model")

    n_q, bins, ratios = int(get("rvq.n_q")), int(get("rvq.bins")), [int(r) for r in get("seanet.ratios")]
    lm_codes = (setting(lm, "transformer_lm.n_q", "lm"), setting(lm, "transformer_lm.card", "lm"))
    if lm_codes != (n_q, bins):
        raise CheckpointConversionError(
            f"LM models (n_q, card)={lm_codes}, the codec has (n_q, bins)={(n_q, bins)}"
        )
    frame_rate = get("sample_rate") / math.prod(ratios)
    config = EncodecConfig(
        sampling_rate=int(get("sample_rate")),
        audio_channels=int(get("channels")),
        normalize=bool(get("encodec.renormalize")),
        hidden_size=int(get("seanet.dimension")),
        num_filters=int(get("seanet.n_filters")),
        num_residual_layers=int(get("seanet.n_residual_layers")),
        upsampling_ratios=ratios,
        norm_type="weight_norm",
        kernel_size=int(get("seanet.kernel_size")),
        last_kernel_size=int(get("seanet.last_kernel_size")),
        residual_kernel_size=int(get("seanet.residual_kernel_size")),
        dilation_growth_rate=int(get("seanet.dilation_base")),
        use_causal_conv=bool(get("seanet.causal")),
        pad_mode=str(get("seanet.pad_mode")),
        compress=int(get("seanet.compress")),
        num_lstm_layers=int(get("seanet.lstm")),
        trim_right_ratio=float(get("seanet.decoder.trim_right_ratio")),
        use_conv_shortcut=not get("seanet.true_skip"),
        codebook_size=bins,
        codebook_dim=int(get("seanet.dimension")),
        target_bandwidths=[bandwidth_kbps(num_codebooks=n_q, frame_rate=frame_rate, codebook_size=bins)],
    )
    assert config.num_quantizers == n_q, f"bandwidth {config.target_bandwidths} gives {config.num_quantizers}"
    return config
