"""`soundstage submit KIND ...`: one subcommand per job kind, its options derived from the kind's
request model in the registry (`pipelines/engine/registry.py`), so a field added to a request is an
option here without an edit. Only the options that are given are sent; the API applies the defaults."""

from __future__ import annotations

import argparse
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic.fields import FieldInfo

from deployments.tools.cli_common import ExitCode, add_api_arguments, client_for, emit
from deployments.tools.cli_follow import download_results, follow, result_lines
from pipelines.engine.kinds import JobKind
from pipelines.engine.registry import JOB_KINDS

POSITIONAL = ("prompt",)  # a required field with one of these names is a positional argument
NULL = "null"  # the value that sends JSON null to an optional field (e.g. --loudness-lufs null)
SEND_NULL = object()  # what `null` parses to (None is "not given": the API's default applies)
OWN_OPTIONS = ("url", "json", "wait", "output_dir", "timeout", "quiet", "idempotency_key", "webhook_url")


class UsageError(ValueError):
    """The arguments cannot make a request (the CLI exits 2 without calling the API)."""


def add_submit_parser(sub: Any) -> None:
    """`submit` with one subcommand per job kind."""
    submit = sub.add_parser("submit", help="submit a job of any kind (options from its request model)")
    kinds = submit.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind in JOB_KINDS.values():
        summary = kind.summary.replace("%", "%%")
        parser = kinds.add_parser(kind.name, help=summary or f"a {kind.name} job", description=kind.summary)
        add_kind_arguments(parser, kind)
        add_follow_arguments(parser)
        parser.add_argument(
            "--idempotency-key", default=None, help="resubmitting with it returns the same job"
        )
        parser.add_argument("--webhook-url", default=None, help="signed POST when the job ends")
        parser.add_argument("--webhook-events", default=None, help="comma-separated, e.g. job.succeeded")
        add_api_arguments(parser)
        parser.set_defaults(func=cmd_submit, job_kind=kind)


def add_follow_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", action="store_true", help="follow progress, then download the result")
    parser.add_argument("--output-dir", type=Path, default=Path("soundstage-output"))
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to follow (exit 10 after)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar (also off with --json)")


def add_kind_arguments(parser: argparse.ArgumentParser, kind: JobKind[Any]) -> None:
    """The audio input (a positional file or URL, for kinds that take audio) and one option per field."""
    if "file" in kind.inputs:
        sources = "an audio file or an http(s) URL" if "url" in kind.inputs else "an audio file"
        parser.add_argument("input", nargs="?", default=None, help=f"{sources} (or --upload-id)")
    for name, info in kind.request.model_fields.items():
        if name in OWN_OPTIONS:
            raise RuntimeError(f"{kind.name}: field {name!r} clashes with an option of the CLI's own")
        _add_field(parser, name, info, required=info.is_required() and name != "upload_id")


def _add_field(parser: argparse.ArgumentParser, name: str, info: FieldInfo, required: bool) -> None:
    base, optional = _unwrap(info.annotation)
    help_text = (info.description or "").replace("%", "%%")
    default = None if required else info.get_default(call_default_factory=True)
    if not required:
        help_text += f" (default: {'unset' if default is None else default})"
    if optional and default is not None:
        help_text += f"; {NULL} sends none"
    if name in POSITIONAL and required:
        parser.add_argument(name, type=_caster(base, optional), help=help_text)
        return
    flag = "--" + name.replace("_", "-")
    if base is bool:
        parser.add_argument(
            flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text
        )
        return
    literal = [str(v) for v in get_args(base)] if get_origin(base) is Literal else None
    choices = None if literal is None else [*literal, *([SEND_NULL] if optional else [])]
    metavar = None if literal is None else "{" + ",".join(literal + ([NULL] if optional else [])) + "}"
    parser.add_argument(
        flag,
        dest=name,
        type=_caster(base, optional),
        choices=choices,
        metavar=metavar,
        required=required,
        default=None,
        help=help_text,
    )


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """`float | None` → (float, True); `Annotated[str, …]` → (str, False)."""
    optional = False
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        optional = len(members) < len(get_args(annotation))
        annotation = members[0] if len(members) == 1 else str
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation, optional


def _caster(base: Any, optional: bool) -> Any:
    convert = base if base in (int, float) else str

    def cast(text: str) -> Any:
        if optional and text == NULL:
            return SEND_NULL
        return convert(text)

    cast.__name__ = getattr(convert, "__name__", "value")  # argparse names the type in its messages
    return cast


def request_fields(args: argparse.Namespace, kind: JobKind[Any]) -> dict[str, Any]:
    """The fields given on the command line (None where `null` was given for an optional one)."""
    given = {name: getattr(args, name, None) for name in kind.request.model_fields}
    return {name: None if v is SEND_NULL else v for name, v in given.items() if v is not None}


def cmd_submit(args: argparse.Namespace) -> int:
    kind: JobKind[Any] = args.job_kind
    client = client_for(args)
    fields = request_fields(args, kind)
    webhook = {"webhook_url": args.webhook_url} if args.webhook_url else {}
    if args.webhook_events:
        webhook["webhook_events"] = args.webhook_events
    if kind.inputs:
        job = _submit_form(client, kind, args, fields, webhook)
    else:
        events = webhook.pop("webhook_events", None)
        body = {**fields, **webhook, **({"webhook_events": events.split(",")} if events else {})}
        job = client.submit(kind.name, body, idempotency_key=args.idempotency_key)
    if not args.wait:
        emit(args, job, [f"job {job['id']} {job['status']}: {job['status_url']}"])
        return ExitCode.OK
    return finish(args, client, job["id"])


def _submit_form(
    client: Any, kind: JobKind[Any], args: argparse.Namespace, fields: dict[str, Any], extra: dict[str, str]
) -> dict[str, Any]:
    form = {name: _form_value(value) for name, value in fields.items()} | extra
    source = getattr(args, "input", None)
    file: Path | None = None
    if source is not None and source.startswith(("http://", "https://")):
        if "url" not in kind.inputs:
            raise UsageError(f"{kind.name} takes a file or --upload-id, not a URL")
        form["url"] = source
    elif source is not None:
        file = Path(source)
        if not file.is_file():
            raise UsageError(f"no such file: {source}")
    return dict(client.submit_form(kind.name, form, file, idempotency_key=args.idempotency_key))


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def finish(args: argparse.Namespace, client: Any, job_id: str) -> int:
    """Follow the job (progress on stderr unless --quiet or --json), download its result, print it."""
    job = follow(client, job_id, args.timeout, show_progress=not (args.quiet or args.json))
    files = download_results(job, args.output_dir)
    emit(args, {**job, "files": {name: str(path) for name, path in files.items()}}, result_lines(job, files))
    return ExitCode.OK
