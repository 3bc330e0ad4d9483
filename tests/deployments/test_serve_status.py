"""`serve_status()` lets one thread at a time into `serve.status()` (Ray 2.60's is not thread-safe)."""

from __future__ import annotations

import threading
import time

import pytest

from deployments.serve_status import serve_status


def test_status_calls_do_not_overlap(monkeypatch: pytest.MonkeyPatch) -> None:
    from ray import serve

    inside = 0
    most = 0
    count = threading.Lock()

    def status() -> str:
        nonlocal inside, most
        with count:
            inside += 1
            most = max(most, inside)
        time.sleep(0.01)  # long enough for the other threads to arrive while one is inside
        with count:
            inside -= 1
        return "status"

    monkeypatch.setattr(serve, "status", status)
    answers: list[str] = []
    threads = [threading.Thread(target=lambda: answers.append(serve_status())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == ["status"] * 8
    assert most == 1
