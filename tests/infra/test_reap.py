"""`reap`, what the local stack runs after `ray.shutdown` on the processes Ray started: processes that
exit in time are waited for (exited ones not at all), the rest are killed after the timeout."""

from __future__ import annotations

import subprocess
import time

import pytest

from deployments.tools.local_stack import process_tree, reap


def test_exited_and_exiting_processes_are_only_waited_for(caplog: pytest.LogCaptureFixture) -> None:
    done = subprocess.Popen(["true"])
    done.wait()
    soon = subprocess.Popen(["sleep", "0.3"])
    started = time.monotonic()
    reap({done.pid, soon.pid}, timeout_s=10)
    assert time.monotonic() - started < 5
    assert "killing" not in caplog.text
    soon.wait()


def test_a_process_still_up_after_the_timeout_is_killed(caplog: pytest.LogCaptureFixture) -> None:
    shell = subprocess.Popen(["bash", "-c", "sleep 60 & wait"])
    time.sleep(0.3)
    (child,) = process_tree(shell.pid)
    reap({shell.pid, child}, timeout_s=0.5)
    assert shell.wait(timeout=5) != 0
    assert caplog.text.count("killing it") == 2
