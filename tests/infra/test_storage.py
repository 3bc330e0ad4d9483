"""infra/storage.py against the embedded S3 server over HTTP (no in-process mocking of boto3)."""

from __future__ import annotations

import secrets

import httpx
import pytest

from infra import storage as S
from infra.storage import Storage


def fresh_id() -> str:
    return secrets.token_hex(16)


def test_put_get_exists_delete(storage: Storage) -> None:
    key = S.output_key(fresh_id(), "a.bin")
    etag = storage.put_bytes(key, b"hello")
    stored = storage.get(key)
    assert (stored.body, stored.etag) == (b"hello", etag)
    assert storage.exists(key)
    storage.delete(key)
    assert not storage.exists(key)
    with pytest.raises(S.ObjectNotFoundError):
        storage.get(key)


def test_create_only_and_compare_and_swap(storage: Storage) -> None:
    key = f"cas-test/{fresh_id()}"  # not a job key: job listings in the shared bucket would meet it
    etag = storage.create(key, b"v1")
    with pytest.raises(S.PreconditionFailedError):
        storage.create(key, b"v1-again")
    new_etag = storage.replace(key, b"v2", etag)
    with pytest.raises(S.PreconditionFailedError):
        storage.replace(key, b"v3-from-stale-reader", etag)
    assert storage.get(key) == S.StoredObject(key, new_etag, b"v2")


def test_multipart_stream_holds_parts_not_the_whole(storage: Storage) -> None:
    key = S.output_key(fresh_id(), "big.bin")
    part = storage.settings.multipart_chunk_bytes
    chunk = secrets.token_bytes(256 * 1024)
    count = (2 * part) // len(chunk) + 3  # two full parts and a tail
    written = storage.upload_stream(key, (chunk for _ in range(count)))
    assert written == count * len(chunk)
    body = storage.get_bytes(key)
    assert len(body) == written and body[: len(chunk)] == chunk and body[-len(chunk) :] == chunk


def test_multipart_stream_aborts_on_failure(storage: Storage) -> None:
    key = S.output_key(fresh_id(), "broken.bin")

    def chunks() -> object:
        yield b"x" * 1024
        raise RuntimeError("producer failed")

    with pytest.raises(RuntimeError, match="producer failed"):
        storage.upload_stream(key, chunks())  # type: ignore[arg-type]
    assert not storage.exists(key)


def test_presigned_url_is_plain_http(storage: Storage) -> None:
    key = S.output_key(fresh_id(), "song.wav")
    storage.put_bytes(key, b"RIFF....", "audio/wav")
    url = storage.presigned_url(key, filename="song.wav")
    response = httpx.get(url)
    assert response.status_code == 200 and response.content == b"RIFF...."
    assert "song.wav" in response.headers["content-disposition"]


def test_listing(storage: Storage) -> None:
    job = fresh_id()
    for name in ("b", "a", "c"):
        storage.put_bytes(f"{S.stage_prefix(job, 0, 'generate')}{name}", b"")
    assert list(storage.list_keys(S.stage_prefix(job, 0, "generate"))) == [
        S.stage_prefix(job, 0, "generate") + n for n in ("a", "b", "c")
    ]
    assert f"jobs/{job}/" in list(storage.list_prefixes("jobs/"))


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", ".hidden", "x" * 200, "a..b"])
def test_key_parts_are_validated(bad: str) -> None:
    with pytest.raises(S.InvalidKeyPartError):
        S.output_key(fresh_id(), bad)


@pytest.mark.parametrize("bad", ["", "ABC", "0" * 31, "../" + "0" * 29, "g" * 32])
def test_ids_are_validated(bad: str) -> None:
    with pytest.raises(S.InvalidKeyPartError):
        S.job_key(bad)


def test_unreachable_server_is_a_storage_error(settings: object) -> None:
    from infra.embedded_s3 import free_port

    dead = Storage(settings.model_copy(update={"s3_endpoint_url": f"http://127.0.0.1:{free_port()}"}))  # type: ignore[attr-defined]
    with pytest.raises(S.StorageError, match="unreachable"):
        dead.ping()
