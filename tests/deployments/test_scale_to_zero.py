"""Scale-to-zero on the local stack: the session's app is redeployed with short autoscaling settings for
two rarely used models (MusicGen-Melody and VoiceClone: `min_replicas: 0`, scaled down after 2 idle
seconds and an 11 s look-back), then put back as it was. A job that needs the cold model waits for its
cold start (the job says `waiting for model`), a sync request to a cold model answers 503 + Retry-After
instead of hanging, `GET /v1/deployments` shows cold / starting / warm, and an idle model goes back to
zero."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from deployments.families.warmth import STATUS_TTL_S
from deployments.tools.serve_config import deploy
from infra.audio import Audio, encode
from infra.client import SoundstageClient

pytestmark = pytest.mark.ray
COLD = ("MusicGenMelody", "VoiceClone")
SHORT_AUTOSCALING = {
    "min_replicas": 0,
    "max_replicas": 1,
    "upscale_delay_s": 0,
    "downscale_delay_s": 1,
    "downscale_to_zero_delay_s": 2,
    "look_back_period_s": 11,  # must exceed Serve's metrics interval (10 s)
}
REFERENCE_TEXT = "This is my reference recording. I read plain sentences so my voice can be learned."


def with_autoscaling(
    config: dict[str, Any], names: tuple[str, ...], settings: dict[str, Any]
) -> dict[str, Any]:
    changed = copy.deepcopy(config)
    for app in changed["applications"]:
        for deployment in app["deployments"]:
            if deployment["name"] in names:
                autoscaling = {**deployment["autoscaling_config"], **settings}
                autoscaling.pop("initial_replicas", None)
                deployment["autoscaling_config"] = autoscaling
    return changed


def warmth(base_url: str) -> dict[str, str]:
    listing = httpx.get(f"{base_url}/v1/deployments", timeout=30).json()["deployments"]
    return {d["deployment"]: d["warmth"] for d in listing}


def eventually(condition: Callable[[], bool], what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s:g} s: {what}"
        time.sleep(0.5)


@pytest.fixture
def cold_models(stack: Any, base_url: str) -> Iterator[None]:
    original = stack.config
    deploy(with_autoscaling(original, COLD, SHORT_AUTOSCALING))
    try:
        yield
    finally:
        deploy(original)
        eventually(lambda: all(warmth(base_url)[name] == "warm" for name in COLD), "the models warm again")


def upload(base_url: str, seconds: float) -> str:
    t = np.arange(round(seconds * 16000)) / 16000
    data = encode(Audio((0.3 * np.sin(2 * np.pi * 440 * t))[None].astype(np.float32), 16000), "wav")
    response = httpx.post(f"{base_url}/v1/uploads", files={"file": ("clip.wav", data, "audio/wav")})
    assert response.status_code == 201, response.text
    return str(response.json()["upload_id"])


def speech(base_url: str, voice_id: str) -> httpx.Response:
    body = {"model": "tts-1", "voice": voice_id, "input": "Hello.", "response_format": "wav"}
    return httpx.post(f"{base_url}/v1/audio/speech", json=body, timeout=120)


def test_cold_models_wake_on_demand_and_go_back_to_zero(base_url: str, cold_models: None) -> None:
    from models.tts import StockTTS

    (reference,) = StockTTS.from_pretrained().synthesize([REFERENCE_TEXT], seed=0)
    files = {"file": ("reference.wav", encode(reference, "wav"), "audio/wav")}
    voice = httpx.post(f"{base_url}/v1/voices", files=files, data={"transcript": REFERENCE_TEXT}, timeout=120)
    assert voice.status_code == 201, voice.text
    melody = upload(base_url, 2.0)
    eventually(lambda: all(warmth(base_url)[name] == "cold" for name in COLD), "both models at zero")
    # Every ingress replica reads Serve's status through a cache of its own, at most STATUS_TTL_S old:
    # one that still held the last "warm" view let the speech below queue for the cold start (200 after
    # 13.7 s on a clean-clone run, with the status view already saying cold).
    time.sleep(2 * STATUS_TTL_S)

    refused = speech(base_url, voice.json()["voice_id"])  # a sync request does not wait for the start
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "model_starting" and int(refused.headers["Retry-After"]) >= 1

    client = SoundstageClient(base_url)
    job = client.submit("music", {"prompt": "a hummed tune", "duration_s": 1.0, "melody_upload_id": melody})
    details: set[str | None] = set()

    def finished() -> bool:
        record = httpx.get(f"{base_url}/v1/jobs/{job['id']}").json()
        details.add(record["detail"])
        return bool(record["status"] in ("succeeded", "failed", "cancelled"))

    eventually(finished, "the melody job ends", timeout_s=240)
    done = client.wait(job["id"], timeout_s=10)
    assert done["status"] == "succeeded", done["error"]
    assert "waiting for model MusicGenMelody" in details and done["detail"] is None
    eventually(lambda: speech(base_url, voice.json()["voice_id"]).status_code == 200, "speech once warm")

    eventually(lambda: warmth(base_url)["MusicGenMelody"] == "cold", "MusicGenMelody back at zero")
