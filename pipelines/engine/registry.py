"""Job kind → its stages: what the JobRunner executes."""

from __future__ import annotations

from pipelines.engine.stages import Stage
from pipelines.jobs.diarize import DIARIZE_JOB, DIARIZE_STAGES
from pipelines.jobs.generation import GENERATION_STAGES, MUSIC_JOB, SFX_JOB
from pipelines.jobs.loop import LOOP_JOB, LOOP_STAGES
from pipelines.jobs.pitch_shift import PITCH_SHIFT_JOB, PITCH_SHIFT_STAGES
from pipelines.jobs.separation import SEPARATE_JOB, SEPARATION_STAGES
from pipelines.jobs.voice_replace import VOICE_REPLACE_JOB, VOICE_REPLACE_STAGES

PIPELINES: dict[str, tuple[Stage, ...]] = {
    MUSIC_JOB: GENERATION_STAGES,
    SFX_JOB: GENERATION_STAGES,
    SEPARATE_JOB: SEPARATION_STAGES,
    PITCH_SHIFT_JOB: PITCH_SHIFT_STAGES,
    DIARIZE_JOB: DIARIZE_STAGES,
    LOOP_JOB: LOOP_STAGES,
    VOICE_REPLACE_JOB: VOICE_REPLACE_STAGES,
}
