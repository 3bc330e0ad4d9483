"""Loop jobs without Ray: the loop point finder, the block renderer, the streaming encoder, the
`analyse → render` stages run by the real `StageRunner` against the embedded S3 server over HTTP, and
`admit_loop`, the checks made before a loop job exists.

Every clip is synthesised here: a 120 BPM groove (kick, snare, hi-hats, an arpeggio and a pad over
Am then F, so the pattern repeats every two bars = 4 s), a click train, a steady tone.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import math
import tracemalloc

import numpy as np
import numpy.typing as npt
import pydantic
import pytest
import soundfile as sf

from infra.audio import Audio, decode, encode
from infra.audio_stream import NotStreamableFormatError, StreamEncodeError, encode_stream, wav_header
from infra.dsp.loop_points import LoopPoints, SourceTooShortError, find_loop_points
from infra.dsp.loop_render import render_blocks
from infra.jobs import JobRecord, JobStatus, JobStore
from infra.settings import Settings
from infra.storage import Storage, output_key, upload_key
from infra.uploads import store_upload
from pipelines.engine.kinds import Admission, AdmissionError
from pipelines.engine.stages import RetryPolicy, StageContext, StageRunner, job_result
from pipelines.jobs.loop import (
    LOOP_JOB,
    LOOP_KIND,
    LOOP_STAGES,
    LoopAnalysed,
    LoopJobRequest,
    LoopSourceError,
    admit_loop,
    job_audio_output,
    stream_loop,
)
from tests.pipelines.test_stages import models_with

RATE = 22050
CROSSFADE = round(0.05 * RATE)


def groove(seconds: float = 5.0, rate: int = RATE, bpm: float = 120.0) -> Audio:
    """Kick on 1 and 3, snare on 2 and 4, eighth-note hats, an arpeggio and a pad: Am (bar 1), F (bar 2)."""
    rng = np.random.default_rng(1)
    n, beat = int(seconds * rate), 60.0 / bpm
    out = np.zeros(n)

    def hit(at: float, sound: npt.NDArray[np.float64]) -> None:
        i = round(at * rate)
        out[i : i + len(sound)] += sound[: max(0, n - i)]

    def decay(length_s: float, rate_hz: float) -> npt.NDArray[np.float64]:
        return np.exp(-np.arange(int(length_s * rate)) / rate * rate_hz)

    kt = np.arange(int(0.25 * rate)) / rate
    kick = 0.8 * np.sin(2 * math.pi * (50 * kt + 2.0 * (1 - np.exp(-30 * kt)))) * decay(0.25, 12)
    snare = 0.3 * rng.standard_normal(len(decay(0.15, 30))) * decay(0.15, 30)
    hat = 0.1 * rng.standard_normal(len(decay(0.04, 120))) * decay(0.04, 120)
    chords = ((220.0, 261.63, 329.63), (174.61, 220.0, 261.63))
    note_t = np.arange(int(beat / 2 * rate)) / rate
    for b in range(int(seconds / beat) + 1):
        hit(b * beat, kick if b % 2 == 0 else snare)
        for half in range(2):
            freq = 2 * chords[(b // 4) % 2][(2 * b + half) % 3]
            hit(b * beat + half * beat / 2, hat)
            hit(b * beat + half * beat / 2, 0.15 * np.sin(2 * math.pi * freq * note_t) * np.exp(-note_t * 4))
    t = np.arange(n) / rate
    bar = (t // (4 * beat)).astype(int) % 2
    pad = sum(0.05 * np.sin(2 * math.pi * np.where(bar == 0, a, f) * t) for a, f in zip(*chords, strict=True))
    mono = (out + pad) * 0.8 / np.abs(out + pad).max()
    return Audio(np.stack([mono, 0.8 * mono]).astype(np.float32), rate)


def sha256_hex(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def concat(blocks: list[npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
    return np.concatenate(blocks, axis=1)


def max_step(x: npt.NDArray[np.float32], lo: int, hi: int) -> float:
    """Largest sample-to-sample jump within `x[:, lo:hi]`, over all channels."""
    return float(np.abs(np.diff(x[:, max(0, lo) : hi], axis=1)).max())


# The loop point finder ---------------------------------------------------------------------------


def test_groove_loops_over_its_two_bar_pattern() -> None:
    points = find_loop_points(groove(), crossfade=CROSSFADE)
    assert points.method == "beat"
    # The strongest onset periodicity: the beat (0.5 s) or the kick-snare cycle (1 s), not anything else.
    assert points.beat_period_s is not None
    assert min(abs(points.beat_period_s - p) for p in (0.5, 1.0)) < 0.01
    assert abs(points.length - 4.0 * RATE) <= 2  # the pattern is Am bar + F bar = 4 s


def test_click_train_loop_is_a_multiple_of_its_period() -> None:
    period = round(0.37 * RATE)
    clicks = np.zeros(6 * RATE)
    clicks[::period] = 1.0
    ring = np.exp(-np.arange(300) / 30) * np.sin(np.arange(300) * 0.3)
    audio = Audio(np.convolve(clicks, ring)[None, : len(clicks)].astype(np.float32), RATE)
    points = find_loop_points(audio, crossfade=CROSSFADE)
    assert points.method == "beat"
    periods = points.length / period
    assert round(periods) >= 3 and abs(points.length - round(periods) * period) <= 1


def test_steady_tone_has_no_beat_and_loops_on_whole_cycles() -> None:
    t = np.arange(5 * RATE) / RATE
    audio = Audio((0.5 * np.sin(2 * math.pi * 441.0 * t))[None].astype(np.float32), RATE)  # 50-sample cycle
    points = find_loop_points(audio, crossfade=CROSSFADE)
    assert points.method == "similarity" and points.beat_period_s is None
    assert points.length % 50 in (0, 1, 49) and points.length >= RATE


def test_source_too_short_for_a_loop_is_a_typed_error() -> None:
    with pytest.raises(SourceTooShortError):
        find_loop_points(groove(seconds=0.8), crossfade=CROSSFADE)


# The renderer ------------------------------------------------------------------------------------


def test_render_has_exact_length_intro_and_smooth_seams() -> None:
    clip = groove()
    points = find_loop_points(clip, crossfade=CROSSFADE)
    total = 47 * RATE + 123
    out = concat(list(render_blocks(clip, points, crossfade=CROSSFADE, total=total, block_frames=10000)))
    assert out.shape == (2, total)
    np.testing.assert_array_equal(out[:, : points.end], clip.samples[:, : points.end])
    seams = range(points.end, total - RATE, points.length)
    assert len(seams) >= 10
    source_steps = max(max_step(clip.samples, p - 256, p + 256) for p in (points.start, points.end))
    for seam in seams:
        assert max_step(out, seam - CROSSFADE, seam + CROSSFADE) <= source_steps
    body = out[:, points.end + CROSSFADE : points.end + points.length]
    np.testing.assert_array_equal(body, clip.samples[:, points.start + CROSSFADE : points.end])
    assert np.abs(out[:, -1]).max() < 1e-3  # faded out


def test_hard_cut_at_a_bad_point_would_jump() -> None:
    """The seam check above can fail: a loop at an arbitrary point without crossfade jumps."""
    clip = groove()
    bad = LoopPoints(
        start=0, end=round(1.23 * RATE), sample_rate=RATE, method="beat", beat_period_s=0.5, score=0
    )
    out = concat(list(render_blocks(clip, bad, crossfade=0, total=5 * RATE)))
    source_steps = max_step(clip.samples, bad.end - 256, bad.end + 256)
    assert max_step(out, bad.end + bad.length - 2, bad.end + bad.length + 2) > source_steps


# The streaming encoder ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg"])
def test_encode_stream_decodes_to_exact_frames(fmt: str) -> None:
    clip = groove(seconds=3.0)
    blocks = [clip.samples[:, i : i + 5000] for i in range(0, clip.num_samples, 5000)]
    data = b"".join(
        encode_stream(iter(blocks), sample_rate=RATE, channels=2, total_frames=clip.num_samples, fmt=fmt)  # type: ignore[arg-type]
    )
    decoded = decode(data)
    assert decoded.samples.shape == clip.samples.shape and decoded.sample_rate == RATE
    if fmt != "ogg":
        np.testing.assert_allclose(decoded.samples, clip.samples, atol=1e-6)
    if fmt == "wav":
        samples = clip.samples.T.astype("<f4").tobytes()
        assert data.endswith(samples) and encode(clip, "wav").endswith(samples)  # same data as `encode`


def test_rf64_header_for_outputs_past_4_gib_reads_back() -> None:
    clip = groove(seconds=1.0)
    data = wav_header(clip.num_samples, 2, RATE, rf64=True) + clip.samples.T.astype("<f4").tobytes()
    with sf.SoundFile(io.BytesIO(data)) as f:
        assert f.format == "RF64" and f.frames == clip.num_samples
        np.testing.assert_array_equal(f.read(dtype="float32", always_2d=True).T, clip.samples)
    assert wav_header(36000 * 48000, 2, 48000)[:4] == b"RF64"  # 10 h of stereo float: 13.8 GB


def test_encode_stream_refuses_mp3_and_a_wrong_frame_count() -> None:
    with pytest.raises(NotStreamableFormatError):
        list(encode_stream([], sample_rate=RATE, channels=1, total_frames=0, fmt="mp3"))
    blocks = [np.zeros((1, 100), dtype=np.float32)]
    with pytest.raises(StreamEncodeError):
        list(encode_stream(blocks, sample_rate=RATE, channels=1, total_frames=101, fmt="flac"))


def test_ten_minute_render_streams_in_memory_bounded_by_the_block_size() -> None:
    """Render + encode 10 min (106 MB of WAV) and drop each chunk: the peak stays near a few blocks."""
    clip = groove()
    points = find_loop_points(clip, crossfade=CROSSFADE)
    total = 600 * RATE
    tracemalloc.start()
    try:
        blocks = render_blocks(clip, points, crossfade=CROSSFADE, total=total)
        size = sum(
            len(c) for c in encode_stream(blocks, sample_rate=RATE, channels=2, total_frames=total, fmt="wav")
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == len(wav_header(total, 2, RATE)) + total * 2 * 4
    assert peak < size / 20  # one 64 Ki-frame block is 0.5 MB; the output is 106 MB


# The stages --------------------------------------------------------------------------------------

FAST_RETRY = RetryPolicy(tries=1, base_s=0.01)


def upload(storage: Storage, audio: Audio, upload_id: str = "ab" * 16) -> str:
    storage.put_bytes(upload_key(upload_id, "source"), encode(audio, "wav"))
    return upload_id


def run_job(
    storage: Storage, request: LoopJobRequest
) -> tuple[JobStore, JobRecord, StageContext[LoopJobRequest]]:
    jobs = JobStore(storage)
    record, _ = jobs.create(LOOP_JOB, request.model_dump(mode="json"))
    claimed = jobs.claim(record.id, "test-runner", lease_s=120)
    assert claimed is not None
    stored = LoopJobRequest.model_validate(claimed.request)  # as the runner reads it
    runner = StageRunner(jobs, claimed, stored, models_with(), retry=FAST_RETRY)
    return jobs, claimed, asyncio.run(runner.run(LOOP_STAGES))


def test_ten_minute_loop_job_of_a_five_second_clip(storage: Storage) -> None:
    clip = groove()
    request = LoopJobRequest(upload_id=upload(storage, clip), target_duration_s=600.0, format="flac")
    _, job, ctx = run_job(storage, request)
    result = job_result(ctx)
    audio, loop = result["audio"], result["metadata"]["loop"]
    assert audio["key"] == output_key(job.id, "loop.flac", 1) and audio["media_type"] == "audio/flac"
    body = storage.get_bytes(audio["key"])
    assert len(body) == audio["bytes"] and sha256_hex(body) == audio["sha256"]
    out = decode(body).samples
    assert out.shape == (2, 600 * RATE) and audio["samples"] == 600 * RATE and audio["duration_s"] == 600.0
    assert abs(loop["loop_s"] - 4.0) < 1e-3 and loop["method"] == "beat"
    source_steps = max(max_step(clip.samples, p - 256, p + 256) for p in (loop["start"], loop["end"]))
    for seam in range(loop["end"], 599 * RATE, loop["end"] - loop["start"]):
        assert max_step(out, seam - CROSSFADE, seam + CROSSFADE) <= source_steps + 2e-6  # 24-bit FLAC


def test_render_again_overwrites_the_same_key_with_the_same_bytes(storage: Storage) -> None:
    clip = groove()
    request = LoopJobRequest(upload_id=upload(storage, clip), target_duration_s=30.0)
    _, _, ctx = run_job(storage, request)
    entry = job_result(ctx)["audio"]
    loop = ctx.output(LoopAnalysed).loop
    points = LoopPoints(loop.start, loop.end, RATE, "beat", loop.beat_period_s, loop.score)
    assert loop.points() == points
    again = stream_loop(storage, entry["key"], clip, points, crossfade=CROSSFADE, total=30 * RATE, fmt="wav")
    assert (again.size, again.sha256) == (entry["bytes"], entry["sha256"])
    assert sha256_hex(storage.get_bytes(entry["key"])) == entry["sha256"]


def test_a_resumed_loop_job_restores_its_analysis(storage: Storage) -> None:
    request = LoopJobRequest(upload_id=upload(storage, groove()), target_duration_s=10.0)
    jobs, job, ctx = run_job(storage, request)
    again = jobs.update(job.id, lambda r: setattr(r, "attempt", r.attempt + 1))
    restored = asyncio.run(StageRunner(jobs, again, request, models_with()).run(LOOP_STAGES))
    assert restored.output(LoopAnalysed) == ctx.output(LoopAnalysed)
    assert job_result(restored) == job_result(ctx)
    assert [s.attempt for s in jobs.get(job.id).stages] == [job.attempt] * 2  # nothing recomputed


def succeeded_job(storage: Storage, result: dict[str, object]) -> JobRecord:
    jobs = JobStore(storage)
    record, _ = jobs.create("music", {"prompt": "x"})
    claimed = jobs.claim(record.id, "test-runner", lease_s=60)
    assert claimed is not None
    return jobs.finish(record.id, claimed.attempt, JobStatus.SUCCEEDED, result=result)


def test_loop_of_a_finished_jobs_audio_output(storage: Storage) -> None:
    clip = groove(seconds=6.0)
    source = succeeded_job(storage, {"metadata": {"weights": "debug-random"}})
    key = output_key(source.id, "audio.ogg")
    storage.put_bytes(key, encode(clip, "ogg"))
    source = JobStore(storage).update(
        source.id,
        lambda r: setattr(
            r, "result", {**(r.result or {}), "audio": {"key": key, "media_type": "audio/ogg"}}
        ),
    )
    _, _, ctx = run_job(storage, LoopJobRequest(job_id=source.id, target_duration_s=20.0, format="ogg"))
    result = job_result(ctx)
    assert result["metadata"]["source"]["job_id"] == source.id
    assert result["metadata"]["source"]["weights"] == "debug-random"
    assert decode(storage.get_bytes(result["audio"]["key"])).num_samples == 20 * RATE


def test_job_audio_output_picks_and_rejects() -> None:
    base = JobRecord(id="cd" * 16, kind="separate", request={}, created_at=0.0, updated_at=0.0)
    stems = {n: {"key": f"outputs/{base.id}/{n}.wav", "media_type": "audio/wav"} for n in ("drums", "bass")}
    done = base.model_copy(update={"status": JobStatus.SUCCEEDED, "result": {**stems, "metadata": {}}})
    assert job_audio_output(done, "bass")[0] == "bass"
    for record, output, code in [
        (base, None, "source_job_not_succeeded"),
        (done, None, "output_required"),
        (done, "vocals", "unknown_output"),
        (done.model_copy(update={"result": {"metadata": {}}}), None, "source_has_no_audio"),
    ]:
        with pytest.raises(LoopSourceError) as caught:
            job_audio_output(record, output)
        assert caught.value.code == code


@pytest.mark.parametrize(
    "fields",
    [
        {"upload_id": "ab" * 16, "job_id": "cd" * 16, "target_duration_s": 60},
        {"target_duration_s": 60},
        {"upload_id": "ab" * 16, "target_duration_s": 0},
        {"upload_id": "ab" * 16, "target_duration_s": 60, "crossfade_s": 5},
        {"job_id": "cd" * 16, "output": "no/slash", "target_duration_s": 60},
        {"upload_id": "ab" * 16, "target_duration_s": 60, "format": "aiff"},
    ],
)
def test_invalid_loop_requests(fields: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        LoopJobRequest.model_validate(fields)


# Admission ---------------------------------------------------------------------------------------


def admit(storage: Storage, settings: Settings, **fields: object) -> LoopJobRequest:
    admission = Admission(storage=storage, jobs=JobStore(storage), settings=settings, models=models_with())
    return asyncio.run(admit_loop(LoopJobRequest.model_validate(fields), admission))


def refusal(storage: Storage, settings: Settings, **fields: object) -> AdmissionError:
    with pytest.raises(AdmissionError) as refused:
        admit(storage, settings, **fields)
    return refused.value


def stored_upload(storage: Storage, settings: Settings, seconds: float) -> str:
    return store_upload(storage, encode(groove(seconds), "wav"), "groove.wav", settings).upload_id


def source_job(storage: Storage, duration_s: float = 5.0) -> JobRecord:
    """A succeeded job with one audio output, `audio`, lasting `duration_s` (nothing stored)."""
    record = succeeded_job(storage, {})
    entry = {"key": output_key(record.id, "audio.wav"), "media_type": "audio/wav", "duration_s": duration_s}
    return JobStore(storage).update(record.id, lambda r: setattr(r, "result", {"audio": entry}))


def test_admit_is_the_loop_kinds_admission() -> None:
    assert LOOP_KIND.admit is admit_loop and LOOP_KIND.other_sources == ("job_id",)
    assert LOOP_KIND.inputs == frozenset({"file", "upload_id"})


def test_admit_keeps_an_upload_request_and_resolves_a_jobs_output(
    storage: Storage, settings: Settings
) -> None:
    upload_id = stored_upload(storage, settings, 3.0)
    request = admit(storage, settings, upload_id=upload_id, target_duration_s=60, format="flac")
    assert request == LoopJobRequest(upload_id=upload_id, target_duration_s=60, format="flac")
    source = source_job(storage)
    admitted = admit(storage, settings, job_id=source.id, target_duration_s=60)
    assert (admitted.job_id, admitted.output) == (source.id, "audio")


def test_admit_refuses_targets_past_ten_hours_and_formats_that_cannot_stream(
    storage: Storage, settings: Settings
) -> None:
    upload_id = stored_upload(storage, settings, 3.0)
    too_long = refusal(storage, settings, upload_id=upload_id, target_duration_s=36000.5)
    assert (too_long.status, too_long.code) == (422, "duration_too_long")
    assert str(too_long) == "target_duration_s 36000.5 exceeds the limit of 36000 s (10 h)"
    mp3 = refusal(storage, settings, upload_id=upload_id, target_duration_s=60, format="mp3")
    assert (mp3.status, mp3.code) == (422, "format_not_streamable") and "mp3" in str(mp3)


def test_admit_refuses_bad_uploads(storage: Storage, settings: Settings) -> None:
    unknown = refusal(storage, settings, upload_id="ef" * 16, target_duration_s=60)
    assert (unknown.status, unknown.code) == (404, "upload_not_found")
    short = refusal(storage, settings, upload_id=stored_upload(storage, settings, 1.5), target_duration_s=60)
    assert (short.status, short.code) == (422, "source_too_short")
    assert str(short) == "the source lasts 1.5 s; a loop needs at least 2 s"
    upload_id = stored_upload(storage, settings, 3.0)
    output = refusal(storage, settings, upload_id=upload_id, output="audio", target_duration_s=60)
    assert (output.status, output.code) == (422, "invalid_request")
    assert str(output) == "`output` names an audio result of `job_id`; send no `output`"


def test_admit_refuses_bad_source_jobs(storage: Storage, settings: Settings) -> None:
    unknown = refusal(storage, settings, job_id="cd" * 16, target_duration_s=60)
    assert (unknown.status, unknown.code) == (404, "source_job_not_found")
    queued, _ = JobStore(storage).create("music", {"prompt": "x"})
    running = refusal(storage, settings, job_id=queued.id, target_duration_s=60)
    assert (running.status, running.code) == (409, "source_job_not_succeeded")
    source = source_job(storage)
    other = refusal(storage, settings, job_id=source.id, output="vocals", target_duration_s=60)
    assert (other.status, other.code) == (422, "unknown_output")
    silent = succeeded_job(storage, {"metadata": {}})
    no_audio = refusal(storage, settings, job_id=silent.id, target_duration_s=60)
    assert (no_audio.status, no_audio.code) == (422, "source_has_no_audio")
    short = refusal(storage, settings, job_id=source_job(storage, 0.5).id, target_duration_s=60)
    assert (short.status, short.code) == (422, "source_too_short")
