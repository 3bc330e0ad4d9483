"""Cold / starting / warm from Serve's replica counts, and the edge's answer to a cold model (no Ray)."""

from __future__ import annotations

import asyncio

import pytest

from deployments.families.client import DeploymentClient, ModelStartingError
from deployments.families.warmth import DeploymentWarmth, Warmth
from deployments.http.errors import overload_error


@pytest.mark.parametrize(
    ("replicas", "expected"),
    [
        ({}, Warmth.COLD),
        ({"STOPPING": 1}, Warmth.COLD),
        ({"STARTING": 1}, Warmth.STARTING),
        ({"RUNNING": 1, "STOPPING": 1}, Warmth.WARM),
    ],
)
def test_warmth_from_replica_states(replicas: dict[str, int], expected: Warmth) -> None:
    assert DeploymentWarmth("StableAudio", replicas).warmth is expected


def test_a_starting_model_is_503_with_retry_after() -> None:
    mapped = overload_error(ModelStartingError("VoiceClone", retry_after_s=7))
    assert mapped is not None
    assert (mapped.status, mapped.code, mapped.headers) == (503, "model_starting", {"Retry-After": "7"})
    assert "VoiceClone" in mapped.message


class Handle:
    """Stands in for a Serve handle (no Ray here): records the methods called."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, method: str) -> object:
        calls = self.calls

        class Method:
            @staticmethod
            def remote(**_: object) -> object:
                calls.append(method)

                async def answer() -> dict[str, object]:
                    return {"model_id": "m", "weights": "debug-random", "sample_rate": 8000}

                return asyncio.ensure_future(answer())

        return Method


def test_outside_a_replica_the_edge_client_just_calls() -> None:
    handle = Handle()
    edge = DeploymentClient(handle, "StableAudio").at_edge()
    card = asyncio.run(edge.info())  # no replica context: warmth cannot be known, so it is not refused
    assert card.sample_rate == 8000 and handle.calls == ["info"]
    assert asyncio.run(edge.recent_info()) is card and handle.calls == ["info"]  # the card is kept


def test_the_status_view_never_fails_on_a_model_its_client_still_sees_cold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The view reads `serve.status()` itself, the client its own copy up to 1 s old: when the view sees
    a replica running and the client still sees none, the view shows the last card instead of failing
    (seen on the stack as a 503 on GET /v1/deployments). Serve's status is replaced here (no Ray)."""
    from deployments.families import client as client_module
    from deployments.http.service_routes import _card_if_warm

    async def still_cold(deployment: str) -> Warmth:
        return Warmth.COLD

    monkeypatch.setattr(client_module, "warmth_of", still_cold)
    edge = DeploymentClient(Handle(), "MusicGenMelody").at_edge()

    class Overview:
        replica_states = {"RUNNING": 1}

    assert asyncio.run(_card_if_warm(edge, Overview())) is None  # no card seen yet, and no 503
