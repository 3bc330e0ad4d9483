"""The local stack's start-time watch: which deployment turned HEALTHY when, while the app deploys."""

from __future__ import annotations

import threading
import time

from deployments.serve_status import serve_status

HEALTH_POLL_S = 0.25  # how often Serve's status is read while the app deploys


class HealthWatch:
    """Reads Serve's status in a thread while the app deploys; records when each deployment turns HEALTHY."""

    def __init__(self) -> None:
        self.began = time.monotonic()
        self.healthy: dict[str, float] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="deploy-health-watch", daemon=True)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()
        self._poll()  # deployments that turned healthy since the last sample

    def _run(self) -> None:
        while not self._done.wait(HEALTH_POLL_S):
            self._poll()

    def _poll(self) -> None:
        try:
            applications = serve_status().applications
        except Exception:  # Serve's controller not up yet (or going away): sample again later
            return
        now = time.monotonic() - self.began
        for app_name, app in applications.items():
            for name, deployment in app.deployments.items():
                if deployment.status == "HEALTHY":  # a str enum
                    self.healthy.setdefault(f"{app_name}/{name}", now)
