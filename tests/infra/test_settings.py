"""infra/settings.py: environment parsing and start-up validation naming the bad variable."""

from __future__ import annotations

import pytest

from infra.settings import Settings, SettingsError, load_settings


def test_defaults(fresh_settings: Settings) -> None:
    assert fresh_settings.s3_endpoint_url is None
    assert fresh_settings.s3_bucket == "soundstage"
    assert fresh_settings.job_heartbeat_s == pytest.approx(fresh_settings.job_lease_s / 3)


def test_reads_environment(fresh_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOUNDSTAGE_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("SOUNDSTAGE_API_KEYS", '["k1", "k2"]')
    monkeypatch.setenv("SOUNDSTAGE_JOB_LEASE_S", "12.5")
    settings = load_settings()
    assert settings.s3_endpoint_url == "http://127.0.0.1:9000"
    assert settings.api_keys == ["k1", "k2"]
    assert settings.job_lease_s == 12.5


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SOUNDSTAGE_S3_ENDPOINT_URL", "ftp://nope"),
        ("SOUNDSTAGE_PRESIGN_EXPIRY_S", "0"),
        ("SOUNDSTAGE_S3_BUCKET", "Bad_Bucket"),
        ("SOUNDSTAGE_JOB_LEASE_S", "soon"),
        ("SOUNDSTAGE_S3_ADDRESSING_STYLE", "sideways"),
    ],
)
def test_invalid_values_name_the_variable(
    fresh_settings: Settings, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings()


def test_reclaim_interval_must_fit_the_lease(
    fresh_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOUNDSTAGE_JOB_LEASE_S", "2")
    monkeypatch.setenv("SOUNDSTAGE_JOB_RECLAIM_INTERVAL_S", "5")
    with pytest.raises(SettingsError, match="SOUNDSTAGE_JOB_RECLAIM_INTERVAL_S"):
        load_settings()


def test_empty_variable_counts_as_unset(fresh_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOUNDSTAGE_S3_ENDPOINT_URL", "")
    assert load_settings().s3_endpoint_url is None
