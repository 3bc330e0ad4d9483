"""The `soundstage` command: run the local stack, submit and follow jobs, manage model weights."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from deployments.tools.cli_audio import add_audio_parsers
from deployments.tools.cli_common import (
    ConfigError,
    ExitCode,
    add_api_arguments,
    client_for,
    exit_code_for,
    report_error,
)
from deployments.tools.cli_follow import download_results, follow, result_lines
from deployments.tools.cli_jobs import add_jobs_parser
from deployments.tools.cli_submit import UsageError, add_submit_parser
from deployments.tools.local_stack import DASHBOARD_PORT, METRICS_PORT, ModelsMissingError, start_report
from infra.client import ApiRequestError, JobFailedError, SoundstageClient
from infra.embedded_s3 import EmbeddedS3Error, located_store
from infra.model_store import ModelStoreError, pull_model, push_model
from infra.settings import SettingsError, load_settings
from infra.store_probe import StoreProbeError


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; the exit code is an `ExitCode` (README: CLI reference), argparse's 2 for
    bad arguments included."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except UsageError as e:
        report_error(args, e, ExitCode.USAGE)
        return ExitCode.USAGE
    except (ApiRequestError, JobFailedError, TimeoutError, ConfigError, httpx.TransportError) as e:
        code = exit_code_for(e)
        report_error(args, e, code)
        return code
    except (
        SettingsError,
        EmbeddedS3Error,
        StoreProbeError,
        ModelsMissingError,
        ModelStoreError,
        OSError,
    ) as e:
        print(f"soundstage: {e}", file=sys.stderr)
        return ExitCode.ERROR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="soundstage", description=__doc__)
    sub = parser.add_subparsers(required=True)

    serve = sub.add_parser("serve", help="start Ray + embedded S3 + the app on this machine")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--config", type=Path, default=None, help="serve config (default: serve_config.yaml)")
    serve.add_argument("--first-job", action="store_true", help="run a first music job once it is up")
    serve.add_argument("--exit", action="store_true", help="stop everything after --first-job")
    serve.add_argument("--output-dir", type=Path, default=Path("soundstage-output"))
    serve.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the embedded S3 store keeps jobs, uploads and outputs across restarts "
        "(default: $XDG_DATA_HOME/soundstage, else ~/.local/share/soundstage); unused when "
        "SOUNDSTAGE_S3_ENDPOINT_URL names another store",
    )
    serve.add_argument(
        "--models",
        choices=["offline", "production"],
        default="offline",
        help="offline: debug and packaged weights on CPU (default, what CI runs); production: the "
        "config's URIs and devices (auto: the GPUs nvidia-smi lists)",
    )
    serve.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="FAMILY=URI",
        help="serve FAMILY (music, melody, sfx, separation, asr, ...) from URI instead; repeatable",
    )
    serve.add_argument(
        "--dashboard-port",
        type=int,
        default=DASHBOARD_PORT,
        help="Ray dashboard on 127.0.0.1 (what `serve status`, `serve config` and `ray list` talk to); "
        "0: none",
    )
    serve.add_argument(
        "--metrics-port",
        type=int,
        default=METRICS_PORT,
        help="Ray's Prometheus endpoint on 127.0.0.1: soundstage's metrics beside Serve's (0: Ray picks one)",
    )
    serve.add_argument("--verbose", action="store_true", help="stream replica logs to this terminal")
    serve.set_defaults(func=cmd_serve)

    add_submit_parser(sub)
    add_jobs_parser(sub)
    add_audio_parsers(sub)

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
    return parser


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


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM, then stop Serve, Ray (every process it started) and the store."""
    from deployments.tools.local_stack import LocalStack, LocalStackOptions

    options = LocalStackOptions(
        port=args.port,
        config_path=args.config,
        log_to_driver=args.verbose,
        data_dir=args.data_dir,
        dashboard_port=args.dashboard_port or None,
        metrics_port=args.metrics_port or None,
        models=args.models,
        model_uris=_model_overrides(args.model, args.config),
    )
    stack = LocalStack(options)
    _stop_on(signal.SIGINT, signal.SIGTERM)
    try:
        stack.start()
        _print_urls(stack, args.verbose)
        if args.first_job:
            client = SoundstageClient(stack.base_url, api_key=_first_key())
            job = client.submit("music", {"prompt": "warm lo-fi piano loop", "duration_s": 4.0, "seed": 1})
            print(f"first job {job['id']} submitted")
            _follow(client, job["id"], args.output_dir)
        if not args.exit:
            print("serving; press Ctrl-C (or send SIGTERM) to stop", flush=True)
            while True:
                time.sleep(1.0)
                stack.check()  # the embedded store exiting on its own ends the stack, with its log
    except StopRequested as e:
        print(f"{e} received")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: print("already stopping", flush=True))
        print("stopping Ray, Serve and the embedded S3 store", flush=True)
        stack.stop()
    return 0


