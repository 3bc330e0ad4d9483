"""Property-based fuzzing of the whole HTTP app (schemathesis over its own OpenAPI, in-process, on the
real embedded S3 store): whatever a client sends to any operation, the answer is never a 5xx.

Model clients are doubles that answer every call plausibly, so a 5xx can only come from the edge itself;
the runner is a double too (jobs are admitted and recorded, not run).
The examples per operation are bounded (`FUZZ_EXAMPLES`) so the sweep fits the CI budget (~1 min).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from deployments.http.api import build_http_app
from deployments.http.services import Services
from infra.audio import Audio
from infra.dsp.regions import SpeechRegion, Turn
from infra.jobs import JobStore
from infra.settings import Settings
from infra.storage import Storage
from models.types import ModelInfo, PitchContour, Transcript
from pipelines.engine.clients import ModelCard, Models
from tests.deployments.http.conftest import RecordingRunner

FUZZ_EXAMPLES = 15
SERVE_ONLY = {"/v1/deployments"}


class AnyModel:
    """Double of every model client: a card, a tone, an empty transcript, no turns, regions or stems."""

    def __init__(self, deployment: str) -> None:
        self.deployment = deployment

    async def info(self) -> ModelCard:
        model = ModelInfo(f"fake/{self.deployment.lower()}", "r1", "debug-random")
        extra = {"max_duration_s": 47.0} if self.deployment == "stable_audio" else {}  # as StableAudio's
        return ModelCard(deployment=self.deployment, model=model, sample_rate=8000, extra=extra)

    async def voices(self) -> list[str]:
        return ["alloy"]

    async def synthesize(self, **_: Any) -> Audio:
        return Audio(np.full((1, 800), 0.1, dtype=np.float32), 8000)

    async def transcribe(self, *, audio: Audio, **_: Any) -> Transcript:
        return Transcript(language="en", language_probability=1.0, duration_s=audio.duration_s, segments=())

    async def diarize(self, **_: Any) -> list[Turn]:
        return []

    async def separate(self, *, audio: Audio) -> dict[str, Audio]:
        return {"vocals": audio}

    async def shift(self, *, audio: Audio, **_: Any) -> Audio:
        return audio


class AnyPitch(AnyModel):
    async def detect(self, **_: Any) -> PitchContour:
        empty = np.zeros(0, dtype=np.float64)
        return PitchContour(empty, empty, empty, np.zeros(0, dtype=bool), 0.016)


class AnyVAD(AnyModel):
    async def detect(self, **_: Any) -> list[SpeechRegion]:
        return []


@pytest.fixture
def app_schema(settings: Settings, storage: Storage) -> Any:
    """The app's OpenAPI, called in-process (ASGI) over the session's store."""
    clients: dict[str, Any] = {name: AnyModel(name) for name in Models.__dataclass_fields__}
    clients |= {"pitch": AnyPitch("pitch"), "vad": AnyVAD("vad")}
    services = Services(settings, storage, JobStore(storage), Models(**clients), RecordingRunner())
    return schemathesis.openapi.from_asgi("/openapi.json", build_http_app(services))


def test_no_operation_answers_5xx(app_schema: Any) -> None:
    # The operations are walked here, not through schemathesis' pytest plugin (it does not load
    # under pytest 9); each gets its own bounded hypothesis run.
    operations = [result.ok() for result in app_schema.get_all_operations()]
    # The replica table is the Serve controller's view: there is none in-process (the Ray tests cover it).
    operations = [op for op in operations if op.path not in SERVE_ONLY]
    assert len(operations) > 20  # the whole API, not an empty schema
    failures: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=FUZZ_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def no_server_error(case: Any) -> None:
            where = f"{case.method} {case.formatted_path}"
            try:
                response = case.call()
            except Exception as e:  # an exception out of the app is what a client sees as a 500
                raise AssertionError(f"{where}: {type(e).__name__}: {e}") from e
            assert response.status_code < 500, f"{where}: {response.status_code} {response.text[:200]}"

        try:
            no_server_error()
        except AssertionError as e:
            failures.append(str(e).splitlines()[0])
    assert not failures, failures
