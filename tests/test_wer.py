import pytest

from tests.wer import normalize_words, word_error_rate


def test_identical_text_scores_zero() -> None:
    assert word_error_rate("the cat sat", "the cat sat") == 0.0


def test_case_and_punctuation_are_ignored() -> None:
    assert word_error_rate("Hello, World! Don't stop.", "hello world dont stop") == 0.0
    assert normalize_words("Well-known \u201cquotes\u201d: it\u2019s fine.") == [
        "well",
        "known",
        "quotes",
        "its",
        "fine",
    ]


@pytest.mark.parametrize(
    ("hypothesis", "expected"),
    [
        ("the dog sat down", 0.25),  # one substitution
        ("the cat down", 0.25),  # one deletion
        ("the cat sat right down", 0.25),  # one insertion
        ("cat the sat down", 0.5),  # a swap is two edits
        ("", 1.0),  # everything deleted
        ("a b c d e f g h", 2.0),  # eight substitutions or insertions against four words
    ],
)
def test_edit_counts(hypothesis: str, expected: float) -> None:
    assert word_error_rate("the cat sat down", hypothesis) == pytest.approx(expected)


def test_empty_reference_is_an_error() -> None:
    with pytest.raises(ValueError, match="empty reference"):
        word_error_rate(" ... ", "words")