def _model_overrides(pairs: list[str], config_path: Path | None) -> dict[str, str]:
    """`["music=/models/mg"]` → `{"music_model_uri": "/models/mg"}`; raise `SettingsError` naming the
    families the config has when one is unknown or a pair has no `=`."""
    from deployments.tools.serve_config import load_config, model_families

    families = model_families(load_config(config_path))
    out: dict[str, str] = {}
    for pair in pairs:
        family, sep, uri = pair.partition("=")
        if not sep or not uri or family not in families:
            raise SettingsError(f"--model {pair!r}: want FAMILY=URI with FAMILY one of {', '.join(families)}")
        out[families[family]] = uri
    return out


class StopRequested(KeyboardInterrupt):
    """SIGINT or SIGTERM reached `soundstage serve`; raised in the main thread wherever it is."""


def _stop_on(*signals: signal.Signals) -> None:
    """Turn each signal into `StopRequested`. Set explicitly because a shell starts background jobs
    with SIGINT ignored (Python then never installs its Ctrl-C handler), and because Ray's own SIGTERM
    handler would drain for 30 s and exit without stopping the stack."""

    def stop(signum: int, _: object) -> None:
        raise StopRequested(signal.Signals(signum).name)

    for sig in signals:
        signal.signal(sig, stop)


def _first_key() -> str | None:
    keys = load_settings().api_keys
    return keys[0] if keys else None


def _print_urls(stack: Any, verbose: bool) -> None:
    print(f"soundstage is up:  {stack.base_url}")
    print(f"  API docs:        {stack.base_url}/docs")
    print(f"  health:          {stack.base_url}/healthz")
    if stack.s3 is not None:
        print(f"  embedded S3:     {stack.s3.endpoint_url} (bucket {stack.settings.s3_bucket}, SeaweedFS)")
        print(f"  data dir:        {stack.s3.data_dir} (kept across restarts; log {stack.s3.log_path.name})")
        store_env = " ".join(f"{k}={v}" for k, v in stack.s3.env.items())
        print(f"  store for `soundstage models push`: export {store_env}")
    else:
        endpoint = stack.settings.s3_endpoint_url or "AWS S3"
        print(f"  S3 store:        {endpoint} (bucket {stack.settings.s3_bucket})")
    gpus = f"{stack.gpus} GPU(s)" if stack.gpus else "CPU only"
    print(f"  models:          {stack.options.models}, {gpus}")
    for line in start_report(stack.start_times) if stack.start_times else []:
        print(line)
    if stack.dashboard_url is not None:
        print(f"  Ray dashboard:   {stack.dashboard_url}")
        print(f"  Ray's tools:     export {ray_tools_env(stack.dashboard_url)}")
        print("                   (then `serve status`, `serve config`, `ray list actors`)")
    if stack.metrics_url is not None:
        print(f"  metrics:         {stack.metrics_url} (Prometheus; soundstage_* beside Serve's)")
    if not verbose:
        print("  replica logs:    /tmp/ray/session_latest/logs/serve/ (or run with --verbose)")


def ray_tools_env(dashboard_url: str) -> str:
    """The environment `serve status`, `serve config` and `ray list actors` need for this stack: its
    dashboard address (`ray` reads RAY_ADDRESS, `serve` RAY_DASHBOARD_ADDRESS) and token auth (Ray
    reads the token from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token, which the first
    local start writes)."""
    line = f"RAY_ADDRESS={dashboard_url} RAY_DASHBOARD_ADDRESS={dashboard_url} RAY_AUTH_MODE=token"
    if "RAY_AUTH_TOKEN_PATH" in os.environ:
        line += f" RAY_AUTH_TOKEN_PATH={os.environ['RAY_AUTH_TOKEN_PATH']}"
    return line


def _follow(client: SoundstageClient, job_id: str, output_dir: Path) -> dict[str, Any]:
    """`serve --first-job`: progress from the job's events, then its result downloaded and described."""
    job = follow(client, job_id, timeout_s=3600.0, show_progress=True)
    for line in result_lines(job, download_results(job, output_dir)):
        print(line)
    return job


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


if __name__ == "__main__":
    sys.exit(main())
