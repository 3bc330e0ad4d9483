"""The quickstart output names every deployment of the session stack with the time it took to become
healthy (from Serve's status, sampled while the app deployed), and the total."""

from __future__ import annotations

import re
from typing import Any

import pytest

from deployments.tools.cli import _print_urls


def test_every_deployment_is_reported_with_its_start_time(
    stack: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from ray import serve

    served = {
        f"{app}/{name}" for app, status in serve.status().applications.items() for name in status.deployments
    }
    times = stack.start_times
    assert served and set(times.deployments) == served
    assert all(0 < seconds <= times.total_s for seconds in times.deployments.values())

    _print_urls(stack, verbose=False)
    printed = capsys.readouterr().out
    assert re.search(
        r"started in: +\d+\.\d s \(store \d+\.\d s, Ray \d+\.\d s, deployments \d+\.\d s", printed
    )
    for name in served:
        assert re.search(rf"^ +{re.escape(name)} +healthy after +\d+\.\d s$", printed, re.MULTILINE), name
