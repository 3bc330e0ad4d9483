"""The one typed settings object, read from `SOUNDSTAGE_*` environment variables and validated at start-up."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(RuntimeError):
    """Settings failed validation; the message names each offending `SOUNDSTAGE_*` variable."""


# OpenAI's speech voices, each spoken here by a stock voice (SOUNDSTAGE_OPENAI_VOICES replaces the table).
OPENAI_VOICE_NAMES = (
    "alloy", "ash", "ballad", "cedar", "coral", "echo", "fable", "marin", "nova", "onyx", "sage",
    "shimmer", "verse",
)  # fmt: skip
DEFAULT_STOCK_VOICE = "heart"


class QuotaLimits(BaseModel):
    """One tenant's limits; None is no limit. Audio-seconds are what a job or sync route generates (its
    requested durations) plus what it processes (its input's duration), per UTC day."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    concurrent_jobs: int | None = Field(default=16, ge=1, description="Queued or running jobs at once.")
    requests_per_minute: int | None = Field(default=600, ge=1, description="`/v1` requests per minute.")
    audio_seconds_per_day: float | None = Field(
        default=None, gt=0, description="Generated + processed audio-seconds per UTC day."
    )


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
    s3_connect_timeout_s: float = Field(default=5.0, gt=0, description="Connect timeout of one S3 request.")
    s3_read_timeout_s: float = Field(default=30.0, gt=0, description="Read timeout of one S3 request.")
    s3_edge_outage_tolerance_s: float = Field(
        default=5.0, ge=0, description="The same for the HTTP edge, which answers 503 + Retry-After after it."
    )
    s3_outage_tolerance_s: float = Field(
        default=120.0,
        ge=0,
        description="How long job-record and checkpoint writes keep retrying a store that is unreachable or "
        "answering 5xx (exponential backoff with jitter) before the error counts.",
    )

    # Models.
    model_cache_dir: Path = Path.home() / ".cache" / "soundstage" / "models"

    # Request limits.
    max_upload_bytes: int = Field(default=200 * 1024 * 1024, ge=1024)
    max_request_bytes: int = Field(default=64 * 1024, ge=1024, description="Largest JSON request body.")
    max_input_duration_s: float = Field(default=3600.0, gt=0)
    max_generation_s: float = Field(default=30.0, gt=0, le=300)
    max_long_music_s: float = Field(
        default=300.0, gt=0, le=3600, description="Longest text-only MusicGen track, made in windows (s)."
    )
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
    # Audio limits checked from a file's header before it is decoded (a decompression bomb is refused
    # before allocation): 3600 s of 48 kHz stereo is 345,600,000 samples (1.4 GB as float32).
    max_sample_rate: int = Field(default=192_000, ge=8000, description="Highest input sample rate (Hz).")
    max_channels: int = Field(default=8, ge=1, description="Most channels in an input.")
    max_decoded_samples: int = Field(
        default=345_600_000, ge=1, description="Most decoded samples (frames x channels) in one input."
    )
    # Tenancy (infra/tenancy.py): entries `<tenant>:<sha256 hex of the key>` or a bare digest.
    api_key_hashes: list[str] = Field(default_factory=list, description="Tenants' keys, SHA-256 hex digests.")
    admin_key_hashes: list[str] = Field(
        default_factory=list, description="Keys that see every tenant's jobs, uploads and voices (digests)."
    )
    url_allowed_ports: list[int] = Field(
        default_factory=lambda: [80, 443],
        description="Ports a `url` input may name while the SSRF guard is on (JSON list, e.g. [443]).",
    )
    # Quotas per tenant (infra/quotas.py), counted in the object store so every ingress replica agrees.
    quota_default: QuotaLimits = Field(
        default_factory=lambda: QuotaLimits(),
        description="Every tenant's limits unless `quotas` names it (JSON object of QuotaLimits fields).",
    )
    quotas: dict[str, QuotaLimits] = Field(
        default_factory=dict,
        description='Limits per tenant, replacing the default, e.g. {"alice": {"requests_per_minute": 120}}.',
    )

    openai_voices: dict[str, str] = Field(
        default_factory=lambda: dict.fromkeys(OPENAI_VOICE_NAMES, DEFAULT_STOCK_VOICE),
        description="OpenAI voice name -> stock voice on /v1/audio/speech (JSON object; replaces the table).",
    )

    # Jobs.
    job_lease_s: float = Field(default=30.0, ge=1.0)
    job_reclaim_interval_s: float = Field(default=5.0, gt=0)
    job_max_concurrent: int = Field(default=4, ge=1, description="Jobs one runner replica runs at once.")
    job_timeout_s: float = Field(
        default=6 * 3600.0, gt=0, description="A job's deadline (all attempts' work)."
    )
    # Retention (infra/retention.py), applied by the runners' sweep every retention_sweep_interval_s.
    retention_uploads_s: float = Field(default=7 * 86400.0, gt=0, description="Uploads not used by a job.")
    retention_checkpoints_s: float = Field(default=2 * 86400.0, gt=0, description="After a job finished.")
    retention_outputs_s: float = Field(default=30 * 86400.0, gt=0, description="After a job finished.")
    retention_outputs_by_kind_s: dict[str, float] = Field(
        default_factory=dict,
        description='Per job kind, e.g. {"loop": 604800}: overrides retention_outputs_s.',
    )
    retention_idempotency_s: float = Field(default=86400.0, gt=0, description="Idempotency-Key markers.")
    retention_sweep_interval_s: float = Field(default=3600.0, gt=0)
    job_stage_timeout_s: float = Field(
        default=3600.0, gt=0, description="Default deadline of one stage (a job kind may set its own)."
    )
    model_call_timeout_s: float = Field(default=900.0, gt=0, description="Deadline of one model call.")
    model_health_grace_s: float = Field(
        default=60.0,
        ge=0,
        description="A model replica whose call has run past model_call_timeout_s + this fails its health.",
    )
    model_health_probe_s: float = Field(
        default=20.0, gt=0, description="A model replica whose device probe takes longer fails its health."
    )
    job_facts_inline_max_bytes: int = Field(
        default=8192,
        ge=0,
        description="A stage's facts larger than this (JSON) go to an object of the attempt, not the record.",
    )
    runner_threads: int = Field(
        default=32, ge=4, description="Worker threads of a runner replica (S3 calls, codecs, renders)."
    )
    ingress_threads: int = Field(
        default=32,
        ge=4,
        le=1024,
        description="Worker threads of an ingress replica: its asyncio pool (S3 calls, decodes, uploads) "
        "and anyio's limit (sync work of the web framework); Ray's default is num_cpus + 4.",
    )
    # Live job events (deployments/http/job_events.py) and webhooks (deployments/webhooks.py).
    events_poll_s: float = Field(default=0.5, gt=0, description="How often a job's event stream reads it.")
    events_keepalive_s: float = Field(default=15.0, gt=0, description="Comment lines on a quiet stream.")
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="Signs webhook deliveries (`whsec_<base64>`); unset: `webhook_url` is refused (422).",
    )
    allow_private_webhooks: bool = Field(
        default=False, description="Let webhooks reach loopback, private or link-local addresses."
    )
    webhook_timeout_s: float = Field(default=10.0, gt=0, description="Deadline of one delivery attempt.")
    webhook_max_attempts: int = Field(default=8, ge=1, description="Attempts per delivery before giving up.")
    webhook_retry_base_s: float = Field(
        default=5.0, gt=0, description="Backoff after the first failed attempt; doubles after each."
    )
    public_base_url: str | None = Field(
        default=None, description="The API's URL as clients reach it (webhook payloads' `status_url`)."
    )

    @field_validator("s3_endpoint_url", "s3_public_endpoint_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("api_key_hashes", "admin_key_hashes")
    @classmethod
    def _key_hash_entries(cls, value: list[str]) -> list[str]:
        pattern = re.compile(r"^(?:[a-z0-9][a-z0-9_.-]{0,62}:)?[0-9a-f]{64}$")
        for entry in value:
            if not pattern.match(entry.strip().lower()):
                raise ValueError("each entry is `<tenant>:<sha256 hex>` or `<sha256 hex>` (64 hex digits)")
        return value

    @model_validator(mode="after")
    def _heartbeat_fits_lease(self) -> Settings:
        if self.job_reclaim_interval_s > self.job_lease_s:
            raise ValueError("SOUNDSTAGE_JOB_RECLAIM_INTERVAL_S must not exceed SOUNDSTAGE_JOB_LEASE_S")
        return self

    def quota_for(self, tenant: str) -> QuotaLimits:
        """The limits of `tenant`: its own entry in `quotas`, else `quota_default`."""
        return self.quotas.get(tenant, self.quota_default)

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
