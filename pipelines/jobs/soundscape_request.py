"""What a soundscape job asks for: the layers (each a prompt placed on the timeline), an optional bed,
the mastering targets. Every number is finite and every layer lies within the soundscape; the limits
that depend on the settings or on a model (one clip's length) are checked at admission
(`pipelines/jobs/soundscape.py`)."""

from __future__ import annotations

import hashlib
import secrets
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from infra.audio import AudioFormat

SOUNDSCAPE_JOB = "soundscape"
MAX_SOUNDSCAPE_S = 300.0
MAX_LAYERS = 16
SEED_LIMIT = 2**31
Prompt = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
UploadId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
LayerModel = Literal["audiogen", "stable-audio"]
GainDb = Annotated[float, Field(ge=-60.0, le=12.0, description="Level of the layer in the mix (dB).")]
_FINITE = ConfigDict(extra="forbid", allow_inf_nan=False)


class SoundscapeLayer(BaseModel):
    """One sound on the timeline: generated from `prompt`, playing from `start_s` for `duration_s`."""

    model_config = _FINITE

    prompt: Prompt = Field(examples=["a dog barks twice"])
    start_s: float = Field(ge=0.0, description="Where the layer starts in the soundscape (s).")
    duration_s: float = Field(gt=0.0, description="How long it plays (s); start_s + duration_s ≤ the total.")
    gain_db: GainDb = 0.0
    loop: bool = Field(
        default=False,
        description="Repeat a generated clip of `clip_s` seconds (seamlessly) to fill `duration_s`; "
        "without, the layer is one clip of `duration_s`.",
    )
    clip_s: float | None = Field(
        default=None,
        gt=0.0,
        description="With `loop`: the length of the clip that repeats (default: `duration_s`, capped at "
        "the generation limit).",
    )
    model: LayerModel | None = Field(default=None, description="Overrides the job's `model`.")
    seed: int | None = Field(
        default=None, ge=0, lt=SEED_LIMIT, description="Default: derived from the job's."
    )

    @model_validator(mode="after")
    def _clip_needs_loop(self) -> Self:
        if self.clip_s is not None and not self.loop:
            raise ValueError("clip_s needs loop: true (without a loop the clip lasts duration_s)")
        if self.clip_s is not None and self.clip_s > self.duration_s:
            raise ValueError(f"clip_s {self.clip_s:g} exceeds duration_s {self.duration_s:g}")
        return self


class SoundscapeBed(BaseModel):
    """The ground under the layers, over the whole soundscape: generated from `prompt` (looped to fill)
    or an uploaded clip (`upload_id`, looped when shorter, cut when longer). Exactly one of the two."""

    model_config = _FINITE

    prompt: Prompt | None = None
    upload_id: UploadId | None = None
    gain_db: GainDb = 0.0
    model: LayerModel | None = Field(default=None, description="For a prompt; overrides the job's `model`.")
    clip_s: float | None = Field(
        default=None,
        gt=0.0,
        description="For a prompt: the length of the generated clip that repeats under the whole "
        "soundscape (default: the soundscape's duration, capped at the generation limit).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.prompt is None) == (self.upload_id is None):
            raise ValueError("a bed is either a prompt or an upload_id: send exactly one")
        if self.upload_id is not None and (self.clip_s is not None or self.model is not None):
            raise ValueError("clip_s and model are for a prompt bed, not an upload")
        return self


class SoundscapeJobRequest(BaseModel):
    """`POST /v1/jobs/soundscape`: layers generated concurrently over the AudioGen / Stable Audio
    replicas, placed on the timeline, mixed over the bed and mastered."""

    model_config = _FINITE

    duration_s: float = Field(gt=0.0, le=MAX_SOUNDSCAPE_S, description="Length of the soundscape (s).")
    layers: list[SoundscapeLayer] = Field(min_length=1, max_length=MAX_LAYERS)
    bed: SoundscapeBed | None = None
    model: LayerModel = Field(default="audiogen", description="The generator of every layer without one.")
    seed: int | None = Field(default=None, ge=0, lt=SEED_LIMIT, description="Fixed at admission if absent.")
    format: AudioFormat = "wav"
    loudness_lufs: float | None = Field(
        default=-14.0, ge=-70.0, le=0.0, description="Loudness of the mix (LUFS); null keeps the level."
    )
    true_peak_db: float = Field(default=-1.0, ge=-20.0, le=0.0, description="True-peak ceiling (dBTP).")

    @model_validator(mode="after")
    def _layers_fit(self) -> Self:
        for i, layer in enumerate(self.layers):
            end = layer.start_s + layer.duration_s
            if end > self.duration_s + 1e-9:
                raise ValueError(
                    f"layers.{i}.duration_s: the layer ends at {end:g} s (start_s {layer.start_s:g} + "
                    f"duration_s {layer.duration_s:g}), after the soundscape's duration_s {self.duration_s:g}"
                )
        if self.bed is not None and self.bed.clip_s is not None and self.bed.clip_s > self.duration_s:
            raise ValueError(f"bed.clip_s {self.bed.clip_s:g} exceeds duration_s {self.duration_s:g}")
        return self

    def with_seed(self) -> Self:
        """Fix the seed at admission, so a resumed job regenerates the same layers."""
        if self.seed is not None:
            return self
        return self.model_copy(update={"seed": secrets.randbelow(SEED_LIMIT)})

    def layer_seed(self, index: int) -> int:
        """Layer `index`'s seed: its own, else a hash of the job's (the bed is index `len(layers)`)."""
        own = self.layers[index].seed if index < len(self.layers) else None
        if own is not None:
            return own
        if self.seed is None:
            raise ValueError("the request has no seed: admission fixes it before the job exists")
        digest = hashlib.blake2b(f"soundstage-soundscape/{self.seed}/{index}".encode(), digest_size=8)
        return int.from_bytes(digest.digest(), "big") % SEED_LIMIT
