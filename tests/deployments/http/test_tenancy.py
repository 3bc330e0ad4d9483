"""Keys are tenants: jobs, uploads and idempotency keys belong to the key that made them; another
tenant gets 404 (as for an id that does not exist); an admin key sees everything."""

from __future__ import annotations

from fastapi.testclient import TestClient

from infra.settings import Settings
from tests.deployments.http.conftest import EdgeFactory, bearer, keyed, tone_wav


def submit(client: TestClient, who: str, key: str | None = None, **form: str) -> dict[str, object]:
    headers = bearer(who) | ({"Idempotency-Key": key} if key else {})
    files = None if "upload_id" in form else {"file": ("a.wav", tone_wav())}
    r = client.post("/v1/jobs/separate", files=files, data=form, headers=headers)
    assert r.status_code in (200, 202), r.text
    body: dict[str, object] = r.json()
    return body


def test_jobs_belong_to_their_tenant(settings: Settings, edge: EdgeFactory) -> None:
    client = edge(keyed(settings))
    job = submit(client, "alice")
    path = f"/v1/jobs/{job['id']}"
    assert client.get(path, headers=bearer("alice")).status_code == 200
    for method, url in (("GET", path), ("GET", f"{path}/report"), ("DELETE", path)):
        r = client.request(method, url, headers=bearer("bob"))
        assert (r.status_code, r.json()["error"]["code"]) == (404, "job_not_found"), (method, url)
    bobs = client.get("/v1/jobs", headers=bearer("bob")).json()["jobs"]
    assert job["id"] not in [j["id"] for j in bobs]
    alices = client.get("/v1/jobs", headers=bearer("alice")).json()["jobs"]
    assert job["id"] in [j["id"] for j in alices]
    assert client.get(path, headers=bearer("root")).status_code == 200
    everyone = client.get("/v1/jobs?limit=200", headers=bearer("root")).json()["jobs"]
    assert job["id"] in [j["id"] for j in everyone]


def test_uploads_belong_to_their_tenant(settings: Settings, edge: EdgeFactory) -> None:
    client = edge(keyed(settings))
    alices = client.post("/v1/uploads", files={"file": ("a.wav", tone_wav())}, headers=bearer("alice")).json()
    bobs = client.post("/v1/uploads", files={"file": ("a.wav", tone_wav())}, headers=bearer("bob")).json()
    assert alices["upload_id"] != bobs["upload_id"]  # same file, two tenants: two uploads
    r = client.post("/v1/jobs/separate", data={"upload_id": alices["upload_id"]}, headers=bearer("bob"))
    assert (r.status_code, r.json()["error"]["code"]) == (404, "upload_not_found")
    assert submit(client, "alice", upload_id=alices["upload_id"])["status"] == "queued"


def test_idempotency_keys_are_scoped_by_tenant(settings: Settings, edge: EdgeFactory) -> None:
    client = edge(keyed(settings))
    first = submit(client, "alice", key="order-17")
    again = submit(client, "alice", key="order-17")
    other = submit(client, "bob", key="order-17")
    assert first["id"] == again["id"]
    assert other["id"] != first["id"]
