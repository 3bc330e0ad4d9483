"""`serve.status()`, one call at a time per process.

Ray 2.60's `serve.status()` builds its answer by registering, then unregistering, the autoscaling
policy's module with cloudpickle, so two threads asking at once make one of them fail (`ValueError: ...
is not registered for pickle by value`; seen when the local stack's start-time watch and its deploy wait
asked together). Every caller in this process (the warmth cache of a replica, the tools' deploy wait and
start-time watch) goes through here.
"""

from __future__ import annotations

import threading
from typing import Any

_STATUS_LOCK = threading.Lock()


def serve_status() -> Any:
    """`serve.status()` (a `ServeStatus`), serialised with every other caller in this process."""
    from ray import serve

    with _STATUS_LOCK:
        return serve.status()
