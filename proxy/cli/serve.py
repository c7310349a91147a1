"""``memproxy serve``, ``memproxy check-config`` and ``memproxy keys hash``."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import signal
from typing import Any

from ..settings import Settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from memory_core.litellm_loader import get_litellm

    from ..app import create_app
    from ..http_server import uvicorn_options
    from ..logs import configure_logging, secrets_in

    settings = Settings.load(args.config, host=args.host, port=args.port)
    settings.check_bind()
    get_litellm()  # before configure_logging: it installs a log handler of its own
    configure_logging(
        settings.server.log_level, settings.server.log_format, secrets_in(settings.model_dump())
    )
    # uvicorn re-raises the signal it shut down on once it is done; a graceful SIGTERM
    # shutdown (docker stop, systemd) then exits 0 instead of dying by the signal.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    options: dict[str, Any] = {
        "host": settings.server.host,
        "port": settings.server.port,
        "log_level": settings.server.log_level,
        "log_config": None,  # uvicorn's loggers go through ours (format, request id, scrubbing)
        "access_log": False,
        "timeout_graceful_shutdown": int(settings.memory.queue.shutdown_grace_s) + 5,
        **uvicorn_options(settings.server.limits),
    }
    if args.workers > 1:
        # uvicorn's supervisor shares one listening socket among worker processes, each
        # building its own app (store, caches, queue workers) from the same config.
        os.environ[WORKER_ARGS_ENV] = json.dumps(
            {"config": args.config, "host": args.host, "port": args.port}
        )
        options["http"] = f"{__name__}:WorkerHttpProtocol"  # the workers import it by name
        uvicorn.run(f"{__name__}:worker_app", factory=True, workers=args.workers, **options)
    else:
        uvicorn.run(create_app(settings, freeze_heap=True), **options)
    return 0


WORKER_ARGS_ENV = "MEMPROXY_WORKER_ARGS"


def _worker_settings() -> Settings:
    spec = json.loads(os.environ[WORKER_ARGS_ENV])
    return Settings.load(spec["config"], host=spec["host"], port=spec["port"])


def worker_app() -> Any:
    """The app of one ``serve --workers N`` process (uvicorn imports and calls this)."""
    from memory_core.litellm_loader import get_litellm

    from ..app import create_app
    from ..logs import configure_logging, secrets_in

    settings = _worker_settings()
    get_litellm()  # before configure_logging, as in the parent process
    configure_logging(
        settings.server.log_level, settings.server.log_format, secrets_in(settings.model_dump())
    )
    return create_app(settings, freeze_heap=True)


def __getattr__(name: str) -> Any:
    # A worker process imports its HTTP protocol by name (uvicorn cannot hand it the class
    # built for the configured limits): ``WorkerHttpProtocol`` is built here, from the config.
    if name == "WorkerHttpProtocol":
        from ..http_server import bounded_protocol

        return bounded_protocol(_worker_settings().server.limits)
    raise AttributeError(name)


def _check_config(args: argparse.Namespace) -> int:
    settings = Settings.load(args.config)
    settings.extraction_llm()
    settings.check_bind()
    from ..webhooks import WebhookSender

    WebhookSender(settings.webhooks)  # every webhook secret set and long enough
    names = ", ".join(d.model_name for d in settings.model_list) or "(none)"
    print(f"config OK: models {names}; storage {settings.memory.storage_uri}")
    return 0


def _keys_hash(args: argparse.Namespace) -> int:
    from ..auth import hash_key

    key = args.key if args.key is not None else getpass.getpass("API key: ")
    print(hash_key(key))
    return 0


def add_parsers(sub: Any) -> None:
    """Register ``serve``, ``check-config`` and ``keys`` on the ``memproxy`` sub-parsers."""
    serve = sub.add_parser("serve", help="run the proxy")
    serve.add_argument("--config", help="YAML config (default: $MEMPROXY_CONFIG)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port, the data dir and the learning queue",
    )
    serve.set_defaults(func=_serve)

    check = sub.add_parser("check-config", help="validate a config file")
    check.add_argument("--config")
    check.set_defaults(func=_check_config)

    keys = sub.add_parser("keys", help="API key helpers")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    hash_cmd = keys_sub.add_parser("hash", help="print the SHA-256 to put in auth.keys")
    hash_cmd.add_argument("key", nargs="?")
    hash_cmd.set_defaults(func=_keys_hash)
