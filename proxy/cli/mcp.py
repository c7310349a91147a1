"""``memproxy mcp --config FILE [--user USER]``: the MCP server on stdio, for desktop clients
that launch a command (Claude Desktop). It opens the config's data dir itself and learns
through its own durable queue (the same ``queue.sqlite3`` a running server uses).

``memproxy mcp --url http://host:8787/mcp`` instead relays stdio to a running server's
``/mcp``, with the key from ``$MEMPROXY_API_KEY``: the server authenticates and authorizes.

The caller is the local user who launched the command (they can read the data dir anyway):
``--user`` binds every call to that user, as a bound API key does; without it, each tool
call names its user with the ``user_id`` argument.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from ..settings import Settings


async def _serve(settings: Settings, user: str | None) -> None:
    from memory_core import AsyncMemory
    from memory_core.queue import LearningQueue, open_job_store
    from memory_core.types import validate_id

    from ..app import queue_path
    from ..auth import OPEN_CALLER, Caller
    from ..change_events import change_job_kinds, watch_changes
    from ..learning import ExtractionModels, Learner
    from ..mcp_server import build_mcp_server, fixed_resolver
    from ..mcp_tools import MemoryTools
    from ..metrics import Metrics
    from ..model_routing import ModelRouter

    caller = OPEN_CALLER
    if user is not None:
        caller = Caller(name="stdio", users=(validate_id(user, "user_id"),), may_assert_users=False)
    extraction = ExtractionModels(settings, ModelRouter(settings.model_list))
    memory = AsyncMemory(settings.memory.core_config())
    await memory.open()
    metrics = Metrics()
    # The proxy's queue file: this process runs its jobs too, webhooks and profiles included.
    kinds = change_job_kinds(memory, settings, extraction)
    queue = LearningQueue(
        open_job_store(settings.memory.queue, queue_path(settings)),
        Learner(memory, extraction, metrics, kinds=kinds).handle,
        settings.memory.queue,
    )
    await queue.start()
    watch_changes(memory, queue, settings, extraction, metrics)  # its writes send events too
    try:
        tools = MemoryTools(memory, queue, extraction)
        server = build_mcp_server(
            settings.mcp.exposed(), fixed_resolver(tools, caller), resources=settings.mcp.resources
        )
        await server.run_stdio_async()
    finally:
        await queue.stop()
        await memory.close()


async def _relay(url: str, key: str | None) -> None:
    """Pump MCP messages between stdin/stdout and a running server's Streamable HTTP."""
    import anyio
    import httpx2
    from mcp.client.streamable_http import streamable_http_client
    from mcp.server.stdio import stdio_server

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60, read=300))
    async with (
        stdio_server() as (stdin, stdout),
        streamable_http_client(url, http_client=http) as (remote_in, remote_out),
    ):

        async def pump(source: Any, sink: Any) -> None:
            async for message in source:
                if isinstance(message, Exception):
                    logging.getLogger("proxy.mcp").warning("relay: %r", message)
                    continue
                await sink.send(message)
            tg.cancel_scope.cancel()  # one side closed: so does the relay

        async with anyio.create_task_group() as tg:
            tg.start_soon(pump, stdin, remote_out)
            tg.start_soon(pump, remote_in, stdout)


def _mcp(args: argparse.Namespace) -> int:
    # stdout is the protocol: every log line goes to stderr.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.url:
        import os

        asyncio.run(_relay(args.url, os.environ.get("MEMPROXY_API_KEY")))
        return 0
    settings = Settings.load(args.config)
    if not settings.memory.enabled:
        print("memproxy: memory is disabled in this config (memory.enabled)", file=sys.stderr)
        return 1
    asyncio.run(_serve(settings, args.user))
    return 0


def add_parsers(sub: Any) -> None:
    """Register ``mcp`` on the ``memproxy`` sub-parsers."""
    mcp = sub.add_parser("mcp", help="the MCP server on stdio (desktop assistants)")
    mcp.add_argument("--config")
    mcp.add_argument("--user", help="act for this user alone (else tools take user_id)")
    mcp.add_argument("--url", help="relay to a running server's /mcp ($MEMPROXY_API_KEY)")
    mcp.set_defaults(func=_mcp)
