"""Voices are tenants' too: a registered voice belongs to the key that registered it; another tenant
does not see it in the list, cannot delete it (404), cannot speak with it (404 on /v1/audio/speech) nor
name it as the `voice` of a voice-replace job (refused like a voice that does not exist); an admin key
sees and deletes every tenant's voices."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient

from infra.audio import Audio
from infra.settings import Settings
from models.types import VoiceReference
from tests.deployments.http.conftest import EdgeFactory, bearer, keyed, tone_wav


class FakeClone:
    """Double of `VoiceCloneClient`: 0.1 s of a tone per sentence, whatever the reference."""

    deployment = "VoiceClone"

    async def synthesize(self, *, text: str, reference: VoiceReference) -> Audio:
        return Audio(np.full((1, 800), 0.1, dtype=np.float32), 8000)


def register(client: TestClient, who: str) -> str:
    r = client.post(
        "/v1/voices",
        files={"file": ("ref.wav", tone_wav(6.0))},
        data={"name": f"{who}'s voice", "transcript": "some words"},
        headers=bearer(who),
    )
    assert r.status_code == 201, r.text
    voice_id: str = r.json()["voice_id"]
    return voice_id


def registered_ids(client: TestClient, who: str) -> set[str]:
    r = client.get("/v1/voices", headers=bearer(who))
    assert r.status_code == 200, r.text
    return {p["voice_id"] for p in r.json()["registered"]}


def speak(client: TestClient, who: str, voice: str) -> tuple[int, str | None]:
    r = client.post(
        "/v1/audio/speech",
        json={"model": "tts-1", "input": "Hello there.", "voice": voice, "response_format": "wav"},
        headers=bearer(who),
    )
    return r.status_code, (r.json()["error"].get("code") if r.status_code >= 400 else None)


def test_voices_belong_to_their_tenant(settings: Settings, edge: EdgeFactory) -> None:
    client = edge(keyed(settings), voice_clone=FakeClone())
    alices, bobs = register(client, "alice"), register(client, "bob")
    assert alices in registered_ids(client, "alice") and bobs not in registered_ids(client, "alice")
    assert bobs in registered_ids(client, "bob") and alices not in registered_ids(client, "bob")
    assert {alices, bobs} <= registered_ids(client, "root")

    assert speak(client, "alice", alices) == (200, None)
    assert speak(client, "bob", alices) == (404, "voice_not_found")
    assert speak(client, "root", alices) == (200, None)

    r = client.delete(f"/v1/voices/{alices}", headers=bearer("bob"))
    assert (r.status_code, r.json()["error"]["code"]) == (404, "voice_not_found")
    assert alices in registered_ids(client, "alice")  # still there
    assert client.delete(f"/v1/voices/{bobs}", headers=bearer("root")).status_code == 204
    assert bobs not in registered_ids(client, "bob")
    assert client.delete(f"/v1/voices/{alices}", headers=bearer("alice")).status_code == 204


def test_a_voice_replace_job_may_name_only_its_tenants_voices(settings: Settings, edge: EdgeFactory) -> None:
    client = edge(keyed(settings), voice_clone=FakeClone())
    alices = register(client, "alice")
    missing = "0" * 32

    def replace(who: str, voice: str) -> tuple[int, str | None]:
        r = client.post(
            "/v1/jobs/voice-replace",
            files={"file": ("in.wav", tone_wav(2.0))},
            data={"voice": voice},
            headers=bearer(who),
        )
        return r.status_code, (r.json()["error"]["code"] if r.status_code >= 400 else None)

    assert replace("alice", alices) == (202, None)
    # Another tenant's voice is refused exactly as a voice that does not exist: nothing says it is there.
    assert replace("bob", alices) == replace("bob", missing) == (422, "unknown_voice")
    assert replace("root", alices) == (202, None)
