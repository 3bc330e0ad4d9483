"""Webhooks end to end without Ray: a job submitted over HTTP with `webhook_url`, run by a JobRunner built
directly, delivered to a receiver on 127.0.0.1 (private addresses allowed in these settings), signed as
the Standard Webhooks spec says (checked here by recomputing the HMAC by hand), retried after a failure,
and every attempt in the job report; a delivery owed by a job whose runner died is sent by another's sweep."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from deployments.http.api import build_http_app
from deployments.http.services import Services
from deployments.runner import JobRunner
from infra import metrics
from infra.embedded_s3 import EmbeddedS3
from infra.jobs import JobStatus, JobStore
from infra.settings import load_settings
from infra.storage import Storage
from infra.webhooks import WebhookSpec
from pipelines.engine import registry
from pipelines.engine.kinds import JobKind
from pipelines.engine.stages import Stage, StageContext, StageResult, Stored
from tests.deployments.http.conftest import RecordingRunner, tone_wav
from tests.infra.test_metrics import RecordingSink
from tests.pipelines.test_stages import models_with

KIND = "test-webhook"
SECRET_BYTES = b"0123456789abcdef0123456789abcdef"
SECRET = "whsec_" + base64.b64encode(SECRET_BYTES).decode()


class QuickRequest(BaseModel):
    model_config = {"extra": "forbid"}
    note: str = "hi"


async def store(ctx: StageContext[QuickRequest]) -> StageResult:
    return StageResult(record=Stored(result={"note": ctx.request.note}))


class Receiver:
    """An HTTP server on 127.0.0.1 that answers the queued status codes in turn (then 200)."""

    def __init__(self, answers: list[int]) -> None:
        self.answers = answers
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.answers.pop(0) if receiver.answers else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks?src=test"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def storage(s3: EmbeddedS3, monkeypatch: pytest.MonkeyPatch) -> Iterator[Storage]:
    """A bucket of this test's own (the runner sweeps its whole index), webhooks on, private allowed."""
    env = {
        **s3.env,
        "SOUNDSTAGE_JOB_LEASE_S": "3",
        "SOUNDSTAGE_JOB_RECLAIM_INTERVAL_S": "0.5",
        "SOUNDSTAGE_S3_BUCKET": f"webhooks-{uuid.uuid4().hex[:12]}",
        "SOUNDSTAGE_WEBHOOK_SECRET": SECRET,
        "SOUNDSTAGE_ALLOW_PRIVATE_WEBHOOKS": "1",
        "SOUNDSTAGE_WEBHOOK_RETRY_BASE_S": "0.3",
        "SOUNDSTAGE_WEBHOOK_MAX_ATTEMPTS": "3",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    own = Storage(load_settings())
    own.ensure_bucket()
    monkeypatch.setitem(
        registry.JOB_KINDS, KIND, JobKind(KIND, QuickRequest, (Stage("store", store, output=Stored),))
    )
    yield own


def edge(storage: Storage) -> TestClient:
    settings = load_settings()
    services = Services(settings, storage, JobStore(storage), models_with(), RecordingRunner())
    return TestClient(build_http_app(services), raise_server_exceptions=False)


def verify_by_hand(headers: dict[str, str], body: bytes) -> bool:
    """The spec's check: base64(HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")), key = the
    base64-decoded part of the secret after `whsec_`."""
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(SECRET_BYTES, signed, hashlib.sha256).digest()).decode()
    return any(sig == f"v1,{expected}" for sig in headers["webhook-signature"].split())


def run_job(job_id: str, until: Any, timeout_s: float = 20) -> None:
    async def scenario() -> None:
        runner: Any = JobRunner.func_or_class(models_with())  # type: ignore[attr-defined]
        await runner.submit(job_id)
        ends = time.monotonic() + timeout_s
        while not until():
            assert time.monotonic() < ends, "deliveries not done in time"
            await asyncio.sleep(0.1)
        await runner.drain()

    asyncio.run(scenario())


def test_a_failed_delivery_is_retried_signed_and_reported(storage: Storage) -> None:
    receiver = Receiver([500])
    client = edge(storage)
    jobs = JobStore(storage)
    job_id = jobs.create(KIND, {"note": "x"}, webhook=WebhookSpec(url=receiver.url))[0].id
    run_job(job_id, lambda: not jobs.get(job_id).webhook_pending)

    assert len(receiver.received) == 2
    for headers, body in receiver.received:
        assert verify_by_hand(headers, body)
        assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert receiver.received[0][0]["webhook-id"] == receiver.received[1][0]["webhook-id"]  # same message
    payload = json.loads(receiver.received[1][1])
    assert payload["type"] == "job.succeeded" and payload["data"]["id"] == job_id
    assert payload["data"]["status"] == "succeeded" and payload["data"]["result"] == {"note": "x"}

    report = client.get(f"/v1/jobs/{job_id}/report").json()
    attempts = report["webhook_attempts"]
    assert [(a["attempt"], a["status_code"], a["delivered"], a["final"]) for a in attempts] == [
        (1, 500, False, False),
        (2, 200, True, True),
    ]
    assert attempts[1]["at"] - attempts[0]["at"] >= 0.3  # the backoff
    assert report["webhook_pending"] == [] and report["webhook"]["url"] == receiver.url


