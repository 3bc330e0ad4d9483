"""`soundstage jobs list|show|cancel|report|wait` and `soundstage upload`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from deployments.tools.cli_common import ExitCode, add_api_arguments, client_for, emit
from deployments.tools.cli_submit import add_follow_arguments, finish

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


def add_jobs_parser(sub: Any) -> None:
    jobs = sub.add_parser("jobs", help="list, show, follow, cancel jobs and read their reports")
    actions = jobs.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="newest first")
    listing.add_argument("--status", choices=STATUSES, default=None)
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--after", default=None, help="the `next` cursor of the page before")
    listing.set_defaults(func=cmd_list)
    for name, func, text in (
        ("show", cmd_show, "status, progress, stage, error and result URLs"),
        ("cancel", cmd_cancel, "a queued job at once, a running one at its next stage"),
        ("report", cmd_report, "where the job's time went: stages, retries, memory, weights"),
        ("wait", cmd_wait, "follow a job to its end and download its result"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("job_id")
        action.set_defaults(func=func)
        if name == "wait":
            add_follow_arguments(action)
    for action in actions.choices.values():
        add_api_arguments(action)
    wait = sub.add_parser("wait", help="the same as `jobs wait`")
    wait.add_argument("job_id")
    add_follow_arguments(wait)
    add_api_arguments(wait)
    wait.set_defaults(func=cmd_wait)
    upload = sub.add_parser("upload", help="store an audio file; prints its upload_id")
    upload.add_argument("file", type=Path)
    add_api_arguments(upload)
    upload.set_defaults(func=cmd_upload)


def cmd_list(args: argparse.Namespace) -> int:
    page = client_for(args).jobs(status=args.status, limit=args.limit, after=args.after)
    lines = [_job_line(job) for job in page.get("jobs", [])]
    if page.get("next_after"):
        lines.append(f"more: --after {page['next_after']}")
    emit(args, page, lines)
    return ExitCode.OK


def _job_line(job: dict[str, Any]) -> str:
    progress = f"{round(float(job.get('progress') or 0) * 100):>3}%"
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(job.get("created_at") or 0)))
    return f"{job['id']}  {job.get('kind', ''):<13} {job['status']:<9} {progress}  {created}Z"


def cmd_show(args: argparse.Namespace) -> int:
    job = client_for(args).job(args.job_id)
    lines = [_job_line(job), f"stage: {job.get('stage')}"]
    if job.get("error"):
        error = job["error"]
        lines.append(f"error: {error.get('code')} at {error.get('stage')}: {error.get('message')}")
    for name, item in (job.get("result") or {}).items():
        if isinstance(item, dict) and "url" in item:
            lines.append(f"{name}: {item['url']}")
    emit(args, job, lines)
    return ExitCode.OK


def cmd_cancel(args: argparse.Namespace) -> int:
    job = client_for(args).cancel(args.job_id)
    emit(args, job, [f"job {job['id']} {job['status']} (cancel requested)"])
    return ExitCode.OK


def cmd_report(args: argparse.Namespace) -> int:
    report = client_for(args).report(args.job_id)
    lines = [
        f"job {report['id']} {report['kind']} {report['status']}: wall {report.get('wall_s')} s, "
        f"queued {report.get('queued_s')} s"
    ]
    lines += [
        f"  {stage['name']}: {stage['duration_s']:.3f} s, retries {stage['retries']}, "
        f"peak memory {stage['peak_memory_bytes']} B"
        for stage in report.get("stages") or []
    ]
    if report.get("failure"):
        failure = report["failure"]
        lines.append(f"failed at {failure.get('stage')}: {failure.get('code')} {failure.get('message')}")
    if report.get("debug_weights"):
        lines.append(f"debug (random-init) weights: {', '.join(map(str, report['debug_weights']))}")
    emit(args, report, lines)
    return ExitCode.OK


def cmd_wait(args: argparse.Namespace) -> int:
    return finish(args, client_for(args), args.job_id)


def cmd_upload(args: argparse.Namespace) -> int:
    upload = client_for(args).upload(args.file)
    emit(args, upload, [str(upload["upload_id"])])
    return ExitCode.OK
