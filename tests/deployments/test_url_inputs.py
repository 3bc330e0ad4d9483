"""Inputs by `url` (deployments/http/url_inputs.py): fetched from the embedded S3 server over real HTTP."""

from __future__ import annotations

import asyncio

import pytest

from deployments.http import url_inputs
from deployments.http.errors import ApiError
from infra.settings import Settings
from infra.storage import Storage


def fetch_url(url: str, settings: Settings) -> tuple[bytes, str | None]:
    """`url_inputs.fetch_url` (async, answering a spooled file) run to completion, as bytes."""
    body, name = asyncio.run(url_inputs.fetch_url(url, settings))
    with body:
        return body.read(), name


@pytest.fixture(scope="module")
def url(storage: Storage) -> str:
    storage.put_bytes("test-inputs/clip%20one.wav", b"RIFF" + bytes(2000))
    return storage.presigned_url("test-inputs/clip%20one.wav")


def test_fetches_the_body_and_a_filename(url: str, settings: Settings) -> None:
    data, name = fetch_url(url, settings.model_copy(update={"allow_private_urls": True}))
    assert data == b"RIFF" + bytes(2000) and name is not None and name.endswith(".wav")


def test_private_addresses_are_refused_by_default(url: str, settings: Settings) -> None:
    assert "127.0.0.1" in url
    with pytest.raises(ApiError) as error:
        fetch_url(url, settings.model_copy(update={"allow_private_urls": False}))
    assert (error.value.status, error.value.code) == (422, "url_not_allowed")


@pytest.mark.parametrize("bad", ["ftp://example.com/a.wav", "file:///etc/passwd", "not a url", "http://"])
def test_only_absolute_http_urls(bad: str, settings: Settings) -> None:
    with pytest.raises(ApiError) as error:
        fetch_url(bad, settings)
    assert error.value.code == "invalid_url"


def test_missing_object_and_size_limit(url: str, settings: Settings, storage: Storage) -> None:
    allowed = settings.model_copy(update={"allow_private_urls": True})
    with pytest.raises(ApiError) as error:
        fetch_url(storage.presigned_url("test-inputs/nothing-here.wav"), allowed)
    assert error.value.code == "url_fetch_failed" and "X-Amz" not in error.value.message
    small = allowed.model_copy(update={"max_upload_bytes": 1024})
    with pytest.raises(ApiError) as error:
        fetch_url(url, small)
    assert (error.value.status, error.value.code) == (413, "audio_too_large")