def test_a_receiver_that_never_answers_2xx_is_given_up_after_the_attempts(storage: Storage) -> None:
    receiver = Receiver([503, 503, 503, 503])
    jobs = JobStore(storage)
    record, _ = jobs.create(KIND, {}, webhook=WebhookSpec(url=receiver.url))
    run_job(record.id, lambda: not jobs.get(record.id).webhook_pending)
    attempts = jobs.get(record.id).webhook_attempts
    assert [a.status_code for a in attempts] == [503, 503, 503] and attempts[-1].final
    assert not storage.exists(f"index/webhooks/{record.id}")


def test_a_delivery_owed_by_a_dead_runner_is_sent_by_another_runners_sweep(storage: Storage) -> None:
    """The job finished (the delivery queued in the same write) and its runner died before sending."""
    receiver = Receiver([])
    jobs = JobStore(storage)
    record, _ = jobs.create(KIND, {}, webhook=WebhookSpec(url=receiver.url, events=("job.cancelled",)))
    cancelled = jobs.request_cancel(record.id)  # a queued job: cancelled at once, by the ingress
    assert cancelled.status is JobStatus.CANCELLED and len(cancelled.webhook_pending) == 1
    assert storage.exists(f"index/webhooks/{record.id}")

    async def sweep() -> None:
        runner: Any = JobRunner.func_or_class(models_with())  # type: ignore[attr-defined]
        ends = time.monotonic() + 20
        while not receiver.received:
            assert time.monotonic() < ends
            await asyncio.sleep(0.1)
        await runner.drain()

    asyncio.run(sweep())
    assert json.loads(receiver.received[0][1])["type"] == "job.cancelled"


def test_a_filtered_event_is_not_delivered(storage: Storage) -> None:
    jobs = JobStore(storage)
    record, _ = jobs.create(KIND, {}, webhook=WebhookSpec(url="http://127.0.0.1:9/", events=("job.failed",)))
    run_job(record.id, lambda: True)
    done = jobs.get(record.id)
    assert done.status is JobStatus.SUCCEEDED and not done.webhook_pending and not done.webhook_attempts


@pytest.mark.parametrize(
    ("update", "body", "code"),
    [
        (
            {"SOUNDSTAGE_ALLOW_PRIVATE_WEBHOOKS": "0"},
            {"webhook_url": "http://127.0.0.1:8080/h"},
            "webhook_not_allowed",
        ),
        (
            {"SOUNDSTAGE_ALLOW_PRIVATE_WEBHOOKS": "0"},
            {"webhook_url": "http://10.1.2.3/h"},
            "webhook_not_allowed",
        ),
        ({}, {"webhook_url": "ftp://example.com/h"}, "invalid_webhook"),
        ({}, {"webhook_events": ["job.succeeded"]}, "invalid_webhook"),
        ({}, {"webhook_url": "http://127.0.0.1/h", "webhook_events": ["job.exploded"]}, "invalid_request"),
        ({"SOUNDSTAGE_WEBHOOK_SECRET": ""}, {"webhook_url": "http://127.0.0.1/h"}, "webhooks_disabled"),
    ],
)
def test_bad_webhooks_are_refused_at_submission(
    storage: Storage, monkeypatch: pytest.MonkeyPatch, update: dict[str, str], body: dict[str, Any], code: str
) -> None:
    for key, value in update.items():
        monkeypatch.setenv(key, value)
    answer = edge(storage).post("/v1/jobs/music", json={"prompt": "x", "duration_s": 1.0, **body})
    assert answer.status_code == 422 and answer.json()["error"]["code"] == code, answer.text


def test_a_json_submission_carries_its_webhook_beside_the_request(storage: Storage) -> None:
    body = {
        "prompt": "x",
        "duration_s": 1.0,
        "webhook_url": "http://127.0.0.1/h",
        "webhook_events": ["job.failed"],
    }
    answer = edge(storage).post("/v1/jobs/music", json=body)
    assert answer.status_code == 202, answer.text
    assert "webhook_url" not in answer.json()["request"]  # not part of the request (nor of its hash)
    record = JobStore(storage).get(answer.json()["id"])
    assert record.webhook == WebhookSpec(url="http://127.0.0.1/h", events=("job.failed",))


def test_a_form_submission_takes_webhook_fields(storage: Storage) -> None:
    """Kinds with audio inputs take a multipart form: the webhook fields are two more form fields."""
    answer = edge(storage).post(
        "/v1/jobs/separate",
        data={"webhook_url": "http://127.0.0.1/h", "webhook_events": "job.failed, job.cancelled"},
        files={"file": ("a.wav", tone_wav(), "audio/wav")},
    )
    assert answer.status_code == 202, answer.text
    record = JobStore(storage).get(answer.json()["id"])
    assert record.webhook == WebhookSpec(url="http://127.0.0.1/h", events=("job.failed", "job.cancelled"))


def test_deliveries_are_counted_by_outcome(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    sink = RecordingSink()
    monkeypatch.setattr(metrics, "_sink", sink)
    receiver = Receiver([500])
    jobs = JobStore(storage)
    job_id = jobs.create(KIND, {"note": "m"}, webhook=WebhookSpec(url=receiver.url))[0].id
    run_job(job_id, lambda: not jobs.get(job_id).webhook_pending)
    outcomes = [(tags["event"], tags["outcome"]) for _, tags in sink.of(metrics.WEBHOOK_DELIVERIES)]
    assert outcomes == [("job.succeeded", "retry"), ("job.succeeded", "delivered")]
