"""AudioGen text-to-sound on transformers' MusicGen architecture.

AudioGen is MusicGen's design applied to sound: a frozen T5 text encoder (t5-large for the released
`audiogen-medium`), a 16 kHz EnCodec (4 codebooks of 2048 codes at 50 Hz) and a decoder over the delayed
codebooks. `AudioGen` is the MusicGen wrapper with a 16 kHz debug model; audiocraft's released checkpoints
are converted once, offline, by `models/convert/audiogen.py` into the safetensors folder it loads.
"""

from __future__ import annotations

import math

from transformers import MusicgenConfig

from models.musicgen import MusicGen, debug_config


class AudioGen(MusicGen):
    """Text-to-sound with AudioGen: one `Audio` `[1, T]` per prompt at `sample_rate` Hz (16000).

    Loading ("debug" | folder | hub id), `generate` settings, seeding and `save_pretrained` are MusicGen's;
    a folder is the output of `models.convert.audiogen`. "debug" is a tiny random model with a
    16 kHz codec at 50 Hz and a T5 wider than the decoder (so the text projection exists, as in AudioGen).
    """

    @classmethod
    def _tiny_config(cls) -> MusicgenConfig:
        return debug_config(
            sampling_rate=16000,
            upsampling_ratios=(8, 5, 4, 2),
            text_hidden_size=48,
            target_bandwidth=bandwidth_kbps(num_codebooks=4, frame_rate=50, codebook_size=64),
        )


def bandwidth_kbps(*, num_codebooks: int, frame_rate: float, codebook_size: int) -> float:
    """The EnCodec bandwidth (kbps) at which transformers uses exactly `num_codebooks` quantizers."""
    return num_codebooks * frame_rate * math.ceil(math.log2(codebook_size)) / 1000
