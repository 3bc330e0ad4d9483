"""`soundstage models`: list the served models; push, pull, convert and fetch weights for the model store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from deployments.tools.cli_common import add_api_arguments, client_for
from infra.model_store import pull_model, push_model
from infra.settings import load_settings
from infra.store_discovery import located_store


def add_models_parser(sub: Any) -> None:
    """The `models` subcommand and its own subcommands, on `sub` (the CLI's subparsers)."""
    models = sub.add_parser("models", help="list served models; push/pull weights to the s3:// store")
    models_sub = models.add_subparsers(required=True)
    listing = models_sub.add_parser("list")
    _add_url(listing)
    listing.set_defaults(func=cmd_models_list)
    push = models_sub.add_parser("push", help="upload a model folder with its SHA-256 manifest")
    push.add_argument("folder", type=Path)
    push.add_argument("uri", help="s3://bucket/prefix")
    _add_store_arguments(push)
    push.set_defaults(func=cmd_models_push)
    convert = models_sub.add_parser(
        "convert", help="turn a released checkpoint into safetensors + config (run once, on trusted files)"
    )
    _add_convert_arguments(convert)
    _add_store_arguments(convert)
    convert.set_defaults(func=cmd_models_convert)
    fetch = models_sub.add_parser(
        "fetch", help="download an official release, verify its checksum, convert it, push it to the store"
    )
    fetch.add_argument("name", help="htdemucs, htdemucs_ft or audiogen-medium")
    fetch.add_argument("--to", default=None, help="s3://bucket/prefix (default: s3://soundstage-models/NAME)")
    fetch.add_argument(
        "--url",
        action="append",
        default=[],
        help="a mirror of one release file, repeated once per file in the release's order (demucs: "
        "same SIG-SHA256PREFIX name; audiogen: state_dict.bin, then compression_state_dict.bin, from a "
        "server that sends the hub's X-Linked-Etag SHA-256)",
    )
    fetch.add_argument(
        "--text-encoder",
        default=None,
        help="audiogen: T5 hub id or folder (default: the one the config names, t5-large), or 'debug'",
    )
    _add_store_arguments(fetch)
    fetch.set_defaults(func=cmd_models_fetch)
    pull = models_sub.add_parser("pull", help="sync an s3:// model into the local cache")
    pull.add_argument("uri")
    _add_store_arguments(pull)
    pull.set_defaults(func=cmd_models_pull)


def _add_convert_arguments(convert: argparse.ArgumentParser) -> None:
    convert.add_argument("family", choices=["demucs", "audiogen", "svc"])
    convert.add_argument(
        "checkpoint",
        type=Path,
        help="demucs: a .th file (always unpickled: trusted files only); audiogen: a folder holding "
        "audiocraft's state_dict.bin + compression_state_dict.bin, or the state_dict.bin file; svc: an RVC "
        "v2 voice .pth (read with weights_only: tensors and plain data only)",
    )
    convert.add_argument("out_dir", type=Path, help="the folder to write (transformers layout for audiogen)")
    convert.add_argument(
        "--compression",
        type=Path,
        default=None,
        help="audiogen: the compression_state_dict.bin (default: beside state_dict.bin)",
    )
    convert.add_argument(
        "--text-encoder",
        default=None,
        help="audiogen: T5 hub id or folder (default: the one the config names, t5-large), or 'debug'",
    )
    convert.add_argument(
        "--trust-pickle",
        action="store_true",
        help="audiogen: also accept files that need full unpickling (a pickled omegaconf config); this "
        "EXECUTES CODE FROM THE FILE, so use it on trusted files only (default: tensors and plain data only)",
    )
    convert.add_argument(
        "--push", metavar="s3://bucket/prefix", default=None, help="then upload the folder to the model store"
    )


def _add_store_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the local stack's data dir whose embedded store to use (default: as `soundstage serve`); "
        "its running store, else the last one, started for this command; SOUNDSTAGE_S3_ENDPOINT_URL wins",
    )


