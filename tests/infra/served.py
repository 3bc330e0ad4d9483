"""`soundstage serve` in a child process, started the way a user's script starts it."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from infra.embedded_s3 import free_port

ROOT = Path(__file__).resolve().parents[2]
SOUNDSTAGE = [sys.executable, "-m", "deployments.tools.cli"]
START_TIMEOUT_S = 300.0


class Served:
    """`soundstage serve` started with `&` by a bash script: bash runs such jobs with SIGINT and SIGQUIT
    ignored. `pid` is soundstage's own; `wait()` gives its exit code (the script's `wait`)."""

    def __init__(self, tmp_path: Path, *options: str, env: dict[str, str] | None = None) -> None:
        self.log = tmp_path / "serve.log"
        args = [*SOUNDSTAGE, "serve", *options, "--port", str(free_port())]
        args += ["--dashboard-port", str(free_port())]
        self.metrics_port = free_port()
        args += ["--data-dir", str(tmp_path / "data"), "--metrics-port", str(self.metrics_port)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SOUNDSTAGE_S3_")} | (env or {})
        script = f"{shlex.join(args)} > {self.log} 2>&1 &\necho $!\nwait $!"
        self.shell = subprocess.Popen(
            ["bash", "-c", script], cwd=ROOT, env={**env, "RAY_AUTH_MODE": "token"}, stdout=subprocess.PIPE
        )
        assert self.shell.stdout is not None
        self.pid = int(self.shell.stdout.readline())

    def wait(self, timeout_s: float) -> int:
        return self.shell.wait(timeout_s)

    def running(self) -> bool:
        return self.shell.poll() is None


def wait_serving(served: Served) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        text = served.log.read_text() if served.log.exists() else ""
        if "serving;" in text:
            return text
        assert served.running(), f"soundstage serve exited early:\n{text}"
        time.sleep(1.0)
    raise AssertionError(f"not serving after {START_TIMEOUT_S:.0f} s:\n{served.log.read_text()}")


def alive(pids: set[int]) -> list[str]:
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


def ray_tools_env_from(text: str) -> dict[str, str]:
    match = re.search(r"export (RAY_ADDRESS=\S+ .*)", text)
    assert match, text
    pairs = dict(item.split("=", 1) for item in match.group(1).split())
    return {**os.environ, **pairs}
