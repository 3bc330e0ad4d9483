"""Every upload a job names belongs to the job's tenant, whichever field names it: the audio input, a
melody or continuation clip, a soundscape's bed, a voice conversion's instrumental. Checked at
admission with the job's owner (`Admission.owner`): another tenant's upload is 404 `upload_not_found`,
as if it did not exist. Before, only the request's `upload_id` was checked, at the edge. The store is
real (the embedded server over HTTP)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from infra.audio import encode
from infra.settings import Settings
from infra.storage import Storage
from infra.uploads import store_upload
from pipelines.engine.kinds import AdmissionError, JobKind
from pipelines.jobs.generation import MUSIC_KIND
from pipelines.jobs.pitch_shift import PITCH_SHIFT_KIND
from pipelines.jobs.soundscape import SOUNDSCAPE_KIND
from tests.pipelines.test_audio_jobs import admission, tone


def upload_of(storage: Storage, settings: Settings, owner: str) -> str:
    return store_upload(storage, encode(tone(2.0), "wav"), "tone.wav", settings, owner).upload_id


def admit_as(
    owner: str, storage: Storage, settings: Settings, kind: JobKind[Any], fields: dict[str, Any]
) -> Any:
    checked = dataclasses.replace(admission(storage, settings), owner=owner)
    return asyncio.run(kind.admit(kind.request.model_validate(fields), checked))  # type: ignore[arg-type]


CASES: dict[str, tuple[JobKind[Any], Any]] = {
    "pitch-shift input": (PITCH_SHIFT_KIND, lambda u: {"upload_id": u, "semitones": 2.0}),
    "music melody": (MUSIC_KIND, lambda u: {"prompt": "a riff", "duration_s": 2.0, "melody_upload_id": u}),
    "soundscape bed": (
        SOUNDSCAPE_KIND,
        lambda u: {
            "duration_s": 4.0,
            "layers": [{"prompt": "rain", "start_s": 0.0, "duration_s": 2.0}],
            "bed": {"upload_id": u},
        },
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_another_tenants_upload_is_not_found(storage: Storage, settings: Settings, case: str) -> None:
    kind, fields = CASES[case]
    theirs = upload_of(storage, settings, "key-b")
    with pytest.raises(AdmissionError) as refused:
        admit_as("key-a", storage, settings, kind, fields(theirs))
    assert (refused.value.status, refused.value.code) == (404, "upload_not_found")


def test_the_tenants_own_upload_is_admitted(storage: Storage, settings: Settings) -> None:
    mine = upload_of(storage, settings, "key-a")
    kind, fields = CASES["pitch-shift input"]
    assert admit_as("key-a", storage, settings, kind, fields(mine)).upload_id == mine
