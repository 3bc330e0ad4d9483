"""Word error rate for checking ASR output against the text that was spoken."""

from __future__ import annotations

import re

_APOSTROPHES = re.compile("['`\u2018\u2019]")
_NOT_WORD = re.compile(r"[^\w\s]|_")


def normalize_words(text: str) -> list[str]:
    """Lower-case words with punctuation dropped: apostrophes join (`don't` -> `dont`), other marks split."""
    text = _APOSTROPHES.sub("", text.lower())
    return _NOT_WORD.sub(" ", text).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words, after `normalize_words` on both.

    Word-level Levenshtein distance; can exceed 1.0 when the hypothesis has many extra words.
    Raises `ValueError` for a reference with no words (the rate is undefined).
    """
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    if not ref:
        raise ValueError("word error rate is undefined for an empty reference")
    previous = list(range(len(hyp) + 1))  # distances from ref[:0] to every prefix of hyp
    for i, ref_word in enumerate(ref, start=1):
        current = [i]
        for j, hyp_word in enumerate(hyp, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_word != hyp_word)))
        previous = current
    return previous[-1] / len(ref)
