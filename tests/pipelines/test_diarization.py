"""Diarization: the pure joins on synthetic embeddings and turns, then one end-to-end run with the real
VAD and speaker encoder on a two-voice TTS dialog.

Synthetic embeddings mimic Resemblyzer's geometry: unit vectors whose cosine similarity is about 0.8
within a speaker and 0.5 between speakers (measured on TTS speech: 0.67-0.98 and 0.43-0.60).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import numpy.typing as npt
import pytest
import torch

from infra.audio import Audio
from infra.dsp.diarization import (
    cluster_embeddings,
    diarize,
    estimate_num_speakers,
    speech_time_accuracy,
    windows_to_turns,
)
from infra.dsp.regions import SpeechRegion, Turn
from infra.dsp.vocoder import shift_pitch
from models.speaker import SpeakerEncoder
from models.tts import StockTTS
from models.vad import VoiceActivityDetector


def speaker_clusters(
    sizes: list[int], seed: int = 0, between: float = 0.5, within: float = 0.8, dim: int = 256
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Unit embeddings `[sum(sizes), dim]` in clusters of `sizes`, and their true labels."""
    rng = np.random.default_rng(seed)

    def unit(v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    base = unit(rng.normal(size=dim))
    points, labels = [], []
    for label, size in enumerate(sizes):
        offset = rng.normal(size=dim)
        centre = np.sqrt(between) * base + np.sqrt(1 - between) * unit(offset - (offset @ base) * base)
        noise = unit(rng.normal(size=(size, dim)))
        points.append(unit(np.sqrt(within) * centre + np.sqrt(1 - within) * noise))
        labels += [label] * size
    return np.concatenate(points), np.array(labels)


def same_partition(a: npt.NDArray[np.int64], b: npt.NDArray[np.int64]) -> bool:
    """Whether two labellings group the items identically (whatever the label values)."""
    return bool(np.array_equal(a[:, None] == a[None, :], b[:, None] == b[None, :]))


# --- cluster_embeddings -------------------------------------------------------------------------------


def test_clusters_get_their_labels_back() -> None:
    x, truth = speaker_clusters([15, 10, 20], seed=1)
    order = np.random.default_rng(2).permutation(len(truth))
    labels = cluster_embeddings(x[order], num_speakers=3)
    assert labels.shape == (45,) and labels.dtype == np.int64
    assert same_partition(labels, truth[order])
    # Labels are numbered in order of first appearance.
    _, first = np.unique(labels, return_index=True)
    assert list(labels[np.sort(first)]) == [0, 1, 2]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(
    "sizes", [[24], [20, 14], [15, 12, 18]], ids=["1-speaker", "2-speakers", "3-speakers"]
)
def test_estimates_the_number_of_speakers(sizes: list[int], seed: int) -> None:
    x, truth = speaker_clusters(sizes, seed=seed)
    assert estimate_num_speakers(x) == len(sizes)
    assert same_partition(cluster_embeddings(x), truth)


def test_one_speaker_when_tiny_or_all_alike() -> None:
    far_apart = np.eye(3)  # orthogonal, but only 3 windows: too little evidence to split
    np.testing.assert_array_equal(cluster_embeddings(far_apart), [0, 0, 0])
    identical = np.tile(np.abs(np.random.default_rng(0).normal(size=256)), (12, 1))
    np.testing.assert_array_equal(cluster_embeddings(identical), np.zeros(12))
    assert cluster_embeddings(np.zeros((0, 256))).shape == (0,)
    assert estimate_num_speakers(np.zeros((0, 256))) == 0


def test_given_number_of_speakers_is_honoured() -> None:
    x, _ = speaker_clusters([10, 10], seed=3)
    np.testing.assert_array_equal(cluster_embeddings(x, num_speakers=1), np.zeros(20))
    np.testing.assert_array_equal(cluster_embeddings(x[:3], num_speakers=5), [0, 1, 2])
    assert len(set(cluster_embeddings(x, num_speakers=4).tolist())) == 4


def test_max_speakers_caps_the_estimate() -> None:
    x, _ = speaker_clusters([12, 12, 12], seed=4)
    assert estimate_num_speakers(x, max_speakers=2) <= 2


@pytest.mark.parametrize(
    ("embeddings", "kwargs"),
    [
        (np.ones(256), {}),
        (np.full((5, 4), np.nan), {}),
        (np.ones((5, 4)), {"num_speakers": 0}),
        (np.ones((5, 4)), {"max_speakers": 0}),
        (np.ones((5, 4)), {"min_neighbours": 0}),
    ],
)
def test_invalid_clustering_input(embeddings: npt.NDArray[np.float64], kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        cluster_embeddings(embeddings, **kwargs)


# --- windows_to_turns ---------------------------------------------------------------------------------


def test_majority_of_covering_windows_wins() -> None:
    """Three windows cover [1.0, 1.5): two say 0, one says 1; window 1's centre is nearest but loses."""
    windows = [(0.0, 1.5), (0.5, 2.0), (1.0, 1.5)]
    turns = windows_to_turns(windows, np.array([0, 0, 1]), [SpeechRegion(0.0, 2.0)])
    assert turns == [Turn(0.0, 2.0, "SPEAKER_00")]


def test_ties_go_to_the_nearest_window_centre() -> None:
    """[1, 2) is covered by both windows (labels differ): the boundary is at 1.6, halfway between the
    centres 1.0 and 2.2."""
    windows = [(0.0, 2.0), (1.0, 3.4)]
    turns = windows_to_turns(windows, np.array([1, 0]), [SpeechRegion(0.0, 3.4)])
    assert turns == [Turn(0.0, 1.6, "SPEAKER_00"), Turn(1.6, 3.4, "SPEAKER_01")]


def test_uncovered_speech_takes_the_nearest_window() -> None:
    """Windows at both ends of a 10 s region (centres 1 s and 9 s): the middle splits at 5 s. A region
    with no window of its own takes the label of the nearest window anywhere."""
    windows = [(0.0, 2.0), (8.0, 10.0)]
    regions = [SpeechRegion(0.0, 10.0), SpeechRegion(10.5, 10.8)]
    turns = windows_to_turns(windows, np.array([3, 7]), regions)
    assert turns == [
        Turn(0.0, 5.0, "SPEAKER_00"),
        Turn(5.0, 10.0, "SPEAKER_01"),
        Turn(10.5, 10.8, "SPEAKER_01"),
    ]


def test_turns_merge_only_where_they_touch_and_never_cover_silence() -> None:
    windows = [(0.0, 1.0), (1.0, 2.0), (2.5, 3.5)]
    regions = [SpeechRegion(0.0, 1.0), SpeechRegion(1.0, 2.0), SpeechRegion(2.5, 3.5)]
    turns = windows_to_turns(windows, np.array([4, 4, 4]), regions)
    assert turns == [Turn(0.0, 2.0, "SPEAKER_00"), Turn(2.5, 3.5, "SPEAKER_00")]


def test_turns_are_ordered_and_named_by_first_appearance() -> None:
    windows = [(5.0, 6.0), (0.0, 1.0), (2.0, 3.0)]
    regions = [SpeechRegion(5.0, 6.0), SpeechRegion(0.0, 1.0), SpeechRegion(2.0, 3.0)]
    turns = windows_to_turns(windows, np.array([9, 2, 9]), regions)
    assert turns == [Turn(0.0, 1.0, "SPEAKER_00"), Turn(2.0, 3.0, "SPEAKER_01"), Turn(5.0, 6.0, "SPEAKER_01")]


def test_overlapping_regions_are_joined() -> None:
    turns = windows_to_turns([(0.0, 1.0)], np.array([0]), [SpeechRegion(0.0, 1.0), SpeechRegion(0.5, 2.0)])
    assert turns == [Turn(0.0, 2.0, "SPEAKER_00")]


def test_windows_to_turns_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="labels"):
        windows_to_turns([(0.0, 1.0)], np.array([0, 1]), [SpeechRegion(0.0, 1.0)])
    with pytest.raises(ValueError, match="no labelled windows"):
        windows_to_turns([], np.array([], np.int64), [SpeechRegion(0.0, 1.0)])
    with pytest.raises(ValueError, match="start < end"):
        windows_to_turns([(1.0, 1.0)], np.array([0]), [SpeechRegion(0.0, 1.0)])
    assert windows_to_turns([], np.array([], np.int64), []) == []


def test_diarize_without_windows_is_one_speaker() -> None:
    regions = [SpeechRegion(0.0, 0.3), SpeechRegion(1.0, 1.4)]
    turns = diarize(regions, np.zeros((0, 256)), [])
    assert turns == [Turn(0.0, 0.3, "SPEAKER_00"), Turn(1.0, 1.4, "SPEAKER_00")]
    with pytest.raises(ValueError, match="windows"):
        diarize(regions, np.ones((2, 256)), [(0.0, 0.3)])


def test_diarize_synthetic_dialog() -> None:
    """Four 3 s turns A B A B, each embedded as 3 windows (1.5 s every 0.75 s)."""
    x, _ = speaker_clusters([6, 6], seed=5)
    regions = [SpeechRegion(3.5 * k, 3.5 * k + 3.0) for k in range(4)]
    windows = [(r.start + 0.75 * j, r.start + 0.75 * j + 1.5) for r in regions for j in range(3)]
    embeddings = np.concatenate([x[0:3], x[6:9], x[3:6], x[9:12]])
    expected = [Turn(r.start, r.end, f"SPEAKER_0{k % 2}") for k, r in enumerate(regions)]
    assert diarize(regions, embeddings, windows, num_speakers=2) == expected
    assert diarize(regions, embeddings, windows) == expected


# --- speech_time_accuracy -----------------------------------------------------------------------------

REFERENCE = [Turn(0.0, 10.0, "alice"), Turn(10.0, 20.0, "bob")]


def test_accuracy_is_one_for_a_relabelled_perfect_hypothesis() -> None:
    assert speech_time_accuracy(REFERENCE, REFERENCE) == 1.0
    renamed = [Turn(0.0, 10.0, "SPEAKER_01"), Turn(10.0, 20.0, "SPEAKER_00")]
    assert speech_time_accuracy(REFERENCE, renamed) == 1.0


def test_accuracy_counts_time_under_the_best_mapping() -> None:
    late_change = [Turn(0.0, 12.0, "X"), Turn(12.0, 20.0, "Y")]
    assert speech_time_accuracy(REFERENCE, late_change) == pytest.approx(0.9)
    one_speaker = [Turn(0.0, 20.0, "X")]
    assert speech_time_accuracy(REFERENCE, one_speaker) == pytest.approx(0.5)
    split_alice = [Turn(0.0, 6.0, "X"), Turn(6.0, 10.0, "Y"), Turn(10.0, 20.0, "Z")]
    assert speech_time_accuracy(REFERENCE, split_alice) == pytest.approx(0.8)
    missed = [Turn(0.0, 5.0, "X")]
    assert speech_time_accuracy(REFERENCE, missed) == pytest.approx(0.25)


def test_accuracy_does_not_count_overlapping_turns_twice() -> None:
    doubled = [Turn(0.0, 6.0, "X"), Turn(0.0, 6.0, "X"), Turn(3.0, 8.0, "X")]
    assert speech_time_accuracy([Turn(0.0, 10.0, "alice")], doubled) == pytest.approx(0.8)


def test_accuracy_edge_cases() -> None:
    assert speech_time_accuracy(REFERENCE, []) == 0.0
    with pytest.raises(ValueError, match="no speech"):
        speech_time_accuracy([], REFERENCE)


# --- end to end with the real models ------------------------------------------------------------------

DIALOG = (
    ("A", "Good morning, did you manage to finish the quarterly report?"),
    ("B", "Almost, I still need the numbers from the sales team."),
    ("A", "They promised to send them before lunch today."),
    ("B", "Great, then I can wrap it up this afternoon."),
    ("A", "Do you want me to review the draft when it is ready?"),
    ("B", "Yes please, a second pair of eyes would really help."),
    ("A", "No problem, just send it over whenever you like."),
    ("B", "Thanks, I will let you know as soon as it is done."),
)
PAUSES_S = (0.6, 0.5, 0.7, 0.5, 0.6, 0.8, 0.5, 0.6)
SEMITONES_B = -6.0


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """The speaker encoder's LSTM runs single-threaded, as in deployments (see models/speaker.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dialog() -> tuple[Audio, list[Turn]]:
    """Eight alternating lines (24 kHz, ~25 s): A is hibari's bundled `heart` voice, B the same voice
    shifted down 6 semitones without formant preservation (F0 and formants x0.71: another, larger vocal
    tract). Each line is trimmed to its speech (10 ms frames above -40 dBFS) and followed by a 0.5-0.8 s
    pause; the reference turns are those trimmed spans."""
    tts = StockTTS.from_pretrained()
    rate = tts.sample_rate
    clips = tts.synthesize([text for _, text in DIALOG])
    parts, reference, position = [np.zeros(rate // 2, np.float32)], [], rate // 2
    for (speaker, _), clip, pause in zip(DIALOG, clips, PAUSES_S, strict=True):
        voiced = shift_pitch(clip, SEMITONES_B, preserve_formants=False) if speaker == "B" else clip
        speech = trim_to_speech(voiced.samples[0], rate)
        reference.append(Turn(position / rate, (position + speech.size) / rate, speaker))
        gap = np.zeros(round(pause * rate), np.float32)
        parts += [speech, gap]
        position += speech.size + gap.size
    return Audio(np.concatenate(parts)[np.newaxis, :], rate), reference


def trim_to_speech(wave: npt.NDArray[np.float32], rate: int) -> npt.NDArray[np.float32]:
    frame = rate // 100
    n = wave.size // frame
    loud = np.flatnonzero(np.abs(wave[: n * frame]).reshape(n, frame).max(axis=1) >= 0.01)
    return wave[int(loud[0]) * frame : (int(loud[-1]) + 1) * frame]


@pytest.fixture(scope="module")
def dialog_windows(
    dialog: tuple[Audio, list[Turn]],
) -> tuple[list[SpeechRegion], npt.NDArray[np.float32], list[tuple[float, float]]]:
    """VAD regions of the dialog, and the speaker embeddings of windows inside them."""
    audio, _ = dialog
    regions = VoiceActivityDetector.from_pretrained().detect(audio)
    embeddings, windows = SpeakerEncoder.from_pretrained(device="cpu").embed_windows(audio, regions)
    return regions, embeddings, windows


@pytest.mark.parametrize("num_speakers", [2, None], ids=["given", "estimated"])
def test_two_speaker_dialog_end_to_end(
    dialog: tuple[Audio, list[Turn]],
    dialog_windows: tuple[list[SpeechRegion], npt.NDArray[np.float32], list[tuple[float, float]]],
    num_speakers: int | None,
    record_property: Callable[[str, object], None],
) -> None:
    _, reference = dialog
    regions, embeddings, windows = dialog_windows
    turns = diarize(regions, embeddings, windows, num_speakers=num_speakers)
    accuracy = speech_time_accuracy(reference, turns)
    record_property("speech_time_accuracy", accuracy)
    assert accuracy >= 0.9, (accuracy, turns)  # measured: 1.000 both ways
    assert {t.speaker for t in turns} == {"SPEAKER_00", "SPEAKER_01"}
    assert len(turns) >= 6
    for turn in turns:  # never outside speech
        assert any(r.start <= turn.start and turn.end <= r.end for r in regions), turn


def test_one_voice_alone_is_one_speaker(
    dialog: tuple[Audio, list[Turn]],
    dialog_windows: tuple[list[SpeechRegion], npt.NDArray[np.float32], list[tuple[float, float]]],
) -> None:
    """The windows of either voice alone (4 lines, ~12 windows) are estimated as a single speaker."""
    _, reference = dialog
    _, embeddings, windows = dialog_windows
    centres = np.array([(s + e) / 2 for s, e in windows])
    for voice in ("A", "B"):
        mine = np.zeros(len(windows), bool)
        for turn in reference:
            if turn.speaker == voice:
                mine |= (centres >= turn.start) & (centres <= turn.end)
        assert mine.sum() >= 8
        assert estimate_num_speakers(embeddings[mine]) == 1
