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
    exit_code_for,
    report_error,
)
from deployments.tools.cli_follow import download_results, follow, result_lines
from deployments.tools.cli_jobs import add_jobs_parser
from deployments.tools.cli_models import add_models_parser
from deployments.tools.cli_submit import UsageError, add_submit_parser
from deployments.tools.local_stack import DASHBOARD_PORT, METRICS_PORT, ModelsMissingError, start_report
from infra.client import ApiRequestError, JobFailedError, SoundstageClient
from infra.embedded_s3 import EmbeddedS3Error
from infra.model_store import ModelStoreError
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

    add_models_parser(sub)
    return parser


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


if __name__ == "__main__":
    sys.exit(main())
