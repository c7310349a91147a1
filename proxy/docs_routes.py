"""The memory API's documents and the memory browser: ``/openapi.json``, ``/docs`` (the
readable page), ``/`` (to the browser) and the browser's static files at ``/ui``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from .api_docs import render_api_page
from .graph_models import GRAPH_OPERATIONS, GRAPH_QUERY_MODELS
from .openapi_spec import OPERATIONS, QUERY_MODELS, build_openapi
from .state import state_of

STATIC_DIR = Path(__file__).parent / "static"


def openapi_of(request: Request) -> dict[str, Any]:
    state = state_of(request)
    if state.openapi is None:
        state.openapi = build_openapi(
            [*OPERATIONS, *GRAPH_OPERATIONS], {**QUERY_MODELS, **GRAPH_QUERY_MODELS}
        )
    return state.openapi


async def openapi_json(request: Request) -> Response:
    return JSONResponse(openapi_of(request))


async def api_page(request: Request) -> Response:
    return Response(render_api_page(openapi_of(request)), media_type="text/html; charset=utf-8")


async def to_browser(request: Request) -> Response:
    return RedirectResponse("/ui/", status_code=307)


def docs_routes() -> list[BaseRoute]:
    return [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/docs", api_page, methods=["GET"]),
        Route("/", to_browser, methods=["GET"]),
        Mount("/ui", StaticFiles(directory=STATIC_DIR, html=True), name="ui"),
    ]


__all__ = ["STATIC_DIR", "docs_routes"]
