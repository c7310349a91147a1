"""The ``memproxy`` command: ``serve``, ``check-config``, ``keys hash``, ``queue``, ``memories``."""

from __future__ import annotations

import argparse
import getpass
import logging
import signal
import sys
from collections.abc import Sequence

from memory_core.errors import MemoryCoreError

from .settings import Settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app
    from .http_server import uvicorn_options

    settings = Settings.load(args.config, host=args.host, port=args.port)
    settings.check_bind()
    logging.basicConfig(
        level=settings.server.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # uvicorn re-raises the signal it shut down on once it is done; a graceful SIGTERM
    # shutdown (docker stop, systemd) then exits 0 instead of dying by the signal.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    uvicorn.run(
        create_app(settings),
        host=settings.server.host,
        port=settings.server.port,
        log_level=settings.server.log_level,
        access_log=False,
        timeout_graceful_shutdown=int(settings.memory.queue.shutdown_grace_s) + 5,
        **uvicorn_options(settings.server.limits),
    )
    return 0


def _check_config(args: argparse.Namespace) -> int:
    settings = Settings.load(args.config)
    settings.extraction_llm()
    settings.check_bind()
    names = ", ".join(d.model_name for d in settings.model_list) or "(none)"
    print(f"config OK: models {names}; storage {settings.memory.storage_uri}")
    return 0


def _keys_hash(args: argparse.Namespace) -> int:
    from .auth import hash_key

    key = args.key if args.key is not None else getpass.getpass("API key: ")
    print(hash_key(key))
    return 0


def _queue(args: argparse.Namespace) -> int:
    from memory_core.queue import JobStore

    from .app import queue_path

    settings = Settings.load(args.config)
    path = queue_path(settings)
    assert path is not None
    if not path.exists():  # a wrong config must not silently create an empty queue elsewhere
        print(f"memproxy: no learning queue at {path} (check memory.storage_uri)", file=sys.stderr)
        return 1
    store = JobStore(path)
    try:
        if args.queue_command == "status":
            stats = store.stats()
            print(" ".join(f"{k}={v}" for k, v in stats.items()))
            for job in store.dead_jobs(limit=20):
                print(
                    f"dead {job['id']} scope={job['scope_key']} "
                    f"attempts={job['attempts']}: {job['last_error']}"
                )
        elif args.queue_command == "retry":
            print(f"requeued {store.retry_dead(args.job_id)} dead jobs")
        elif args.queue_command == "purge":
            print(f"purged {store.purge_dead()} dead jobs")
    finally:
        store.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memproxy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the proxy")
    serve.add_argument("--config", help="YAML config (default: $MEMPROXY_CONFIG)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=_serve)

    check = sub.add_parser("check-config", help="validate a config file")
    check.add_argument("--config")
    check.set_defaults(func=_check_config)

    keys = sub.add_parser("keys", help="API key helpers")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    hash_cmd = keys_sub.add_parser("hash", help="print the SHA-256 to put in auth.keys")
    hash_cmd.add_argument("key", nargs="?")
    hash_cmd.set_defaults(func=_keys_hash)

    queue = sub.add_parser("queue", help="inspect the learning queue")
    queue.add_argument("--config")
    queue_sub = queue.add_subparsers(dest="queue_command", required=True)
    queue_sub.add_parser("status", help="counts and dead letters").set_defaults(func=_queue)
    retry = queue_sub.add_parser("retry", help="requeue dead jobs")
    retry.add_argument("job_id", nargs="?")
    retry.set_defaults(func=_queue)
    queue_sub.add_parser("purge", help="drop dead jobs").set_defaults(func=_queue)

    from .memories_cli import add_memories_parser

    add_memories_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except MemoryCoreError as exc:
        print(f"memproxy: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
