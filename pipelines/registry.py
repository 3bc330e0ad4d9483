"""Job kind → its stages: what the JobRunner executes."""

from __future__ import annotations

from pipelines.diarize_job import DIARIZE_JOB, DIARIZE_STAGES
from pipelines.generation import GENERATION_STAGES, MUSIC_JOB, SFX_JOB
from pipelines.loop import LOOP_JOB, LOOP_STAGES
from pipelines.pitch_shift import PITCH_SHIFT_JOB, PITCH_SHIFT_STAGES
from pipelines.separation import SEPARATE_JOB, SEPARATION_STAGES
from pipelines.stages import Stage
from pipelines.voice_replace import VOICE_REPLACE_JOB, VOICE_REPLACE_STAGES

PIPELINES: dict[str, tuple[Stage, ...]] = {
    MUSIC_JOB: GENERATION_STAGES,
    SFX_JOB: GENERATION_STAGES,
    SEPARATE_JOB: SEPARATION_STAGES,
    PITCH_SHIFT_JOB: PITCH_SHIFT_STAGES,
    DIARIZE_JOB: DIARIZE_STAGES,
    LOOP_JOB: LOOP_STAGES,
    VOICE_REPLACE_JOB: VOICE_REPLACE_STAGES,
}
