"""The one typed settings object, read from `SOUNDSTAGE_*` environment variables and validated at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(RuntimeError):
    """Settings failed validation; the message names each offending `SOUNDSTAGE_*` variable."""


class Settings(BaseSettings):
    """Everything an operator can configure. Field `x` is read from `SOUNDSTAGE_X`."""

    # An empty variable counts as unset (a ConfigMap can blank a value instead of deleting its key).
    model_config = SettingsConfigDict(
        env_prefix="SOUNDSTAGE_", extra="ignore", frozen=True, env_ignore_empty=True
    )

    # Object storage (any S3-compatible server). No endpoint = AWS S3, or the embedded server locally.
    s3_endpoint_url: str | None = None
    s3_public_endpoint_url: str | None = Field(
        default=None, description="Endpoint used in presigned URLs, when clients reach S3 by another address."
    )
    s3_bucket: str = Field(
        default="soundstage", min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]+$"
    )
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_addressing_style: Literal["auto", "path", "virtual"] = "path"
    presign_expiry_s: int = Field(default=3600, ge=1, le=7 * 24 * 3600)
    multipart_chunk_bytes: int = Field(default=8 * 1024 * 1024, ge=5 * 1024 * 1024)

    # Models.
    model_cache_dir: Path = Path.home() / ".cache" / "soundstage" / "models"

    # Request limits.
    max_upload_bytes: int = Field(default=200 * 1024 * 1024, ge=1024)
    max_request_bytes: int = Field(default=64 * 1024, ge=1024, description="Largest JSON request body.")
    max_input_duration_s: float = Field(default=3600.0, gt=0)
    max_generation_s: float = Field(default=30.0, gt=0, le=300)
    max_prompt_chars: int = Field(default=2000, ge=1)
    max_sync_audio_s: float = Field(
        default=120.0, gt=0, description="Longer inputs to /v1/diarize become a job (202) instead."
    )
    api_keys: list[str] = Field(default_factory=list, description="If set, /v1 requires a Bearer key.")
    url_fetch_timeout_s: float = Field(default=30.0, gt=0, description="Fetching an input given by `url`.")
    allow_private_urls: bool = Field(
        default=False,
        description="Let `url` inputs reach loopback, private or link-local addresses (SSRF guard off).",
    )

    # Jobs.
    job_lease_s: float = Field(default=30.0, ge=1.0)
    job_reclaim_interval_s: float = Field(default=5.0, gt=0)
    job_max_concurrent: int = Field(default=4, ge=1, description="Jobs one runner replica runs at once.")

    @field_validator("s3_endpoint_url", "s3_public_endpoint_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @model_validator(mode="after")
    def _heartbeat_fits_lease(self) -> Settings:
        if self.job_reclaim_interval_s > self.job_lease_s:
            raise ValueError("SOUNDSTAGE_JOB_RECLAIM_INTERVAL_S must not exceed SOUNDSTAGE_JOB_LEASE_S")
        return self

    @property
    def job_heartbeat_s(self) -> float:
        """How often a runner renews its lease: three chances before it expires."""
        return self.job_lease_s / 3.0


def load_settings(**overrides: object) -> Settings:
    """Build `Settings` from the environment (plus overrides); raise `SettingsError` naming bad variables."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as e:
        problems = [_describe(err["loc"], err["msg"]) for err in e.errors()]
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems)) from e


def _describe(loc: tuple[int | str, ...], message: str) -> str:
    return f"SOUNDSTAGE_{'_'.join(str(p) for p in loc).upper()}: {message}" if loc else message
