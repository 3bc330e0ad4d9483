"""The state file an embedded store leaves in its data dir, so that other commands on this machine
(`soundstage models push/pull/fetch/convert --push`) find the running (or last) local store by themselves.

It holds the endpoint and the credentials, so it is written readable by this user only (mode 0600), and
replaced atomically: a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from pydantic import BaseModel, SecretStr, ValidationError

from infra.settings import Settings

logger = logging.getLogger(__name__)
STATE_FILE = "soundstage-store.json"


class StoreState(BaseModel):
    """Where the embedded store of one data dir listens, and how to sign requests to it."""

    endpoint_url: str
    access_key_id: str
    secret_access_key: SecretStr
    bucket: str
    region: str
    pid: int  # the process that ran the store (informational)

    def apply(self, settings: Settings) -> Settings:
        """`settings` pointed at this store (endpoint, credentials, bucket, region, path addressing)."""
        return settings.model_copy(
            update={
                "s3_endpoint_url": self.endpoint_url,
                "s3_access_key_id": self.access_key_id,
                "s3_secret_access_key": self.secret_access_key,
                "s3_bucket": self.bucket,
                "s3_region": self.region,
                "s3_addressing_style": "path",
            }
        )


def write_state(data_dir: Path, state: StoreState) -> Path:
    """Write `data_dir/STATE_FILE` with mode 0600 (atomically replaced); returns its path."""
    path = data_dir / STATE_FILE
    partial = path.with_name(path.name + ".partial")
    body = state.model_dump(mode="json") | {"secret_access_key": state.secret_access_key.get_secret_value()}
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)  # a leftover partial file may have had other permissions
        json.dump(body, f, indent=1)
    os.replace(partial, path)
    return path


def read_state(data_dir: Path) -> StoreState | None:
    """The state the last store on `data_dir` left, or None if there is none (or it is unreadable)."""
    path = data_dir / STATE_FILE
    try:
        return StoreState.model_validate(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, ValidationError) as e:
        logger.warning("ignoring unreadable %s: %s", path, e)
        return None