def _add_url(parser: argparse.ArgumentParser) -> None:
    add_api_arguments(parser)


def cmd_models_list(args: argparse.Namespace) -> int:
    for deployment in client_for(args).deployments()["deployments"]:
        model = deployment.get("model") or {}
        print(
            f"{deployment['deployment']:<12} {deployment['status']:<10} replicas={deployment['replicas']} "
            f"{model.get('model_id', '-')} {model.get('weights', '')}"
        )
    return 0


def cmd_models_push(args: argparse.Namespace) -> int:
    with located_store(load_settings(), args.data_dir) as settings:
        manifest = push_model(args.folder, args.uri, settings)
    print(f"pushed {len(manifest)} files to {args.uri}")
    return 0


def cmd_models_convert(args: argparse.Namespace) -> int:
    """Exit 2 with a one-line reason when the input cannot be converted (missing file, wrong layout)."""
    # The CLI is the one place outside models/ that reaches into a wrapper: conversion is an offline tool.
    from models.convert.audiocraft_checkpoint import CheckpointFileError
    from models.types import ModelLoadingError

    given = {"--compression": args.compression, "--text-encoder": args.text_encoder}
    misplaced = [flag for flag, value in given.items() if value is not None]
    misplaced += ["--trust-pickle"] if args.trust_pickle else []
    if args.family != "audiogen" and misplaced:
        return _bad_input(f"{', '.join(misplaced)} only apply to audiogen")
    if args.push is not None and not args.push.startswith("s3://"):
        return _bad_input(f"--push takes s3://bucket/prefix, not {args.push!r}")
    try:
        out_dir = _CONVERTERS[args.family](args)
    except (CheckpointFileError, ModelLoadingError) as e:
        return _bad_input(str(e))
    print(f"converted to {out_dir}")
    if args.push is not None:
        with located_store(load_settings(), args.data_dir) as settings:
            manifest = push_model(out_dir, args.push, settings)
        print(f"pushed {len(manifest)} files to {args.push}")
    return 0


def _bad_input(message: str) -> int:
    print(f"soundstage: {message}", file=sys.stderr)
    return 2


def _convert_demucs(args: argparse.Namespace) -> Path:
    from models.convert.demucs import convert_checkpoint

    return convert_checkpoint(args.checkpoint, args.out_dir)


def _convert_audiogen(args: argparse.Namespace) -> Path:
    from models.convert.audiocraft_checkpoint import read_audiocraft_release, release_files
    from models.convert.audiogen import convert_audiocraft_checkpoint

    lm_file, codec_file = release_files(args.checkpoint, args.compression)
    release = read_audiocraft_release(lm_file, codec_file, trust_pickle=args.trust_pickle)
    return convert_audiocraft_checkpoint(
        release.state_dict, release.config, args.out_dir, text_encoder=args.text_encoder
    )


def _convert_svc(args: argparse.Namespace) -> Path:
    from models.convert.svc import convert_rvc_checkpoint

    return convert_rvc_checkpoint(args.checkpoint, args.out_dir)


_CONVERTERS = {"demucs": _convert_demucs, "audiogen": _convert_audiogen, "svc": _convert_svc}


def cmd_models_fetch(args: argparse.Namespace) -> int:
    """Print the model store URI to put in the config; exit 2 with the reason when the fetch fails."""
    from deployments.tools.model_fetch import FetchError, fetch_model, find_release

    to = args.to or f"s3://soundstage-models/{args.name}"
    try:
        find_release(args.name)  # before looking for a store
        with located_store(load_settings(), args.data_dir) as settings:
            uri = fetch_model(args.name, to, settings, urls=tuple(args.url), text_encoder=args.text_encoder)
    except FetchError as e:
        return _bad_input(str(e))
    print(uri)
    return 0


def cmd_models_pull(args: argparse.Namespace) -> int:
    with located_store(load_settings(), args.data_dir) as settings:
        print(pull_model(args.uri, settings))
    return 0
