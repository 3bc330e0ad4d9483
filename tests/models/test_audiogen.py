"""AudioGen: the 16 kHz debug model, and conversion of a synthetic audiocraft checkpoint (tiny, random)."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import ByT5Tokenizer, MusicgenForConditionalGeneration, T5Config, T5EncoderModel

from models.audiogen import AudioGen
from models.convert.audiogen import CheckpointConversionError, convert_audiocraft_checkpoint
from models.types import ModelLoadingError

PROMPT = "a dog barks twice in the rain"
OTHER_PROMPT = "a car engine revs up and drives away"
DIM, LAYERS, FFN, N_Q, CARD, TEXT_WIDTH = 32, 2, 64, 4, 64, 48
N_FILTERS, CODEC_DIM, RATIOS = 4, 16, (8, 5, 4, 2)


@dataclass(frozen=True)
class Landing:
    """Where one audiocraft tensor (or, for fused q/k/v, some of its rows) must land in transformers."""

    source: str
    shape: tuple[int, ...]
    target: str
    rows: tuple[int, int] | None = None  # [start, stop) rows of the source, for fused q/k/v

    def of(self, checkpoint: dict[str, torch.Tensor]) -> torch.Tensor:
        source = checkpoint[self.source]
        return source if self.rows is None else source[self.rows[0] : self.rows[1]]


def audiocraft_config(*, true_skip: bool = True, lstm: int = 2) -> dict[str, Any]:
    """A tiny AudioGen in audiocraft's resolved `xp.cfg` layout (LM, and the EnCodec it was trained on)."""
    transformer_lm: dict[str, Any] = {"dim": DIM, "num_heads": 4, "num_layers": LAYERS, "n_q": N_Q}
    transformer_lm |= {"hidden_scale": FFN // DIM, "card": CARD, "norm_first": True, "causal": True}
    transformer_lm |= {"activation": "gelu", "positional_embedding": "sin"}
    transformer_lm |= {"bias_ff": False, "bias_attn": False, "bias_proj": False}
    lm = {
        "transformer_lm": transformer_lm,
        "codebooks_pattern": {"modeling": "delay", "delay": {"delays": [0, 1, 2, 3], "flatten_first": 0}},
        "conditioners": {"description": {"model": "t5", "t5": {"name": "t5-large", "finetune": False}}},
        "fuser": {"cross": ["description"], "prepend": [], "sum": []},
        "classifier_free_guidance": {"training_dropout": 0.1, "inference_coef": 3.0},
    }
    seanet: dict[str, Any] = {
        "dimension": CODEC_DIM,
        "channels": 1,
        "causal": False,
        "n_filters": N_FILTERS,
        "lstm": lstm,
    }
    seanet |= {"n_residual_layers": 1, "ratios": list(RATIOS), "activation": "ELU", "norm": "weight_norm"}
    seanet |= {"activation_params": {"alpha": 1.0}, "kernel_size": 7, "residual_kernel_size": 3}
    seanet |= {"last_kernel_size": 7, "dilation_base": 2, "pad_mode": "constant", "true_skip": true_skip}
    seanet |= {"compress": 2, "disable_norm_outer_blocks": 0, "encoder": {}}
    seanet |= {"decoder": {"trim_right_ratio": 1.0, "final_activation": None}}
    codec = {
        "sample_rate": 16000,
        "channels": 1,
        "encodec": {"autoencoder": "seanet", "quantizer": "rvq", "causal": False, "renormalize": False},
        "seanet": seanet,
        "rvq": {"n_q": N_Q, "bins": CARD},
    }
    return {"lm": lm, "compression_model": codec}


ATTENTIONS = (("self_attn", "self_attn"), ("cross_attention", "encoder_attn"))
NORMS = (
    ("norm1", "self_attn_layer_norm"),
    ("norm_cross", "encoder_attn_layer_norm"),
    ("norm2", "final_layer_norm"),
)


def lm_landings() -> list[Landing]:
    top, out = "decoder.model.decoder", []
    for k in range(N_Q):
        out.append(Landing(f"lm.emb.{k}.weight", (CARD + 1, DIM), f"{top}.embed_tokens.{k}.weight"))
        out.append(Landing(f"lm.linears.{k}.weight", (CARD, DIM), f"decoder.lm_heads.{k}.weight"))
    for i in range(LAYERS):
        src, dst = f"lm.transformer.layers.{i}.", f"{top}.layers.{i}."
        for attn, hf in ATTENTIONS:
            fused = f"{src}{attn}.in_proj_weight"
            for j, name in enumerate("qkv"):
                rows = (j * DIM, (j + 1) * DIM)
                out.append(Landing(fused, (3 * DIM, DIM), f"{dst}{hf}.{name}_proj.weight", rows))
            out.append(Landing(f"{src}{attn}.out_proj.weight", (DIM, DIM), f"{dst}{hf}.out_proj.weight"))
        for norm, hf in NORMS:
            out += [Landing(f"{src}{norm}.{p}", (DIM,), f"{dst}{hf}.{p}") for p in ("weight", "bias")]
        out.append(Landing(f"{src}linear1.weight", (FFN, DIM), f"{dst}fc1.weight"))
        out.append(Landing(f"{src}linear2.weight", (DIM, FFN), f"{dst}fc2.weight"))
    out += [Landing(f"lm.out_norm.{p}", (DIM,), f"{top}.layer_norm.{p}") for p in ("weight", "bias")]
    proj = "lm.condition_provider.conditioners.description.output_proj"
    out.append(Landing(f"{proj}.weight", (DIM, TEXT_WIDTH), "enc_to_dec_proj.weight"))
    out.append(Landing(f"{proj}.bias", (DIM,), "enc_to_dec_proj.bias"))
    return out


def conv(src: str, dst: str, c_out: int, c_in: int, kernel: int, transposed: bool = False) -> list[Landing]:
    """A weight-normed (transposed) conv: torch's weight_norm keeps g per output row (dim 0 of the weight)."""
    kind = "convtr.convtr" if transposed else "conv.conv"
    weight = (c_in, c_out, kernel) if transposed else (c_out, c_in, kernel)
    return [
        Landing(f"{src}.{kind}.weight_g", (weight[0], 1, 1), f"{dst}.conv.parametrizations.weight.original0"),
        Landing(f"{src}.{kind}.weight_v", weight, f"{dst}.conv.parametrizations.weight.original1"),
        Landing(f"{src}.{kind}.bias", (c_out,), f"{dst}.conv.bias"),
    ]


def resnet_block(src: str, dst: str, dim: int, true_skip: bool) -> list[Landing]:
    out = conv(f"{src}.block.1", f"{dst}.block.1", dim // 2, dim, 3)
    out += conv(f"{src}.block.3", f"{dst}.block.3", dim, dim // 2, 1)
    return out if true_skip else out + conv(f"{src}.shortcut", f"{dst}.shortcut", dim, dim, 1)


def lstm(src: str, dst: str, width: int, layers: int) -> list[Landing]:
    shapes = {"weight": (4 * width, width), "bias": (4 * width,)}
    names = [(f"{p}_{w}_l{n}", shapes[p]) for n in range(layers) for p in shapes for w in ("ih", "hh")]
    return [Landing(f"{src}.lstm.{name}", shape, f"{dst}.lstm.{name}") for name, shape in names]


def codec_landings(*, true_skip: bool = True, lstm_layers: int = 2) -> list[Landing]:
    """SEANet as audiocraft numbers its `model` list (ELUs take indices but hold no tensors), plus the RVQ."""

    def enc(n: int) -> tuple[str, str]:
        return f"compression_model.encoder.model.{n}", f"audio_encoder.encoder.layers.{n}"

    def dec(n: int) -> tuple[str, str]:
        return f"compression_model.decoder.model.{n}", f"audio_encoder.decoder.layers.{n}"

    out, n, width = conv(*enc(0), N_FILTERS, 1, 7), 1, N_FILTERS
    for ratio in reversed(RATIOS):  # residual block, ELU, downsampling conv
        out += resnet_block(*enc(n), width, true_skip) + conv(*enc(n + 2), 2 * width, width, 2 * ratio)
        n, width = n + 3, 2 * width
    out += lstm(*enc(n), width, lstm_layers) + conv(*enc(n + 2), CODEC_DIM, width, 7)
    out += conv(*dec(0), width, CODEC_DIM, 7) + lstm(*dec(1), width, lstm_layers)
    n = 2
    for ratio in RATIOS:  # ELU, upsampling transposed conv, residual block
        out += conv(*dec(n + 1), width // 2, width, 2 * ratio, transposed=True)
        out += resnet_block(*dec(n + 2), width // 2, true_skip)
        n, width = n + 3, width // 2
    out += conv(*dec(n + 1), 1, width, 7)
    shapes = {
        "inited": (1,),
        "cluster_size": (CARD,),
        "embed": (CARD, CODEC_DIM),
        "embed_avg": (CARD, CODEC_DIM),
    }
    for q in range(N_Q):
        src = f"compression_model.quantizer.vq.layers.{q}._codebook"
        dst = f"audio_encoder.quantizer.layers.{q}.codebook"
        out += [Landing(f"{src}.{name}", shape, f"{dst}.{name}") for name, shape in shapes.items()]
    return out


def checkpoint_for(landings: list[Landing], seed: int = 0) -> dict[str, torch.Tensor]:
    """Distinct random values for every tensor, so a tensor landing in the wrong place cannot go unnoticed."""
    generator = torch.Generator().manual_seed(seed)
    shapes = {landing.source: landing.shape for landing in landings}
    return {key: torch.randn(shape, generator=generator) for key, shape in shapes.items()}


def save_tiny_t5(folder: Path) -> Path:
    """A tiny T5 encoder and the byte-level tokenizer saved in `folder` (stands in for t5-large)."""
    config = T5Config(vocab_size=384, d_model=TEXT_WIDTH, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        T5EncoderModel(config).save_pretrained(folder)
    ByT5Tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_t5(tmp_path_factory.mktemp("t5"))


@pytest.fixture(scope="module")
def landings() -> list[Landing]:
    return lm_landings() + codec_landings()


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory, t5_folder: Path, landings: list[Landing]) -> Path:
    out_dir = tmp_path_factory.mktemp("audiogen-converted")
    return convert_audiocraft_checkpoint(
        checkpoint_for(landings), audiocraft_config(), out_dir, text_encoder=str(t5_folder)
    )


def assert_every_tensor_landed(
    folder: Path, checkpoint: dict[str, torch.Tensor], landings: list[Landing], t5_folder: Path
) -> None:
    """Each model tensor equals its audiocraft source (or the T5's); each source key filled some tensor."""
    converted = MusicgenForConditionalGeneration.from_pretrained(folder).state_dict()
    for landing in landings:
        torch.testing.assert_close(converted[landing.target], landing.of(checkpoint), rtol=0, atol=0)
    t5 = T5EncoderModel.from_pretrained(t5_folder).state_dict()
    for key, value in t5.items():
        torch.testing.assert_close(converted[f"text_encoder.{key}"], value, rtol=0, atol=0)
    assert {landing.source for landing in landings} == set(checkpoint)
    t5_targets = {f"text_encoder.{key}" for key in t5}
    assert {landing.target for landing in landings} | t5_targets == set(converted)


def test_every_checkpoint_tensor_lands(converted: Path, landings: list[Landing], t5_folder: Path) -> None:
    assert_every_tensor_landed(converted, checkpoint_for(landings), landings, t5_folder)


def test_shortcut_convs_single_lstm_and_aliases_land(tmp_path: Path, t5_folder: Path) -> None:
    # Convolutional skips (true_skip false), one LSTM layer, and the other spellings audiocraft may use:
    # nn.MultiheadAttention's `mha.` names and torch's parametrized weight norm.
    landings = lm_landings() + codec_landings(true_skip=False, lstm_layers=1)
    checkpoint = checkpoint_for(landings, seed=2)
    respelled = {
        key.replace("self_attn.", "self_attn.mha.")
        .replace(".weight_g", ".parametrizations.weight.original0")
        .replace(".weight_v", ".parametrizations.weight.original1"): value
        for key, value in checkpoint.items()
    }
    config = audiocraft_config(true_skip=False, lstm=1)
    folder = convert_audiocraft_checkpoint(respelled, config, tmp_path / "out", text_encoder=str(t5_folder))
    assert_every_tensor_landed(folder, checkpoint, landings, t5_folder)


def test_converted_model_generates_deterministically(converted: Path) -> None:
    model = AudioGen.from_pretrained(str(converted), device="cpu")
    assert (model.sample_rate, model.channels, model.frame_rate) == (16000, 1, 50.0)
    assert model.info.weights == "pretrained"
    assert model.info.model_id == str(converted)

    (audio,) = model.generate([PROMPT], duration_s=0.23, seed=3)
    (again,) = model.generate([PROMPT], duration_s=0.23, seed=3)
    (other,) = model.generate([PROMPT], duration_s=0.23, seed=4)
    assert audio.sample_rate == 16000
    assert audio.samples.shape == (1, round(0.23 * 16000))
    assert np.isfinite(audio.samples).all() and np.abs(audio.samples).max() > 0
    np.testing.assert_array_equal(audio.samples, again.samples)
    assert not np.allclose(audio.samples, other.samples, rtol=0, atol=1e-5)


def test_debug_text_encoder_is_reported_as_debug_random(tmp_path: Path, landings: list[Landing]) -> None:
    folder = convert_audiocraft_checkpoint(
        checkpoint_for(landings), audiocraft_config(), tmp_path / "out", text_encoder="debug"
    )
    assert AudioGen.from_pretrained(str(folder), device="cpu").info.weights == "debug-random"


def edited(checkpoint: dict[str, torch.Tensor], edit: str) -> dict[str, torch.Tensor]:
    checkpoint = dict(checkpoint)
    if edit == "missing":
        del checkpoint["lm.transformer.layers.1.cross_attention.in_proj_weight"]
        del checkpoint["compression_model.quantizer.vq.layers.3._codebook.embed"]
    elif edit == "unmapped":
        checkpoint["lm.transformer.layers.0.layer_scale_1.scale"] = torch.ones(DIM)
    elif edit == "mis-shaped":
        checkpoint["lm.emb.2.weight"] = torch.zeros(CARD, DIM)
    return checkpoint


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (
            "missing",
            ["missing keys (2)", "layers.1.cross_attention.in_proj_weight", "layers.3._codebook.embed"],
        ),
        ("unmapped", ["unmapped keys (1)", "lm.transformer.layers.0.layer_scale_1.scale"]),
        ("mis-shaped", ["lm.emb.2.weight (64, 32) -> decoder.model.decoder.embed_tokens.2.weight (65, 32)"]),
    ],
)
def test_checkpoint_that_does_not_fit_raises_naming_the_keys(
    tmp_path: Path, t5_folder: Path, landings: list[Landing], edit: str, named: list[str]
) -> None:
    checkpoint = edited(checkpoint_for(landings), edit)
    with pytest.raises(CheckpointConversionError) as raised:
        convert_audiocraft_checkpoint(
            checkpoint, audiocraft_config(), tmp_path / "out", text_encoder=str(t5_folder)
        )
    for text in named:
        assert text in str(raised.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            ("lm", "transformer_lm", "positional_embedding"),
            "rope",
            "transformer_lm.positional_embedding='rope'",
        ),
        (("lm", "codebooks_pattern", "delay", "delays"), [0, 0, 0, 0], "delays=[0, 0, 0, 0]"),
        (("compression_model", "rvq", "bins"), 128, "(n_q, bins)=(4, 128)"),
        (("compression_model", "seanet", "pad_mode"), None, "has no setting 'seanet.pad_mode'"),
    ],
)
def test_unsupported_or_missing_setting_raises(
    tmp_path: Path,
    t5_folder: Path,
    landings: list[Landing],
    path: tuple[str, ...],
    value: object,
    message: str,
) -> None:
    config = copy.deepcopy(audiocraft_config())
    section = config
    for key in path[:-1]:
        section = section[key]
    if value is None:
        del section[path[-1]]
    else:
        section[path[-1]] = value
    with pytest.raises(CheckpointConversionError, match=re.escape(message)):
        convert_audiocraft_checkpoint(
            checkpoint_for(landings), config, tmp_path / "out", text_encoder=str(t5_folder)
        )


def test_text_encoder_of_the_wrong_width_raises(
    tmp_path: Path, t5_folder: Path, landings: list[Landing]
) -> None:
    checkpoint = checkpoint_for(landings)
    checkpoint["lm.condition_provider.conditioners.description.output_proj.weight"] = torch.zeros(DIM, 40)
    with pytest.raises(CheckpointConversionError, match="48 wide, the checkpoint's output_proj takes 40"):
        convert_audiocraft_checkpoint(
            checkpoint, audiocraft_config(), tmp_path / "out", text_encoder=str(t5_folder)
        )


def test_default_text_encoder_is_the_configs_t5(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, landings: list[Landing]
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadingError, match="'t5-large'"):
        convert_audiocraft_checkpoint(checkpoint_for(landings), audiocraft_config(), tmp_path / "out")


@pytest.fixture(scope="module")
def debug_model() -> AudioGen:
    return AudioGen.from_pretrained("debug", device="cpu")


def test_debug_model_describes_itself(debug_model: AudioGen) -> None:
    assert isinstance(debug_model, AudioGen)
    assert (debug_model.sample_rate, debug_model.channels, debug_model.frame_rate) == (16000, 1, 50.0)
    assert (debug_model.info.model_id, debug_model.info.weights) == ("debug", "debug-random")


@pytest.mark.parametrize("duration_s", [0.001, 0.37])
def test_debug_output_has_exact_length(debug_model: AudioGen, duration_s: float) -> None:
    batch = debug_model.generate([PROMPT, OTHER_PROMPT], duration_s=duration_s, seed=1)
    for audio in batch:
        assert audio.sample_rate == 16000
        assert audio.samples.shape == (1, round(duration_s * 16000))
        assert np.isfinite(audio.samples).all() and np.abs(audio.samples).max() > 0


def test_debug_seeds_and_prompts(debug_model: AudioGen) -> None:
    def one(prompt: str = PROMPT, seed: int = 7) -> np.ndarray:
        return debug_model.generate([prompt], duration_s=0.2, seed=seed)[0].samples

    reference = one()
    np.testing.assert_array_equal(one(), reference)
    assert not np.allclose(one(seed=8), reference, rtol=0, atol=1e-5)
    assert not np.allclose(one(OTHER_PROMPT), reference, rtol=0, atol=1e-5)


def test_debug_save_and_load_round_trip(debug_model: AudioGen, tmp_path: Path) -> None:
    debug_model.save_pretrained(tmp_path / "debug")
    loaded = AudioGen.from_pretrained(str(tmp_path / "debug"), device="cpu")
    assert loaded.info.weights == "debug-random"
    first, again = (m.generate([PROMPT], duration_s=0.2, seed=5)[0].samples for m in (debug_model, loaded))
    np.testing.assert_array_equal(first, again)


def test_hub_id_offline_raises_model_loading_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadingError, match="could not load AudioGen from 'facebook/audiogen-medium'"):
        AudioGen.from_pretrained("facebook/audiogen-medium", device="cpu", cache_dir=tmp_path / "hub")


def test_state_dict_without_the_prefixes_raises(tmp_path: Path, landings: list[Landing]) -> None:
    lm_only = {key.removeprefix("lm."): value for key, value in checkpoint_for(landings).items()}
    with pytest.raises(CheckpointConversionError, match=re.escape("LM's tensors under 'lm.'")):
        convert_audiocraft_checkpoint(lm_only, audiocraft_config(), tmp_path / "out", text_encoder="debug")
