"""``memproxy mcp --config FILE [--user USER]``: the MCP server on stdio, for desktop clients
that launch a command (Claude Desktop). It opens the config's data dir itself and learns
through its own durable queue (the same ``queue.sqlite3`` a running server uses).

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
    from memory_core.queue import LearningQueue
    from memory_core.types import validate_id

    from ..app import queue_path
    from ..auth import OPEN_CALLER, Caller
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
    queue = LearningQueue(
        queue_path(settings),
        Learner(memory, extraction, Metrics()).handle,
        settings.memory.queue,
    )
    await queue.start()
    try:
        tools = MemoryTools(memory, queue, extraction)
        server = build_mcp_server(settings.mcp.exposed(), fixed_resolver(tools, caller))
        await server.run_stdio_async()
    finally:
        await queue.stop()
        await memory.close()


def _mcp(args: argparse.Namespace) -> int:
    # stdout is the protocol: every log line goes to stderr.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
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
    mcp.set_defaults(func=_mcp)
