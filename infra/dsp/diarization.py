"""Speaker diarization, the model-free part: cluster window embeddings, turn labelled windows into speaker
turns, and score turns against a reference.

The models run before this (`models.vad` finds speech regions, `models.speaker` embeds windows inside
them); `diarize` joins their outputs into `Turn`s.

Clustering (`cluster_embeddings`) is spectral clustering (scikit-learn) on a pruned cosine affinity, with
the number of speakers, when not given, found by the eigengap of the affinity's normalised Laplacian.
The pruning and the estimate follow NME-SC (Park et al., "Auto-Tuning Spectral Clustering for Speaker
Diarization Using Normalized Maximum Eigengap", IEEE SPL 2020): each window keeps only its `p` most
similar windows as neighbours (binary edges, symmetrised by union), and `p` is the candidate that minimises
`p / max_eigengap`, i.e. the sparsest graph whose cluster structure is clearest. A single speaker shows
as a connected graph whose largest gap is the first one (lambda_1 - lambda_0).
Cost: one eigenvalue problem per candidate p (at most 20); 200 windows (2.5 min of speech at the
default 0.75 s hop) cluster in about a second, 1000 windows in a few seconds.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy.linalg import eigh
from scipy.optimize import linear_sum_assignment
from scipy.sparse.linalg import eigsh

from infra.dsp.regions import SpeechRegion, Turn

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
# Below this many windows there is too little evidence to split speakers: one speaker is returned.
MIN_WINDOWS_TO_ESTIMATE = 4
# Candidate neighbour counts p: from `min_neighbours` up to half the windows, at most 20 candidates.
# The lower bound matters: windows that share audio (1.5 s every 0.75 s overlap their two neighbours by
# half) have near-duplicate embeddings, so each utterance forms a tight clique of ~3 windows, and a graph
# with fewer neighbours than that cuts every speaker into its utterances.
DEFAULT_MIN_NEIGHBOURS = 3
_MAX_NEIGHBOUR_FRACTION = 0.5
# Embeddings this similar (cosine) to each other all are one speaker, whatever the graph says.
_ALL_SIMILAR_COSINE = 0.99
_MAX_CANDIDATES = 20
# Weight of the raw cosine affinity mixed into the pruned graph before clustering: keeps the graph
# connected (scikit-learn warns on disconnected graphs) without changing its cluster structure.
_CONNECTING_WEIGHT = 1e-3
# Above this many windows the Laplacian's few smallest eigenvalues come from Lanczos, not a dense solver.
_DENSE_EIGEN_LIMIT = 300
RESOLUTION_S = 0.01  # time step at which `windows_to_turns` labels speech


def cluster_embeddings(
    embeddings: npt.ArrayLike,
    num_speakers: int | None = None,
    max_speakers: int = 8,
    *,
    min_neighbours: int = DEFAULT_MIN_NEIGHBOURS,
) -> IntArray:
    """Speaker labels `[N]` (0, 1, ... in order of first appearance) for embeddings `[N, D]`.

    num_speakers: the number of clusters when known (at most N are used); otherwise it is estimated
    between 1 and `max_speakers` (default 8) by the eigengap (module docstring). One speaker when the
    number is not given and there are fewer than `MIN_WINDOWS_TO_ESTIMATE` (4) embeddings or all of
    them are near-duplicates (pairwise cosine >= 0.99).
    min_neighbours: the sparsest neighbour graph tried (default 3); keep it above the number of other
    windows that share audio with a window (`diarize` derives it from the windows).
    The estimate needs some evidence: with fewer than ~10 windows per speaker, pass `num_speakers`.
    """
    x = _check_embeddings(embeddings)
    if num_speakers is not None and num_speakers < 1:
        raise ValueError(f"num_speakers must be at least 1, got {num_speakers}")
    if max_speakers < 1:
        raise ValueError(f"max_speakers must be at least 1, got {max_speakers}")
    if min_neighbours < 1:
        raise ValueError(f"min_neighbours must be at least 1, got {min_neighbours}")
    n = x.shape[0]
    if n == 0:
        return np.zeros(0, np.int64)
    if (num_speakers is None and n < MIN_WINDOWS_TO_ESTIMATE) or num_speakers == 1:
        return np.zeros(n, np.int64)
    if num_speakers is not None and num_speakers >= n:
        return np.arange(n, dtype=np.int64)
    similarity = _cosine_similarity(x)
    if num_speakers is None and similarity.min() >= _ALL_SIMILAR_COSINE:
        return np.zeros(n, np.int64)
    affinity, k = _pruned_affinity(similarity, num_speakers, max_speakers, min_neighbours)
    if k == 1:
        return np.zeros(n, np.int64)
    return _first_appearance_order(_spectral_labels(affinity + _CONNECTING_WEIGHT * similarity, k))


def estimate_num_speakers(
    embeddings: npt.ArrayLike, max_speakers: int = 8, *, min_neighbours: int = DEFAULT_MIN_NEIGHBOURS
) -> int:
    """The number of speakers `cluster_embeddings` finds in `embeddings` `[N, D]` (0 when N is 0)."""
    labels = cluster_embeddings(embeddings, None, max_speakers, min_neighbours=min_neighbours)
    return int(labels.max()) + 1 if labels.size else 0


def windows_to_turns(
    windows: Sequence[tuple[float, float]], labels: npt.ArrayLike, regions: Sequence[SpeechRegion]
) -> list[Turn]:
    """Speaker turns covering exactly the speech `regions`, from labelled `windows` (`(start, end)` s).

    Every instant of speech (on a 10 ms grid) takes the label most windows covering it have; a tie goes
    to the covering window whose centre is nearest; an instant no window covers takes the label of the
    nearest window centre (among the windows overlapping its region, if any, else all). Consecutive
    pieces of one speaker are merged when they touch; silence between regions is never covered.
    Speakers are named `SPEAKER_00`, `SPEAKER_01`, ... in order of first appearance. Turns are in time
    order. Needs at least one window when there is speech.
    """
    bounds = np.asarray(windows, np.float64).reshape(-1, 2)
    label_array = np.asarray(labels, np.int64).reshape(-1)
    if label_array.size != bounds.shape[0]:
        raise ValueError(f"got {bounds.shape[0]} windows but {label_array.size} labels")
    if np.any(bounds[:, 1] <= bounds[:, 0]):
        raise ValueError("every window needs start < end")
    speech = _union([(r.start, r.end) for r in regions])
    if speech and bounds.shape[0] == 0:
        raise ValueError("speech regions but no labelled windows to take speakers from")
    pieces = [piece for span in speech for piece in _label_span(span, bounds, label_array)]
    return _name_speakers(_merge_touching(pieces))


def diarize(
    vad_regions: Sequence[SpeechRegion],
    embeddings: npt.ArrayLike,
    windows: Sequence[tuple[float, float]],
    num_speakers: int | None = None,
) -> list[Turn]:
    """Who speaks when: cluster the window `embeddings` `[N, D]` (times in `windows`) and spread the
    labels over `vad_regions` (`windows_to_turns`). With speech but no windows (all regions too short
    to embed) the speech is one speaker's."""
    x = _check_embeddings(embeddings)
    if x.shape[0] == 0:
        return _name_speakers([(s, e, 0) for s, e in _union([(r.start, r.end) for r in vad_regions])])
    if len(windows) != x.shape[0]:
        raise ValueError(f"got {x.shape[0]} embeddings but {len(windows)} windows")
    labels = cluster_embeddings(x, num_speakers, min_neighbours=_min_neighbours(windows))
    return windows_to_turns(windows, labels, vad_regions)


