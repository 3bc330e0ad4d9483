"""What every API subcommand of `soundstage` shares: exit codes, where the URL and the API key come
from, and how results are printed (`--json` for scripts, lines for people)."""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import tomllib
from enum import IntEnum
from pathlib import Path
from typing import Any

import httpx

from infra.client import ApiRequestError, JobFailedError, SoundstageClient

DEFAULT_URL = "http://127.0.0.1:8000"


class ExitCode(IntEnum):
    """What `soundstage` exits with; scripts may rely on these (README: CLI reference)."""

    OK = 0
    ERROR = 1  # anything else: a server fault (5xx), a local I/O error
    USAGE = 2  # bad arguments, or the API refused the request as invalid (400, 413, 415, 422)
    JOB_FAILED = 3  # a followed job ended `failed`
    AUTH = 4  # no or wrong API key (401, 403), or a config file holding a key that others can read
    NOT_FOUND = 5  # 404: no such job, upload, voice or model (or another tenant's)
    UNAVAILABLE = 6  # the API cannot be reached, or answers 502, 503 (overloaded, storage down), 504
    CONFLICT = 7  # 409: idempotency conflict, cancelling a finished job, a source job not succeeded
    QUOTA = 8  # 429: over a quota
    CANCELLED = 9  # a followed job ended `cancelled`
    TIMEOUT = 10  # --timeout passed while following a job


class ConfigError(RuntimeError):
    """The CLI's config file cannot be used; `code` is the exit code it means."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.code = code


def exit_code_for(error: BaseException) -> ExitCode:
    """The exit code of an error met by an API subcommand."""
    if isinstance(error, ApiRequestError):
        return _HTTP_EXIT.get(error.status, ExitCode.USAGE if error.status < 500 else ExitCode.ERROR)
    if isinstance(error, JobFailedError):
        return ExitCode.CANCELLED if error.job.get("status") == "cancelled" else ExitCode.JOB_FAILED
    if isinstance(error, ConfigError):
        return error.code
    if isinstance(error, TimeoutError):
        return ExitCode.TIMEOUT
    if isinstance(error, httpx.TransportError):
        return ExitCode.UNAVAILABLE
    return ExitCode.ERROR


_HTTP_EXIT = {
    401: ExitCode.AUTH,
    403: ExitCode.AUTH,
    404: ExitCode.NOT_FOUND,
    409: ExitCode.CONFLICT,
    429: ExitCode.QUOTA,
    502: ExitCode.UNAVAILABLE,
    503: ExitCode.UNAVAILABLE,
    504: ExitCode.UNAVAILABLE,
}


def config_path() -> Path:
    """`SOUNDSTAGE_CONFIG_FILE`, else `$XDG_CONFIG_HOME/soundstage/config.toml` (~/.config by default)."""
    if explicit := os.environ.get("SOUNDSTAGE_CONFIG_FILE"):
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "soundstage" / "config.toml"


def read_config(path: Path) -> dict[str, Any]:
    """The config file's `url` and `api_key` ({} when there is no file). A file holding a key must be
    readable by its owner alone (like ssh's keys): group or other permission bits → `ConfigError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}", ExitCode.USAGE) from e
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}", ExitCode.USAGE) from e
    unknown = sorted(set(config) - {"url", "api_key"})
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown keys {unknown} (allowed: url, api_key)", ExitCode.USAGE
        )
    mode = stat.S_IMODE(path.stat().st_mode)
    if "api_key" in config and mode & 0o077:
        raise ConfigError(
            f"config file {path} holds an API key and is readable by others (mode {mode:04o}); "
            f"run: chmod 600 {path}",
            ExitCode.AUTH,
        )
    return config


def resolve_connection(url: str | None) -> tuple[str, str | None]:
    """The API's base URL (`--url`, else SOUNDSTAGE_URL, else the config file's, else the local
    stack's) and key (SOUNDSTAGE_API_KEY, else the config file's; never from argv, where `ps` shows it)."""
    config = read_config(config_path())
    base = url or os.environ.get("SOUNDSTAGE_URL") or config.get("url") or DEFAULT_URL
    key = os.environ.get("SOUNDSTAGE_API_KEY") or config.get("api_key")
    return str(base), (str(key) if key else None)


def client_for(args: argparse.Namespace) -> SoundstageClient:
    base, key = resolve_connection(args.url)
    return SoundstageClient(base, api_key=key)


def add_api_arguments(parser: argparse.ArgumentParser) -> None:
    """`--url` and `--json`, which every API subcommand takes."""
    parser.add_argument(
        "--url",
        default=None,
        help=f"API base URL (default: env SOUNDSTAGE_URL, else the config file's url, else {DEFAULT_URL})",
    )
    parser.add_argument("--json", action="store_true", help="print JSON on stdout, for scripts")


def emit(args: argparse.Namespace, value: Any, lines: list[str]) -> None:
    """`value` as one JSON document with `--json`, else the human-readable `lines`."""
    if getattr(args, "json", False):
        print(json.dumps(value, indent=2, default=str))
    else:
        for line in lines:
            print(line)


def report_error(args: argparse.Namespace, error: BaseException, code: ExitCode) -> None:
    """One line on stderr; with `--json` also `{"error": {...}, "exit_code": N}` on stdout."""
    print(f"soundstage: {error}", file=sys.stderr)
    if getattr(args, "json", False):
        detail: dict[str, Any] = {"message": str(error)}
        if isinstance(error, ApiRequestError):
            detail = {"status": error.status, "code": error.code, "message": error.message}
        elif isinstance(error, JobFailedError):
            detail = {"code": f"job_{error.job.get('status')}", "message": str(error), "job": error.job}
        print(json.dumps({"error": detail, "exit_code": int(code)}, indent=2, default=str))
