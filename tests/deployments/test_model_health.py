"""A model replica whose inference is wedged fails its health check, so Serve replaces it
(deployments/families/model_host.py); a busy replica whose calls are within their deadline does not.

Before, `check_health` only synced the CUDA device (nothing on CPU): a replica whose model call hung
in its thread while the event loop answered stayed healthy and kept receiving calls forever. The unit
tests build a `ModelHost` directly, with blocking work standing in for a hung model; the stack test
deploys one on the session's real Ray cluster with a 1 s health-check period.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from ray import serve

from deployments.families.model_host import ModelHost, ModelReplicaWedgedError

FAST = {
    "SOUNDSTAGE_MODEL_CALL_TIMEOUT_S": "1",
    "SOUNDSTAGE_MODEL_HEALTH_GRACE_S": "0.5",
    "SOUNDSTAGE_MODEL_HEALTH_PROBE_S": "1",
}


class Wedgeable(ModelHost):
    """A model host whose "inference" blocks for as long as it is told (a hung model)."""

    def __init__(self) -> None:
        self.device = "cpu"
        self.probe_blocks = threading.Event()  # set: the device probe hangs until `unblock`
        self.unblock = threading.Event()
        self.watch_model_calls()

    def probe_device(self) -> None:
        if self.probe_blocks.is_set():
            self.unblock.wait(30)

    async def infer(self, seconds: float) -> str:
        await asyncio.to_thread(time.sleep, seconds)
        return "done"

    def replica(self) -> str:
        return str(serve.get_replica_context().replica_id.unique_id)


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in FAST.items():
        monkeypatch.setenv(key, value)


def test_a_call_past_its_deadline_fails_health_and_a_busy_replica_passes(fast: None) -> None:
    async def scenario() -> None:
        host = Wedgeable()
        await host.check_health()  # idle
        hung = asyncio.ensure_future(host.infer(3.0))
        await asyncio.sleep(0.2)
        await host.check_health()  # busy, within the deadline (1 s + 0.5 s grace)
        await asyncio.sleep(1.6)
        with pytest.raises(ModelReplicaWedgedError, match="past its deadline and grace"):
            await host.check_health()
        await hung
        await host.check_health()  # it finished after all: healthy again

    asyncio.run(scenario())


def test_a_device_probe_that_does_not_answer_fails_health(fast: None) -> None:
    async def scenario() -> None:
        host = Wedgeable()
        host.probe_blocks.set()
        with pytest.raises(ModelReplicaWedgedError, match="did not answer within 1 s"):
            await host.check_health()
        with pytest.raises(ModelReplicaWedgedError, match="earlier health check has not returned"):
            await host.check_health()
        host.unblock.set()
        await asyncio.sleep(0.1)
        host.probe_blocks.clear()
        await host.check_health()

    asyncio.run(scenario())


@pytest.mark.ray
def test_serve_replaces_a_replica_whose_inference_hangs(stack: object) -> None:
    deployment = serve.deployment(
        name="WedgeableModel",
        health_check_period_s=1,
        health_check_timeout_s=10,
        ray_actor_options={"num_cpus": 0, "runtime_env": {"env_vars": FAST}},
    )(Wedgeable)
    handle = serve.run(deployment.bind(), name="model-health-test", route_prefix=None)
    try:
        first = handle.replica.remote().result(timeout_s=30)
        hung = handle.infer.remote(120.0)  # never awaited: the caller gave up on it
        ends = time.monotonic() + 60
        replaced = first
        while replaced == first:
            assert time.monotonic() < ends, "the wedged replica was not replaced within 60 s"
            time.sleep(0.5)
            try:
                replaced = handle.replica.remote().result(timeout_s=10)
            except Exception:  # the replica is being replaced right now
                continue
        assert handle.infer.remote(0.01).result(timeout_s=30) == "done"  # the new replica serves
        hung.cancel()
    finally:
        serve.delete("model-health-test")
