"""Node clients of ``/v1/responses`` against memproxy under a real uvicorn server:
openai-node's ``responses.create`` (plain and streamed) and the Vercel AI SDK's default OpenAI
provider (``openai("model")`` speaks the Responses API), run by Node from tests/node (its
packages are installed from tests/node/package.json by ``npm ci`` on first use; node_modules is
not in git)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.api_servers import ApiRig, api_rig, new_user
from tests.servers import learn_state, wait_learned

NODE_DIR = Path(__file__).parent / "node"
SISTER = "I'm vegetarian and my sister lives in Lisbon"
QUESTION = "Where does my sister live?"


@pytest.fixture(scope="module")
def node() -> str:
    executable = shutil.which("node")
    npm = shutil.which("npm")
    assert executable and npm, "Node.js and npm are needed: apt-get install -y nodejs npm"
    if not (NODE_DIR / "node_modules" / "ai").is_dir():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_DIR,
            check=True,
            timeout=600,
        )
    return executable


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiRig]:
    with api_rig(tmp_path_factory.mktemp("node")) as rig:
        yield rig


def run_clients(node: str, rig: ApiRig, model: str, user: str) -> dict[str, object]:
    done = subprocess.run(
        [node, "clients.mjs", rig.proxy.url, model, user, QUESTION],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("model", ["fake-model", "lite-model"])
def test_openai_node_and_vercel_ai_sdk_recall(node: str, rig: ApiRig, model: str) -> None:
    user = new_user("node")
    before = learn_state(rig.proxy)
    client = openai.OpenAI(base_url=rig.proxy.url, api_key="x", max_retries=0)
    client.responses.create(model="fake-model", input=SISTER, extra_headers={"x-user-id": user})
    wait_learned(rig.proxy, before)
    sent_before = len(rig.openai_fake.requests_of("chat"))
    result = run_clients(node, rig, model, user)
    for name in ("openaiCreate", "openaiStream", "aiGenerate", "aiStream"):
        text = str(result[name])
        assert text.startswith(f"ECHO: {QUESTION} | MEMORIES: "), (name, text)
        assert "User's sister lives in Lisbon" in text, name
    assert int(str(result["openaiRecalled"])) >= 1
    assert result["openaiStreamTypes"] == ["response.created", "response.completed"]
    paths = {r.path for r in rig.openai_fake.requests_of("chat")[sent_before:]}
    assert paths == {"/v1/responses"}  # the AI SDK's default provider too


def test_no_leak_to_another_node_user(node: str, rig: ApiRig) -> None:
    result = run_clients(node, rig, "fake-model", new_user("stranger"))
    assert result["openaiCreate"] == f"ECHO: {QUESTION}"
    assert result["aiGenerate"] == f"ECHO: {QUESTION}"
