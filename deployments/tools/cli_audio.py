"""`soundstage transcribe`, `soundstage speak` and `soundstage voices list|register|delete`: the
synchronous audio routes (OpenAI-compatible transcription and speech, registered voices)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from deployments.tools.cli_common import ExitCode, add_api_arguments, client_for, emit

TRANSCRIPT_FORMATS = ("text", "json", "verbose_json", "srt", "vtt")
SPEECH_FORMATS = ("mp3", "wav", "flac", "pcm", "opus")


def add_audio_parsers(sub: Any) -> None:
    transcribe = sub.add_parser("transcribe", help="speech to text (Whisper), optionally with speakers")
    transcribe.add_argument("file", type=Path)
    transcribe.add_argument("--language", default=None, help="ISO code, e.g. en (default: detected)")
    transcribe.add_argument("--format", choices=TRANSCRIPT_FORMATS, default="text", help="what is printed")
    transcribe.add_argument("--diarize", action="store_true", help="a speaker for every segment")
    transcribe.add_argument("--words", action="store_true", help="word timestamps (verbose_json)")
    transcribe.add_argument("--prompt", default=None, help="conditions the decoder")
    add_api_arguments(transcribe)
    transcribe.set_defaults(func=cmd_transcribe)

    speak = sub.add_parser("speak", help="text to speech, in a stock voice or a registered one")
    speak.add_argument("text")
    speak.add_argument("-o", "--output", type=Path, required=True, help="the audio file to write")
    speak.add_argument("--voice", default="heart", help="a stock voice or a voice_id (default heart)")
    speak.add_argument("--format", choices=SPEECH_FORMATS, default=None, help="default: from -o's suffix")
    speak.add_argument("--speed", type=float, default=None, help="0.25 to 4 (stock voices)")
    add_api_arguments(speak)
    speak.set_defaults(func=cmd_speak)

    voices = sub.add_parser("voices", help="stock voices and registered voices for cloning")
    actions = voices.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list")
    listing.set_defaults(func=cmd_voices_list)
    register = actions.add_parser("register", help="a 5 to 30 s reference clip of the voice")
    register.add_argument("file", type=Path)
    register.add_argument("--name", default="voice")
    register.add_argument("--transcript", default=None, help="what the clip says (default: transcribed)")
    register.set_defaults(func=cmd_voices_register)
    delete = actions.add_parser("delete")
    delete.add_argument("voice_id")
    delete.set_defaults(func=cmd_voices_delete)
    for action in actions.choices.values():
        add_api_arguments(action)


def cmd_transcribe(args: argparse.Namespace) -> int:
    wire = "verbose_json" if args.json and args.format == "text" else args.format
    fields: dict[str, str] = {"model": "whisper-1", "response_format": wire}
    fields |= {"language": args.language} if args.language else {}
    fields |= {"prompt": args.prompt} if args.prompt else {}
    fields |= {"diarize": "true"} if args.diarize else {}
    fields |= {"timestamp_granularities[]": "word"} if args.words else {}
    response = client_for(args).transcribe(args.file, fields)
    if wire in ("json", "verbose_json"):
        body = response.json()
        emit(args, body, [json.dumps(body, indent=2)] if args.format != "text" else [body["text"]])
    else:
        emit(args, {"text": response.text}, [response.text.rstrip("\n")])
    return ExitCode.OK


def cmd_speak(args: argparse.Namespace) -> int:
    suffix = args.output.suffix.lstrip(".").lower()
    response_format = args.format or (suffix if suffix in SPEECH_FORMATS else "mp3")
    body: dict[str, Any] = {"model": "tts-1", "input": args.text, "voice": args.voice}
    body |= {"response_format": response_format} | ({"speed": args.speed} if args.speed is not None else {})
    size = client_for(args).speech(body, args.output)
    info = {"path": str(args.output), "bytes": size, "format": response_format, "voice": args.voice}
    emit(args, info, [f"{args.output} ({size} bytes, {response_format}, voice {args.voice})"])
    return ExitCode.OK


def cmd_voices_list(args: argparse.Namespace) -> int:
    voices = client_for(args).voices()
    lines = [f"stock      {name}" for name in voices.get("stock", [])]
    lines += [
        f"registered {voice['voice_id']}  {voice.get('name', '')}  {voice.get('duration_s', '')} s"
        for voice in voices.get("registered", [])
    ]
    emit(args, voices, lines)
    return ExitCode.OK


def cmd_voices_register(args: argparse.Namespace) -> int:
    voice = client_for(args).register_voice(args.file, args.name, args.transcript)
    emit(args, voice, [f"{voice['voice_id']}  {voice.get('name')}: {voice.get('transcript', '')!r}"])
    return ExitCode.OK


def cmd_voices_delete(args: argparse.Namespace) -> int:
    client_for(args).delete_voice(args.voice_id)
    emit(args, {"voice_id": args.voice_id, "deleted": True}, [f"deleted {args.voice_id}"])
    return ExitCode.OK
