"""Every job kind, by name: what the JobRunner executes and what the HTTP jobs router offers.

Adding a job kind: one module under `pipelines/jobs/` that defines its `JobKind`, and one line here.
"""

from __future__ import annotations

from typing import Any

from pipelines.engine.kinds import JobKind
from pipelines.jobs.diarize import DIARIZE_KIND
from pipelines.jobs.generation import MUSIC_KIND, SFX_KIND
from pipelines.jobs.loop import LOOP_KIND
from pipelines.jobs.pitch_shift import PITCH_SHIFT_KIND
from pipelines.jobs.separation import SEPARATE_KIND
from pipelines.jobs.soundscape import SOUNDSCAPE_KIND
from pipelines.jobs.voice_convert import VOICE_CONVERT_KIND
from pipelines.jobs.voice_replace import VOICE_REPLACE_KIND

JOB_KINDS: dict[str, JobKind[Any]] = {
    kind.name: kind
    for kind in (
        MUSIC_KIND,
        SFX_KIND,
        SEPARATE_KIND,
        LOOP_KIND,
        PITCH_SHIFT_KIND,
        VOICE_REPLACE_KIND,
        DIARIZE_KIND,
        VOICE_CONVERT_KIND,
        SOUNDSCAPE_KIND,
    )
}