def speech_time_accuracy(reference: Sequence[Turn], hypothesis: Sequence[Turn]) -> float:
    """Fraction (0 to 1) of the reference's speech time that the hypothesis gives to the right speaker,
    under the one-to-one speaker mapping that maximises it (Hungarian algorithm).

    Each side's turns are first merged per speaker, so overlapping turns are not counted twice.
    Hypothesis speech outside the reference is not penalised (this is 1 - the confusion and missed
    speech parts of the diarization error rate, not DER itself). Raises `ValueError` when the
    reference has no speech.
    """
    ref = _speaker_spans(reference)
    hyp = _speaker_spans(hypothesis)
    total = sum(e - s for spans in ref.values() for s, e in spans)
    if total <= 0.0:
        raise ValueError("the reference has no speech time to score")
    if not hyp:
        return 0.0
    overlap = np.array([[_overlap(r, h) for h in hyp.values()] for r in ref.values()])
    rows, cols = linear_sum_assignment(overlap, maximize=True)
    return float(overlap[rows, cols].sum() / total)


def _check_embeddings(embeddings: npt.ArrayLike) -> FloatArray:
    x = np.asarray(embeddings, np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be [N, D], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or infinite values")
    return x


def _cosine_similarity(x: FloatArray) -> FloatArray:
    """`[N, N]` cosine similarity clipped to [0, 1] (anti-correlated voices are simply unrelated)."""
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return np.asarray(np.clip(unit @ unit.T, 0.0, 1.0))


def _min_neighbours(windows: Sequence[tuple[float, float]]) -> int:
    """One more than the most other windows any window overlaps in time (at least the default)."""
    bounds = np.asarray(windows, np.float64).reshape(-1, 2)
    overlaps = (bounds[:, None, 0] < bounds[None, :, 1]) & (bounds[None, :, 0] < bounds[:, None, 1])
    return max(DEFAULT_MIN_NEIGHBOURS, int(overlaps.sum(axis=1).max()))  # the count includes itself


def _pruned_affinity(
    similarity: FloatArray, num_speakers: int | None, max_speakers: int, min_neighbours: int
) -> tuple[FloatArray, int]:
    """The NME-SC affinity (binary p-neighbour graph, symmetrised) and its estimated cluster count.

    With `num_speakers` given (2 to N - 1), `p` is chosen by the gap at that count instead of the
    largest gap, and that count is returned. Needs N >= 3.
    """
    n = similarity.shape[0]
    count = min(num_speakers or max_speakers, n - 1) + 1
    low = min(min_neighbours, n - 1)
    high = max(low, math.floor(n * _MAX_NEIGHBOUR_FRACTION))
    candidates = np.unique(np.linspace(low, high, min(_MAX_CANDIDATES, high - low + 1)).round().astype(int))
    best: tuple[float, FloatArray, int] | None = None
    for p in candidates:
        affinity = _neighbour_graph(similarity, int(p))
        gaps = np.diff(_laplacian_spectrum(affinity, count))
        k = int(np.argmax(gaps)) + 1 if num_speakers is None else num_speakers
        ratio = p / max(float(gaps[k - 1]), 1e-9)
        if best is None or ratio < best[0]:
            best = (ratio, affinity, k)
    assert best is not None  # candidates is never empty
    return best[1], best[2]


def _neighbour_graph(similarity: FloatArray, p: int) -> FloatArray:
    """Each row keeps (as 1) its `p` most similar other windows (ties all kept); an edge is kept if
    either end keeps it (NME-SC averages `(B + B^T) / 2`; the union keeps one speaker's windows
    connected more reliably: on synthetic speakers it cut single-speaker over-splits from 2 in 320 to 0)."""
    others = similarity.copy()
    np.fill_diagonal(others, -np.inf)
    kth = np.sort(others, axis=1)[:, -p][:, np.newaxis]
    binary = (others >= kth).astype(np.float64)
    return np.asarray(np.maximum(binary, binary.T))


def _laplacian_spectrum(affinity: FloatArray, count: int) -> FloatArray:
    """The `count` smallest eigenvalues (ascending) of L = I - D^-1/2 A D^-1/2.

    Up to `_DENSE_EIGEN_LIMIT` windows a dense solver; beyond, Lanczos (ARPACK) for the `count` largest
    eigenvalues of D^-1/2 A D^-1/2 (= 1 - those of L): O(N^2) per iteration instead of O(N^3).
    """
    inv_sqrt_degree = 1.0 / np.sqrt(np.maximum(affinity.sum(axis=1), 1e-12))
    normalized = inv_sqrt_degree[:, None] * affinity * inv_sqrt_degree[None, :]
    n = affinity.shape[0]
    if n <= _DENSE_EIGEN_LIMIT or count >= n - 1:
        return np.asarray(eigh(np.eye(n) - normalized, eigvals_only=True, subset_by_index=[0, count - 1]))
    largest = eigsh(normalized, k=count, which="LA", return_eigenvectors=False, tol=1e-6)
    return np.asarray(np.sort(1.0 - largest))


def _spectral_labels(affinity: FloatArray, k: int) -> IntArray:
    from sklearn.cluster import SpectralClustering

    model = SpectralClustering(
        n_clusters=k, affinity="precomputed", assign_labels="cluster_qr", random_state=0
    )
    with warnings.catch_warnings():
        # A graph that is nearly disconnected is the ideal case here, not a problem.
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        return np.asarray(model.fit_predict(affinity), np.int64)


def _first_appearance_order(labels: IntArray) -> IntArray:
    renamed: dict[int, int] = {}
    return np.array([renamed.setdefault(int(label), len(renamed)) for label in labels], np.int64)


def _union(spans: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sorted, overlapping or touching spans merged; empty spans dropped."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _label_span(
    span: tuple[float, float], windows: FloatArray, labels: IntArray
) -> list[tuple[float, float, int]]:
    """Labelled pieces `(start, end, label)` tiling `span`, per `windows_to_turns`' rule."""
    start, end = span
    steps = max(1, math.ceil((end - start) / RESOLUTION_S - 1e-9))
    edges = np.minimum(start + np.arange(steps + 1) * RESOLUTION_S, end)
    edges[-1] = end
    instants = (edges[:-1] + edges[1:]) / 2.0
    inside = (windows[:, 0] < end) & (windows[:, 1] > start)
    pool = np.flatnonzero(inside) if inside.any() else np.arange(labels.size)
    frame_labels = _label_instants(instants, windows[pool], labels[pool])
    cuts = [0, *(np.flatnonzero(np.diff(frame_labels)) + 1).tolist(), steps]
    return [(float(edges[a]), float(edges[b]), int(frame_labels[a])) for a, b in itertools.pairwise(cuts)]


def _label_instants(t: FloatArray, windows: FloatArray, labels: IntArray) -> IntArray:
    """Majority label of the windows covering each instant `t` `[F]`, ties to the nearest centre."""
    covers = (windows[None, :, 0] <= t[:, None]) & (t[:, None] < windows[None, :, 1])  # [F, W]
    distance = np.abs(t[:, None] - windows.mean(axis=1)[None, :])
    same = labels[:, None] == labels[None, :]  # [W, W]
    votes = covers.astype(np.float64) @ same  # [F, W]: covering windows that share window w's label
    # Votes dominate; the (bounded) distance only breaks ties. Uncovered instants use distance alone.
    score = np.where(covers, votes * 1e6 - distance, -np.inf)
    score = np.where(covers.any(axis=1, keepdims=True), score, -distance)
    return labels[np.argmax(score, axis=1)]


def _merge_touching(pieces: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    merged: list[tuple[float, float, int]] = []
    for start, end, label in pieces:
        if merged and merged[-1][2] == label and start - merged[-1][1] <= 1e-9:
            merged[-1] = (merged[-1][0], end, label)
        else:
            merged.append((start, end, label))
    return merged


def _name_speakers(pieces: list[tuple[float, float, int]]) -> list[Turn]:
    names: dict[int, str] = {}
    for _, _, label in pieces:
        names.setdefault(label, f"SPEAKER_{len(names):02d}")
    return [Turn(round(s, 4), round(e, 4), names[label]) for s, e, label in pieces]


def _speaker_spans(turns: Sequence[Turn]) -> dict[str, list[tuple[float, float]]]:
    by_speaker: dict[str, list[tuple[float, float]]] = {}
    for turn in turns:
        by_speaker.setdefault(turn.speaker, []).append((turn.start, turn.end))
    return {speaker: _union(spans) for speaker, spans in sorted(by_speaker.items())}


def _overlap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Total time two sorted, disjoint span lists share."""
    total, i, j = 0.0, 0, 0
    while i < len(a) and j < len(b):
        total += max(0.0, min(a[i][1], b[j][1]) - max(a[i][0], b[j][0]))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total
