"""pipelines/engine/stages.py `fingerprint`: what makes a checkpoint stale.

Before, the fingerprint hashed earlier stages' objects only, so a stage after one that commits only
facts (voice replacement's `diarize`, `transcribe`) could be restored from stale checkpoints, and a
code change to a job kind could not invalidate old checkpoints at all.
"""

from __future__ import annotations

from infra.jobs import StageRecord
from pipelines.engine.stages import fingerprint


def record(facts: dict[str, object], objects: dict[str, str] | None = None) -> StageRecord:
    return StageRecord(
        index=0,
        name="diarize",
        prefix="p/",
        manifest_key="p/manifest.json",
        fingerprint="f",
        objects=objects or {},
        facts=facts,
        duration_s=0.0,
        peak_memory_bytes=0,
        attempt=1,
    )


def test_an_earlier_stages_facts_join_the_fingerprint() -> None:
    speaker_00 = fingerprint("transcribe", "req", [record({"target": "SPEAKER_00"})])
    speaker_01 = fingerprint("transcribe", "req", [record({"target": "SPEAKER_01"})])
    assert speaker_00 != speaker_01
    assert speaker_00 == fingerprint("transcribe", "req", [record({"target": "SPEAKER_00"})])


def test_the_job_kinds_version_joins_the_fingerprint() -> None:
    earlier = [record({"target": "SPEAKER_00"}, {"a.wav": "0" * 64})]
    assert fingerprint("remix", "req", earlier, version=1) != fingerprint("remix", "req", earlier, version=2)
