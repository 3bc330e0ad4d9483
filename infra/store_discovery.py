"""The store a command run beside the local stack uses (`soundstage models ...`): the configured
endpoint, else the local stack's embedded store, running or started for the command."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from infra.embedded_s3 import EmbeddedS3, EmbeddedS3Error
from infra.settings import Settings
from infra.store_host import store_dir, store_running
from infra.store_state import read_state

logger = logging.getLogger(__name__)


@contextmanager
def located_store(settings: Settings, data_dir: Path | None = None) -> Iterator[Settings]:
    """`settings` pointed at a store, for commands run beside the local stack (`soundstage models ...`).

    An endpoint in `settings` (SOUNDSTAGE_S3_ENDPOINT_URL, .env) wins. Otherwise the embedded store of
    the stack data dir `data_dir` (default: `default_data_dir()`): the running one, found through the
    state file it wrote, or, when none runs there, the last one, started on the same folder (same port and
    credentials) for the duration of the `with`. No state file there raises `EmbeddedS3Error`.
    """
    if settings.s3_endpoint_url is not None:
        yield settings
        return
    folder = store_dir(data_dir)
    state = read_state(folder)
    if state is None:
        raise EmbeddedS3Error(
            f"no store to use: SOUNDSTAGE_S3_ENDPOINT_URL is not set and no embedded store has run on "
            f"{folder} (start `soundstage serve` once, pass its --data-dir, or set the endpoint)"
        )
    if store_running(folder):
        yield state.apply(settings)
        return
    logger.info("starting the embedded store of %s for this command", folder)
    with EmbeddedS3(settings.model_copy(update={"s3_bucket": state.bucket}), data_dir=folder) as s3:
        yield s3.settings
