"""`soundstage models convert audiogen`: a synthetic audiocraft release on disk -> a loadable AudioGen folder.

The release is the tiny random checkpoint of tests/models/test_audiogen.py, written in the layout
audiocraft publishes (`state_dict.bin` + `compression_state_dict.bin`, each `{"best_state", "xp.cfg"}`
with the config as OmegaConf YAML text, references unresolved). `--push` goes to the embedded S3 server.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from deployments.tools.cli import main
from infra.embedded_s3 import EmbeddedS3
from infra.model_store import pull_model
from models.audiogen import AudioGen
from tests.models.test_audiogen import (
    PROMPT,
    assert_every_tensor_landed,
    audiocraft_config,
    checkpoint_for,
    codec_landings,
    lm_landings,
    save_tiny_t5,
)

LANDINGS = lm_landings() + codec_landings()


class PickledConfig(dict[str, Any]):
    """A config object that only full unpickling restores (as omegaconf's DictConfig in older files)."""


def published_config() -> dict[str, Any]:
    """The test config as audiocraft dumps it: some values are OmegaConf references, not values."""
    config = copy.deepcopy(audiocraft_config())
    seanet = config["compression_model"]["seanet"]
    seanet["causal"] = "${encodec.causal}"  # unresolved, bool("${…}") would make the codec causal
    seanet["last_kernel_size"] = "${.kernel_size}"  # unresolved, int("${…}") would raise
    config["compression_model"]["dora"] = {"dir": "${oc.env:HOME}/xps"}  # a resolver call, left alone
    return config


def write_release(
    folder: Path,
    *,
    checkpoint: dict[str, torch.Tensor] | None = None,
    config: dict[str, Any] | None = None,
    pickled_config: bool = False,
) -> Path:
    """`folder/state_dict.bin` (LM) and `folder/compression_state_dict.bin`, as audiocraft exports them."""
    checkpoint = checkpoint_for(LANDINGS) if checkpoint is None else checkpoint
    config = published_config() if config is None else config
    folder.mkdir(parents=True, exist_ok=True)
    files = {"lm": "state_dict.bin", "compression_model": "compression_state_dict.bin"}
    for section, name in files.items():
        prefix = section + "."
        state = {k.removeprefix(prefix): v for k, v in checkpoint.items() if k.startswith(prefix)}
        cfg = PickledConfig(config[section]) if pickled_config else yaml.safe_dump(config[section])
        package = {"best_state": state, "xp.cfg": cfg, "version": "1.3.0", "exported": True}
        torch.save(package, folder / name)
    return folder


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny T5 encoder + byte-level tokenizer as a local folder (stands in for t5-large)."""
    return save_tiny_t5(tmp_path_factory.mktemp("t5"))


def convert(*args: str) -> int:
    return main(["models", "convert", "audiogen", *args])


def test_convert_release_folder_push_pull_and_generate(
    tmp_path: Path,
    t5_folder: Path,
    s3: EmbeddedS3,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    release, out = write_release(tmp_path / "audiogen-medium"), tmp_path / "converted"
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    uri = f"s3://{s3.settings.s3_bucket}/models/audiogen-test"
    assert convert(str(release), str(out), "--text-encoder", str(t5_folder), "--push", uri) == 0
    printed = capsys.readouterr().out
    assert f"converted to {out}" in printed and f"to {uri}" in printed
    assert {"config.json", "model.safetensors", "tokenizer_config.json"} <= {p.name for p in out.iterdir()}
    assert_every_tensor_landed(out, checkpoint_for(LANDINGS), LANDINGS, t5_folder)

    pulled = pull_model(uri, s3.settings.model_copy(update={"model_cache_dir": tmp_path / "cache"}))
    codec = json.loads((pulled / "config.json").read_text())["audio_encoder"]
    # The config's references were resolved to the values they name.
    assert (codec["use_causal_conv"], codec["last_kernel_size"]) == (False, 7)
    model = AudioGen.from_pretrained(str(pulled), device="cpu")
    assert (model.sample_rate, model.info.weights) == (16000, "pretrained")
    (audio,) = model.generate([PROMPT], duration_s=0.2, seed=1)
    assert audio.samples.shape == (1, round(0.2 * 16000))
    assert np.isfinite(audio.samples).all() and np.abs(audio.samples).max() > 0


def test_convert_lm_file_with_compression_elsewhere(tmp_path: Path) -> None:
    lm_file = write_release(tmp_path / "release") / "state_dict.bin"
    codec_file = (tmp_path / "release" / "compression_state_dict.bin").rename(tmp_path / "codec.bin")
    args = [str(lm_file), str(tmp_path / "out"), "--compression", str(codec_file), "--text-encoder", "debug"]
    assert convert(*args) == 0
    model = AudioGen.from_pretrained(str(tmp_path / "out"), device="cpu")
    assert model.info.weights == "debug-random"  # a random T5 stood in for the text encoder


def test_pickled_config_needs_trust_pickle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    release = write_release(tmp_path / "release", pickled_config=True)
    assert convert(str(release), str(tmp_path / "out"), "--text-encoder", "debug") == 2
    assert "--trust-pickle" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    args = [str(release), str(tmp_path / "out"), "--text-encoder", "debug", "--trust-pickle"]
    assert convert(*args) == 0
    assert AudioGen.from_pretrained(str(tmp_path / "out"), device="cpu").sample_rate == 16000


def break_release(release: Path, how: str) -> None:
    if how == "no compression file":
        (release / "compression_state_dict.bin").unlink()
    elif how == "wrong keys":
        torch.save({"model": {"emb.0.weight": torch.zeros(1)}}, release / "state_dict.bin")
    elif how == "pretrained codec":
        torch.save({"pretrained": "facebook/encodec_32khz"}, release / "compression_state_dict.bin")
    elif how == "not a checkpoint":
        (release / "state_dict.bin").write_bytes(b"not a torch file")
    elif how == "missing tensor":
        checkpoint = checkpoint_for(LANDINGS)
        del checkpoint["lm.transformer.layers.1.linear2.weight"]
        write_release(release, checkpoint=checkpoint)


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("no compression file", "compression_state_dict.bin does not exist"),
        ("wrong keys", "lacks ['best_state', 'xp.cfg'] (has ['model'])"),
        ("pretrained codec", "only names a pretrained codec ('facebook/encodec_32khz')"),
        ("not a checkpoint", "state_dict.bin is not a torch checkpoint"),
        ("missing tensor", "missing keys (1): [lm.transformer.layers.1.linear2.weight]"),
    ],
)
def test_bad_release_exits_2_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str, message: str
) -> None:
    release = write_release(tmp_path / "release")
    break_release(release, how)
    assert convert(str(release), str(tmp_path / "out"), "--text-encoder", "debug") == 2
    err = capsys.readouterr().err
    assert err.startswith("soundstage: ") and message in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["audiogen", "{tmp}/nowhere", "{tmp}/out"], "nowhere does not exist"),
        (["demucs", "{tmp}/x.th", "{tmp}/out", "--text-encoder", "debug"], "--text-encoder only apply"),
        (["audiogen", "{tmp}", "{tmp}/out", "--push", "/tmp/models"], "--push takes s3://bucket/prefix"),
    ],
)
def test_bad_arguments_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    assert main(["models", "convert", *argv]) == 2
    assert message in capsys.readouterr().err
