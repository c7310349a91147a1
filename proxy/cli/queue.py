"""``memproxy queue status|retry|purge|results|log``: the learning queue's counts, dead
letters and what finished jobs did (``log``: the learning log, facts and decisions)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

import orjson

from memory_core.learning_report import summary

from ..learning_models import MAX_PAGE
from ..settings import Settings

if TYPE_CHECKING:
    from memory_core.jobs import JobStore


def _queue(args: argparse.Namespace) -> int:
    from memory_core.errors import QueueStoreError
    from memory_core.queue import open_job_store

    from ..app import queue_path

    settings = Settings.load(args.config)
    config = settings.memory.queue
    path = queue_path(settings)
    # A wrong config must not silently create an empty SQLite queue elsewhere.
    if config.backend == "sqlite" and not path.exists():
        print(f"memproxy: no learning queue at {path} (check memory.storage_uri)", file=sys.stderr)
        return 1
    try:
        store = open_job_store(config, path)
        return _run(args, store)
    except QueueStoreError as exc:
        print(f"memproxy: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, store: JobStore) -> int:
    try:
        if args.queue_command == "status":
            stats = {"backend": store.backend, **store.stats()}
            print(" ".join(f"{k}={v}" for k, v in stats.items()))
            for job in store.dead_jobs(limit=20):
                print(
                    f"dead {job['id']} scope={job['scope_key']} "
                    f"attempts={job['attempts']}: {job['last_error']}"
                )
            for row in store.results(limit=10):
                print(outcome_line(row))
        elif args.queue_command == "results":
            rows = store.results(limit=max(1, min(args.limit, 10_000)), job_id=args.job_id)
            if args.json:
                print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
            for row in [] if args.json else rows:
                print(outcome_line(row))
        elif args.queue_command == "log":
            from ..auth import OPEN_CALLER  # the CLI reads the queue as its operator
            from ..learning_api import log_entry

            rows = store.results(max(1, min(args.limit, MAX_PAGE)), scope_key=args.user_id)
            entries = [log_entry(row, OPEN_CALLER) for row in rows]
            if args.json:
                print(orjson.dumps(entries, option=orjson.OPT_INDENT_2).decode())
            for entry in [] if args.json else entries:
                print("\n".join(log_lines(entry)))
            if not entries and not args.json:
                print("no finished learning jobs" + (f" of {args.user_id}" if args.user_id else ""))
        elif args.queue_command == "retry":
            print(f"requeued {store.retry_dead(args.job_id)} dead jobs")
        elif args.queue_command == "purge":
            print(f"purged {store.purge_dead()} dead jobs")
    finally:
        store.close()
    return 0


def outcome_line(row: dict[str, Any]) -> str:
    """``finished <id> scope=... attempts=N: applied facts=2 ADD=1 ...`` (or the error)."""
    result = row.get("result")
    detail = summary(result) if result else f"{row['status']}: {row.get('error')}"
    return f"finished {row['id']} scope={row['scope_key']} attempts={row['attempts']}: {detail}"


def log_lines(entry: dict[str, Any]) -> list[str]:
    """One job of the learning log: a heading line, its facts, decisions and error."""
    kind = "" if entry["kind"] == "learn" else f" {entry['kind']}"
    lines = [
        f"{entry['finished_at']} {entry['id']}{kind} user={entry['user_id']} "
        f"{entry['status']} attempts={entry['attempts']}"
    ]
    lines += [f"  fact: {fact}" for fact in entry["facts"]]
    for decision in entry["decisions"]:
        line = f"  {decision['event']}"
        if decision.get("memory_id"):
            line += f" {decision['memory_id']}"
        if decision.get("old_memory") and decision.get("old_memory") != decision.get("text"):
            line += f" {decision['old_memory']!r} ->"
        if decision.get("text"):
            line += f" {decision['text']!r}"
        if decision.get("reason"):
            line += f" (reason: {decision['reason']})"
        lines.append(line + f" [{decision['origin']}]")
    if entry["error"]:
        lines.append(f"  error: {entry['error']}")
    return lines


def add_parsers(sub: Any) -> None:
    """Register ``queue`` on the ``memproxy`` sub-parsers."""
    queue = sub.add_parser("queue", help="inspect the learning queue")
    queue.add_argument("--config")
    queue_sub = queue.add_subparsers(dest="queue_command", required=True)
    queue_sub.add_parser("status", help="counts and dead letters").set_defaults(func=_queue)
    retry = queue_sub.add_parser("retry", help="requeue dead jobs")
    retry.add_argument("job_id", nargs="?")
    retry.set_defaults(func=_queue)
    queue_sub.add_parser("purge", help="drop dead jobs").set_defaults(func=_queue)
    results = queue_sub.add_parser(
        "results", help="what finished jobs did: facts, decisions, rejections, errors"
    )
    results.add_argument("job_id", nargs="?")
    results.add_argument("--limit", type=int, default=20)
    results.add_argument("--json", action="store_true", help="the stored results as JSON")
    results.set_defaults(func=_queue)
    log = queue_sub.add_parser(
        "log", help="the learning log: each job's facts, decisions (with reasons) and errors"
    )
    log.add_argument("--user-id", help="only this user's jobs")
    log.add_argument("--limit", type=int, default=20, help=f"newest N jobs (at most {MAX_PAGE})")
    log.add_argument("--json", action="store_true", help="the entries as GET /v1/learning has them")
    log.set_defaults(func=_queue)
