"""infra/embedded_s3.py: SeaweedFS (`weed mini`) as a real, persistent store on 127.0.0.1.

Each test starts its own store on its own data dir (about a second each), apart from the session's.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
from pathlib import Path

import httpx
import pytest

from infra.embedded_s3 import PORTS_FILE, EmbeddedS3, EmbeddedS3Error
from infra.jobs import JobStatus, JobStore
from infra.settings import Settings
from infra.storage import Storage, output_key


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """The (ip, port) pairs process `pid` listens on, from /proc (IPv4 and IPv6)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found: set[tuple[str, int]] = set()
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A = LISTEN
                continue
            address, port = local.split(":")
            ip = socket.inet_ntop(
                socket.AF_INET if width == 8 else socket.AF_INET6,
                b"".join(bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, width, 8)),
            )
            found.add((ip, int(port, 16)))
    return found


def test_every_port_is_bound_to_loopback(s3: EmbeddedS3) -> None:
    assert s3._process is not None
    addresses = listening_addresses(s3._process.pid)
    assert {ip for ip, _ in addresses} == {"127.0.0.1"}, addresses
    assert {port for _, port in addresses} == set(s3.ports.values())


def test_a_restart_loses_nothing(tmp_path: Path) -> None:
    """Jobs, objects, ETags (so CAS continues) and presigned URLs survive a stop and a start."""
    with EmbeddedS3(Settings(), data_dir=tmp_path) as first:
        storage = Storage(first.settings)
        job, _ = JobStore(storage).create("music", {"prompt": "kept"})
        key = output_key(job.id, "song.wav")
        storage.put_bytes(key, b"RIFF-kept", "audio/wav")
        url = storage.presigned_url(key)
        etag = storage.get(key).etag
    assert not first.running

    with EmbeddedS3(Settings(), data_dir=tmp_path) as second:
        assert second.endpoint_url == first.endpoint_url, "the S3 port is stable per data dir"
        storage = Storage(second.settings)
        jobs = JobStore(storage)
        assert jobs.get(job.id).request == {"prompt": "kept"}
        assert job.id in jobs.active_ids()
        assert jobs.claim(job.id, "runner", lease_s=30).status is JobStatus.RUNNING  # type: ignore[union-attr]
        response = httpx.get(url)
        assert (response.status_code, response.content) == (200, b"RIFF-kept")
        assert storage.replace(key, b"RIFF-new", etag) != etag


def test_a_taken_port_is_replaced_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    remembered = EmbeddedS3(Settings(), data_dir=tmp_path).ports
    (tmp_path / PORTS_FILE).write_text(json.dumps(remembered))
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", remembered["s3"]))
        squatter.listen()
        with caplog.at_level(logging.WARNING, logger="infra.embedded_s3"):
            moved = EmbeddedS3(Settings(), data_dir=tmp_path)
    assert moved.port != remembered["s3"]
    assert "earlier presigned URLs will not work" in caplog.text
    assert {k: v for k, v in moved.ports.items() if k != "s3"} == {
        k: v for k, v in remembered.items() if k != "s3"
    }


def test_a_store_that_cannot_start_says_why(tmp_path: Path) -> None:
    """A fixed S3 port someone else holds: weed exits, and the error carries its log."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        store = EmbeddedS3(Settings(), data_dir=tmp_path, port=port)
        with pytest.raises(EmbeddedS3Error, match="exited during start-up") as error:
            store.start(timeout_s=30)
    assert f"port {port} for S3" in str(error.value), "the log's reason is in the error"
    assert not store.running


def test_a_crash_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    crashes: list[EmbeddedS3Error] = []
    reported = threading.Event()

    def on_crash(error: EmbeddedS3Error) -> None:
        crashes.append(error)
        reported.set()

    store = EmbeddedS3(Settings(), data_dir=tmp_path, on_crash=on_crash).start()
    try:
        store.check()
        assert store._process is not None
        with caplog.at_level(logging.ERROR, logger="infra.embedded_s3"):
            os.kill(store._process.pid, signal.SIGKILL)
            assert reported.wait(10), "the watcher did not report the crash"
        assert "exited unexpectedly with code -9" in str(crashes[0])
        assert "exited unexpectedly" in caplog.text
        with pytest.raises(EmbeddedS3Error, match="exited unexpectedly"):
            store.check()
    finally:
        store.stop()


def test_a_clean_stop_is_not_a_crash(tmp_path: Path) -> None:
    crashes: list[EmbeddedS3Error] = []
    store = EmbeddedS3(Settings(), data_dir=tmp_path, on_crash=crashes.append).start()
    store.stop()
    assert crashes == [] and not store.running
    with pytest.raises(EmbeddedS3Error, match="not running"):
        store.check()


def test_a_data_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "not-a-dir"
    path.write_text("x")
    with pytest.raises(EmbeddedS3Error, match="cannot use"):
        EmbeddedS3(Settings(), data_dir=path).start()


def test_one_store_per_data_dir(s3: EmbeddedS3) -> None:
    with pytest.raises(EmbeddedS3Error, match=f"in use by another embedded store \\(pid {os.getpid()}\\)"):
        EmbeddedS3(Settings(), data_dir=s3.data_dir).start()
    assert s3.running
    Storage(s3.settings).ping()
