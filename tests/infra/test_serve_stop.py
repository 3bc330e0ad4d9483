"""`soundstage serve` as a user runs it, in a child process: Ray's own tools reach it through the
environment line it prints, and SIGTERM, or SIGINT to a background job of a script (which starts with
SIGINT ignored), stops it with exit 0 and no process of its tree left running."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deployments.tools.cli import ray_tools_env
from deployments.tools.local_stack import process_tree
from infra.embedded_s3 import free_port

ROOT = Path(__file__).resolve().parents[2]
SOUNDSTAGE = [sys.executable, "-m", "deployments.tools.cli"]
START_TIMEOUT_S = 300.0


class Served:
    """`soundstage serve` started with `&` by a bash script: bash runs such jobs with SIGINT and SIGQUIT
    ignored. `pid` is soundstage's own; `wait()` gives its exit code (the script's `wait`)."""

    def __init__(self, tmp_path: Path) -> None:
        self.log = tmp_path / "serve.log"
        args = [*SOUNDSTAGE, "serve", "--port", str(free_port()), "--dashboard-port", str(free_port())]
        self.metrics_port = free_port()
        args += ["--data-dir", str(tmp_path / "data"), "--metrics-port", str(self.metrics_port)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SOUNDSTAGE_S3_")}
        script = f"{' '.join(args)} > {self.log} 2>&1 &\necho $!\nwait $!"
        self.shell = subprocess.Popen(
            ["bash", "-c", script], cwd=ROOT, env={**env, "RAY_AUTH_MODE": "token"}, stdout=subprocess.PIPE
        )
        assert self.shell.stdout is not None
        self.pid = int(self.shell.stdout.readline())

    def wait(self, timeout_s: float) -> int:
        return self.shell.wait(timeout_s)

    def running(self) -> bool:
        return self.shell.poll() is None


def _wait_serving(served: Served) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        text = served.log.read_text() if served.log.exists() else ""
        if "serving;" in text:
            return text
        assert served.running(), f"soundstage serve exited early:\n{text}"
        time.sleep(1.0)
    raise AssertionError(f"not serving after {START_TIMEOUT_S:.0f} s:\n{served.log.read_text()}")


def _alive(pids: set[int]) -> list[str]:
    left = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if state != "Z":
            left.append(f"{pid} {cmdline[:100]}")
    return left


def _ray_tools_env(text: str) -> dict[str, str]:
    match = re.search(r"export (RAY_ADDRESS=\S+ .*)", text)
    assert match, text
    pairs = dict(item.split("=", 1) for item in match.group(1).split())
    return {**os.environ, **pairs}


@pytest.mark.ray
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_a_signal_stops_serve_and_every_ray_process(tmp_path: Path, sig: signal.Signals) -> None:
    served = Served(tmp_path)
    try:
        text = _wait_serving(served)
        tree = process_tree(served.pid)
        assert any("raylet" in name for name in _alive(tree)), _alive(tree)
        if sig == signal.SIGTERM:  # once is enough: Ray's tools through the printed environment line
            status = subprocess.run(
                [str(Path(sys.executable).parent / "serve"), "status"],
                env=_ray_tools_env(text),
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert status.returncode == 0, status.stderr[-2000:]
            assert "soundstage" in status.stdout and "RUNNING" in status.stdout
            assert f"metrics:         http://127.0.0.1:{served.metrics_port}/metrics" in text
        os.kill(served.pid, sig)
        assert served.wait(timeout_s=120) == 0, served.log.read_text()[-3000:]
    finally:
        if served.running():
            os.kill(served.pid, signal.SIGKILL)
    assert f"{sig.name} received" in served.log.read_text()
    assert _alive(tree) == [], served.log.read_text()[-3000:]


@pytest.mark.ray
def test_rays_tools_reach_the_test_stack(stack: object) -> None:
    """`serve status` and `ray list actors` with the environment line `soundstage serve` prints."""
    url = stack.dashboard_url  # type: ignore[attr-defined]
    assert url is not None and url.startswith("http://127.0.0.1:")
    env = _ray_tools_env(f"export {ray_tools_env(url)}")
    bin_dir = Path(sys.executable).parent
    status = subprocess.run([str(bin_dir / "serve"), "status"], env=env, capture_output=True, text=True)
    assert status.returncode == 0, status.stderr[-2000:]
    assert "soundstage" in status.stdout and "RUNNING" in status.stdout
    actors = [str(bin_dir / "ray"), "list", "actors", "--filter", "state=ALIVE"]
    listed = subprocess.run(actors, env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "ServeController" in listed.stdout
