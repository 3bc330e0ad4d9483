"""PyAV's containers (infra/av_codec.py) behind `infra.audio.decode`: M4A/MP4 (AAC) and WebM (Opus)
inputs decode at their rate and length, keep the edge limits, and Opus/AAC outputs decode back."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from infra import av_codec
from infra.audio import (
    Audio,
    AudioChannelsError,
    AudioLimits,
    AudioTooLargeError,
    AudioTooLongError,
    UnsupportedAudioFormatError,
    decode,
    probe,
)


def sine(seconds: float = 1.0, rate: int = 24000, hz: float = 440.0, channels: int = 1) -> Audio:
    t = np.arange(int(seconds * rate)) / rate
    tone = (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
    return Audio(np.repeat(tone[None], channels, axis=0), rate)


def muxed(audio: Audio, container: str, codec: str) -> bytes:
    """`audio` in `container` with `codec`, written by FFmpeg (as a phone or a browser would)."""
    out = io.BytesIO()
    layout = "mono" if audio.channels == 1 else "stereo"
    rate = 48000 if codec == "libopus" else audio.sample_rate
    with av.open(out, "w", format=container) as c:
        stream = c.add_stream(codec, rate=rate, layout=layout)
        assert isinstance(stream, av.AudioStream)
        resampler = av.AudioResampler(format=stream.format.name, layout=layout, rate=rate)
        frame = av.AudioFrame.from_ndarray(audio.samples, format="fltp", layout=layout)
        frame.sample_rate = audio.sample_rate
        for converted in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(converted):
                c.mux(packet)
        for packet in stream.encode(None):
            c.mux(packet)
    return out.getvalue()


def dominant_hz(audio: Audio) -> float:
    spectrum = np.abs(np.fft.rfft(audio.samples[0]))
    return float(np.argmax(spectrum) * audio.sample_rate / audio.samples.shape[1])


@pytest.mark.parametrize(
    ("container", "codec", "rate"),
    [("ipod", "aac", 24000), ("mp4", "aac", 24000), ("webm", "libopus", 48000)],
)
def test_phone_and_browser_containers_decode(container: str, codec: str, rate: int) -> None:
    audio = decode(muxed(sine(), container, codec))
    assert audio.sample_rate == rate and audio.channels == 1
    assert audio.duration_s == pytest.approx(1.0, abs=0.1)  # AAC adds priming samples
    assert dominant_hz(audio) == pytest.approx(440.0, rel=0.01)


def test_limits_apply_before_and_while_decoding() -> None:
    m4a = muxed(sine(2.0, channels=2), "ipod", "aac")
    with pytest.raises(AudioTooLongError):
        decode(m4a, max_duration_s=1.0)
    with pytest.raises(AudioChannelsError):
        decode(m4a, limits=AudioLimits(max_channels=1))
    with pytest.raises(AudioTooLargeError):
        probe(io.BytesIO(m4a), AudioLimits(max_samples=10_000))
    with pytest.raises(UnsupportedAudioFormatError):
        decode(b"\x00" * 4096)


@pytest.mark.parametrize(("fmt", "rate"), [("opus", 48000), ("aac", 24000)])
def test_opus_and_aac_outputs_decode_back(fmt: av_codec.AVFormat, rate: int) -> None:
    encoded = av_codec.encode(sine(), fmt)
    back = decode(encoded)
    assert back.sample_rate == rate and back.duration_s == pytest.approx(1.0, abs=0.1)
    assert dominant_hz(back) == pytest.approx(440.0, rel=0.01)
