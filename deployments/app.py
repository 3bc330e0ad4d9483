"""The typed application builder: `serve_config.yaml` points `import_path` here and passes `args`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application

from deployments.families.asr import ASRDeployment
from deployments.families.audiogen import AudioGenDeployment
from deployments.families.diarization import DiarizerDeployment
from deployments.families.music import MusicGenDeployment
from deployments.families.musicgen_melody import MusicGenMelodyDeployment
from deployments.families.pitch import PitchDeployment
from deployments.families.separation import SeparationDeployment
from deployments.families.stable_audio import StableAudioDeployment
from deployments.families.tts import TTSDeployment
from deployments.families.vad import VADDeployment
from deployments.families.voice_clone import VoiceCloneDeployment
from deployments.ingress import Ingress
from deployments.runner import JobRunner

Device = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")


class AppArgs(BaseModel):
    """`args:` of the soundstage application. Model URIs: see infra/model_store.py."""

    model_config = ConfigDict(extra="forbid")

    music_model_uri: str = Field(default="hf://facebook/musicgen-small", min_length=1)
    music_device: str = Device
    melody_model_uri: str = Field(default="hf://facebook/musicgen-melody", min_length=1)
    melody_device: str = Device
    sfx_model_uri: str = Field(default="s3://soundstage-models/audiogen-medium", min_length=1)
    sfx_device: str = Device
    stable_audio_model_uri: str = Field(default="hf://stabilityai/stable-audio-open-1.0", min_length=1)
    stable_audio_device: str = Device
    asr_model_uri: str = Field(default="hf://Systran/faster-whisper-small", min_length=1)
    asr_device: str = Device
    pitch_model_uri: str = Field(default="pkg://swift-f0", min_length=1)
    separation_model_uri: str = Field(default="s3://soundstage-models/htdemucs", min_length=1)
    separation_device: str = Device
    vad_model_uri: str = Field(default="pkg://silero-vad", min_length=1)
    speaker_model_uri: str = Field(default="pkg://resemblyzer", min_length=1)
    speaker_device: str = Device
    tts_model_uri: str = Field(default="pkg://hibari-tts", min_length=1)
    voice_clone_model_uri: str = Field(default="hf://sesame/csm-1b", min_length=1)
    voice_clone_device: str = Device


def build_app(args: dict[str, object]) -> Application:
    """Ingress → JobRunner → model deployments; the ingress also holds the model handles."""
    config = AppArgs.model_validate(args)
    vad = VADDeployment.bind(config.vad_model_uri)  # type: ignore[attr-defined]
    models = {
        "MusicGen": MusicGenDeployment.bind(config.music_model_uri, config.music_device),  # type: ignore[attr-defined]
        "MusicGenMelody": MusicGenMelodyDeployment.bind(  # type: ignore[attr-defined]
            config.melody_model_uri, config.melody_device
        ),
        "AudioGen": AudioGenDeployment.bind(config.sfx_model_uri, config.sfx_device),  # type: ignore[attr-defined]
        "StableAudio": StableAudioDeployment.bind(  # type: ignore[attr-defined]
            config.stable_audio_model_uri, config.stable_audio_device
        ),
        "ASR": ASRDeployment.bind(config.asr_model_uri, config.asr_device),  # type: ignore[attr-defined]
        "Pitch": PitchDeployment.bind(config.pitch_model_uri),  # type: ignore[attr-defined]
        "Separation": SeparationDeployment.bind(  # type: ignore[attr-defined]
            config.separation_model_uri, config.separation_device
        ),
        "VAD": vad,
        "TTS": TTSDeployment.bind(config.tts_model_uri),  # type: ignore[attr-defined]
        "VoiceClone": VoiceCloneDeployment.bind(  # type: ignore[attr-defined]
            config.voice_clone_model_uri, config.voice_clone_device
        ),
        "Diarizer": DiarizerDeployment.bind(  # type: ignore[attr-defined]
            vad, config.speaker_model_uri, config.speaker_device
        ),
    }
    runner = JobRunner.bind(handles=models)  # type: ignore[attr-defined]
    return Ingress.bind(runner=runner, models=models)  # type: ignore[attr-defined]
