"""LocalStack starts Ray again when the node times out during startup (seen on an overloaded 2-core
machine). The timeout cannot be provoked on demand, so `ray.init` is replaced by a test double here;
every other path of the stack is exercised for real by the Ray-stack tests."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from types import SimpleNamespace

import pytest

from deployments.tools.local_stack import RAY_START_TRIES, LocalStack, LocalStackOptions, process_tree

TIMEOUT = "The current node timed out during startup. This could happen because some of the raylet failed"


class FlakyInit:
    """Stands in for `ray.init`: raises `errors` in turn, then succeeds."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.thread = threading.get_ident()
        self.calls = 0
        self.shutdowns = 0
        self.ports: list[object] = []
        self.left_behind: list[subprocess.Popen[bytes]] = []

    def init(self, **options: object) -> SimpleNamespace:
        if threading.get_ident() != self.thread:
            # Ray's own background threads in this process (a Serve router's metrics push, in the
            # suite's shared session) auto-initialise Ray through `ray.init` too: not the stack's call.
            raise RuntimeError("ray.init from another thread than the test's (test double)")
        self.calls += 1
        self.ports.append(options.get("dashboard_port"))
        if self.errors:
            # as a node start that gave up: its processes keep running, unknown to `ray.shutdown`
            self.left_behind.append(subprocess.Popen(["sleep", "300"]))
            raise self.errors.pop(0)
        # what the stack reads of ray.init's context
        return SimpleNamespace(address_info={"metrics_export_port": 8090}, dashboard_url=None)

    def shutdown(self) -> None:
        self.shutdowns += 1


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch) -> FlakyInit:
    import ray

    fake = FlakyInit()
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake.init)
    monkeypatch.setattr(ray, "shutdown", fake.shutdown)
    return fake


def test_a_startup_timeout_is_tried_again(fake_ray: FlakyInit) -> None:
    fake_ray.errors = [Exception(TIMEOUT)]
    stack = LocalStack(LocalStackOptions())
    stack._start_ray()
    assert (fake_ray.calls, fake_ray.shutdowns) == (2, 1)


def test_gives_up_after_the_last_try(fake_ray: FlakyInit) -> None:
    fake_ray.errors = [Exception(TIMEOUT) for _ in range(RAY_START_TRIES)]
    with pytest.raises(Exception, match="timed out during startup"):
        LocalStack(LocalStackOptions())._start_ray()
    assert fake_ray.calls == RAY_START_TRIES


def test_other_errors_are_not_retried(fake_ray: FlakyInit) -> None:
    fake_ray.errors = [ValueError("bad num_gpus")]
    with pytest.raises(ValueError, match="bad num_gpus"):
        LocalStack(LocalStackOptions())._start_ray()
    assert fake_ray.calls == 1


def test_a_retry_ends_what_the_failed_start_left_and_finds_a_free_dashboard_port(
    fake_ray: FlakyInit,
) -> None:
    """Seen in a clean-clone run: the second try could not bind the dashboard's port, which the first
    try's dashboard still held."""
    fake_ray.errors = [Exception(TIMEOUT)]
    with socket.socket() as held:  # the first try's dashboard, still listening
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        LocalStack(LocalStackOptions(dashboard_port=port))._start_ray()
    (left,) = fake_ray.left_behind
    assert left.wait(timeout=20) is not None and left.pid not in process_tree(os.getpid())
    assert fake_ray.ports[0] == port and fake_ray.ports[1] not in (port, None)
