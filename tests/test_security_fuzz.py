"""Property-based fuzz of the memory REST API from its own ``/openapi.json`` (schemathesis,
CLI in a subprocess) against a real uvicorn server with API keys, once with the admin key and
once with a key bound to one user: zero 5xx, every status and body as documented.

``MEMPROXY_FUZZ_EXAMPLES`` sets the examples per operation (default 25, CI's bound).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import API_KEYS, HashEmbedder

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = int(os.environ.get("MEMPROXY_FUZZ_EXAMPLES", "25"))
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory, fake_upstream: Any) -> Iterator[str]:
    """The proxy with the test keys, extraction through the fake upstream, the fast embedder,
    graph memory on."""
    from memory_core import AsyncMemory
    from proxy.app import create_app
    from proxy.http_server import uvicorn_options
    from proxy.settings import Settings
    from tests.conftest import api_settings
    from tests.servers import ServerThread

    base = api_settings(str(tmp_path_factory.mktemp("fuzz") / "lancedb"))
    data = base.model_dump(mode="json")
    data["auth"]["keys"] = [k.model_dump() for k in base.auth.keys]
    data["memory"]["llm"] = {
        "model": "openai/fake-model",
        "api_base": fake_upstream.url,
        "api_key": "sk-fake",
    }
    data["memory"]["graph"] = {"enabled": True}  # the graph routes answer, not only 409
    settings = Settings.from_dict(data)
    memory = AsyncMemory(settings.memory.core_config(), embedder=HashEmbedder())
    app = create_app(settings, memory=memory)
    with ServerThread(app, **uvicorn_options(settings.server.limits)) as server:
        yield server.base_url


def schemathesis_command() -> list[str]:
    found = shutil.which("st", path=str(Path(sys.executable).parent))
    assert found, "schemathesis is not installed: pip install -e '.[dev]'"
    return [found]


@pytest.mark.parametrize("key", ["admin", "alice"])
def test_rest_api_fuzz_has_no_server_errors_and_keeps_its_schema(
    fuzz_server: str, key: str, tmp_path: Path
) -> None:
    spec = httpx.get(fuzz_server + "/openapi.json").json()
    assert len(spec["paths"]) >= 9
    command = [
        *schemathesis_command(),
        "run",
        fuzz_server + "/openapi.json",
        "--url",
        fuzz_server,
        "--checks",
        CHECKS,
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        "13",
        "--workers",
        "1",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--generation-database",
        "none",
        "--no-color",
        "--request-timeout",
        "60",
        "-H",
        f"Authorization: Bearer {API_KEYS[key]}",
        # /reset wipes the store; it is fuzzed last by its own test.
        "--exclude-path",
        "/reset",
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=1200, cwd=tmp_path, check=False, env=env
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "passed" in output.lower(), output[-2000:]
