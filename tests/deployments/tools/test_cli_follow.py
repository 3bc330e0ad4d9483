"""Following a job's event stream when the connection drops or the job never ends: against a small
scripted HTTP server standing in for the API (real HTTP; the scripted stream is what cannot be made to
drop on cue with the real app), through the CLI's `main()`."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deployments.tools.cli import main
from deployments.tools.cli_common import ExitCode

JOB_ID = "ab" * 16
JOB = {"id": JOB_ID, "kind": "music", "status": "succeeded", "progress": 1.0, "result": {}}


class ScriptedApi:
    """`GET /v1/jobs/{id}/events` answers the next scripted stream (then the last one again) and
    records each request's `Last-Event-ID`; `GET /v1/jobs/{id}` answers `JOB`."""

    def __init__(self, streams: list[bytes]) -> None:
        self.streams = streams
        self.last_event_ids: list[str | None] = []
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.endswith("/events"):
                    api.last_event_ids.append(self.headers.get("Last-Event-ID"))
                    body = api.streams.pop(0) if len(api.streams) > 1 else api.streams[0]
                    content_type = "text/event-stream"
                else:
                    body, content_type = json.dumps(JOB).encode(), "application/json"
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def event(name: str, event_id: str, **data: Any) -> bytes:
    return f"id: {event_id}\nevent: {name}\ndata: {json.dumps({'id': JOB_ID, **data})}\n\n".encode()


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.delenv("SOUNDSTAGE_API_KEY", raising=False)
    monkeypatch.setenv("SOUNDSTAGE_CONFIG_FILE", str(tmp_path / "absent.toml"))
    yield


def test_a_dropped_stream_is_resumed_from_the_last_event(isolated: None, tmp_path: Path) -> None:
    first = event("status", "100", status="running") + event(
        "progress", "101", progress=0.5, stage="generate"
    )
    rest = event("status", "200", status="succeeded") + event("end", "200", status="succeeded")
    api = ScriptedApi([first, rest])
    argv = ["jobs", "wait", JOB_ID, "--url", api.url, "--output-dir", str(tmp_path), "--json"]
    assert main(argv) == ExitCode.OK
    assert api.last_event_ids == [None, "101"]
    api.server.shutdown()


def test_a_job_that_does_not_end_within_the_timeout_exits_10(isolated: None, tmp_path: Path) -> None:
    api = ScriptedApi([event("status", "1", status="running") + b": keep-alive\n\n" * 3])
    argv = ["jobs", "wait", JOB_ID, "--url", api.url, "--timeout", "1.5", "--quiet"]
    assert main(argv) == ExitCode.TIMEOUT
    assert len(api.last_event_ids) >= 2 and set(api.last_event_ids[1:]) == {"1"}
    api.server.shutdown()
