"""Stem arithmetic that needs no model: the two-stem view of a separation."""

from __future__ import annotations

import numpy as np

from infra.audio import Audio


def two_stems(stems: dict[str, Audio], keep: str = "vocals") -> dict[str, Audio]:
    """The two-stem (e.g. vocals / instrumental) view: `{keep: stems[keep], f"no_{keep}": sum of the others}`.

    All stems must share shape `[C, T]` and sample rate. Raises `ValueError` otherwise or if `keep` is absent.
    """
    if keep not in stems or len(stems) < 2:
        raise ValueError(f"keep={keep!r} must be one of at least two stems, got {sorted(stems)}")
    kept = stems[keep]
    others = [audio for name, audio in stems.items() if name != keep]
    for audio in others:
        if audio.samples.shape != kept.samples.shape or audio.sample_rate != kept.sample_rate:
            raise ValueError("stems differ in shape or sample rate; they must come from one separation")
    rest = np.zeros_like(kept.samples)
    for audio in others:
        rest += audio.samples
    return {keep: kept, f"no_{keep}": Audio(rest, kept.sample_rate)}
