"""``memproxy memories ...`` against a local data dir and against a running proxy."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from proxy.cli import main
from tests.conftest import API_KEYS, ApiServer, HashEmbedder


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def json_lines(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def fast_local_embedder(monkeypatch: pytest.MonkeyPatch) -> None:
    """The local backend builds its own AsyncMemory: give it the fast embedder."""
    monkeypatch.setattr(
        "memory_core.memory_resources.create_embedder", lambda config: HashEmbedder()
    )


def test_local_data_dir_roundtrip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fast_local_embedder: None
) -> None:
    data = str(tmp_path / "data")
    local = ("--data", data, "--user", "alice")
    code, out, _ = run(capsys, "memories", "add", *local, "I like green tea", "I live in Porto")
    assert code == 0 and out.count("ADD") == 2
    code, out, _ = run(capsys, "memories", "add", *local, "x", "--metadata", '{"k": 1}')
    assert code == 0
    code, out, _ = run(capsys, "memories", "list", *local, "--json")
    items = json_lines(out)
    assert code == 0 and {i["memory"] for i in items} == {
        "I like green tea",
        "I live in Porto",
        "x",
    }
    assert [i["metadata"] for i in items if i["memory"] == "x"] == [{"k": 1}]
    code, out, _ = run(capsys, "memories", "list", *local)
    assert code == 0 and "I live in Porto" in out and items[0]["id"] in out
    code, out, _ = run(capsys, "memories", "search", *local, "green tea", "--json", "--limit", "1")
    assert code == 0 and [i["memory"] for i in json_lines(out)] == ["I like green tea"]

    export = tmp_path / "alice.jsonl"
    code, _, err = run(capsys, "memories", "export", *local, "-o", str(export))
    assert code == 0 and "exported 3 memories" in err
    exported = json_lines(export.read_text())
    assert {i["id"] for i in exported} == {i["id"] for i in items}

    code, out, _ = run(capsys, "memories", "delete", *local, "--all", "--yes")
    assert code == 0 and "deleted 3" in out
    code, out, _ = run(capsys, "memories", "list", *local, "--json")
    assert json_lines(out) == []

    code, out, _ = run(capsys, "memories", "import", "--data", data, str(export))
    assert code == 0 and "imported 3" in out
    code, out, _ = run(capsys, "memories", "import", "--data", data, str(export))
    assert code == 0 and "imported 0, already present 3" in out
    code, out, _ = run(capsys, "memories", "list", *local, "--json")
    assert {i["id"] for i in json_lines(out)} == {i["id"] for i in items}

    code, out, _ = run(capsys, "memories", "delete", "--data", data, items[0]["id"])
    assert code == 0 and items[0]["id"] in out
    code, _, err = run(capsys, "memories", "delete", "--data", data, items[0]["id"])
    assert code == 1 and err.count("\n") == 1 and "not found" in err


def test_local_import_reports_bad_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fast_local_embedder: None
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(
        '{"id": "m1", "memory": "good one", "user_id": "bob"}\n'
        "not json\n"
        '{"id": "m2", "memory": "no owner"}\n'
        '{"id": "m3", "memory": "good two", "user_id": "bob"}\n'
    )
    code, out, err = run(capsys, "memories", "import", "--data", str(tmp_path / "d"), str(source))
    assert code == 1
    assert "imported 2" in out and "bad lines 2" in out
    assert "line 2:" in err and "line 3:" in err
    code, out, _ = run(capsys, "memories", "list", "--data", str(tmp_path / "d"), "-u", "bob")
    assert "good one" in out and "good two" in out


def test_remote_server(bulk_server: ApiServer, capsys: pytest.CaptureFixture[str]) -> None:
    remote = ("--url", bulk_server.base_url, "--api-key", API_KEYS["alice"])
    texts = [f"remote fact {i}" for i in range(1200)]
    code, out, _ = run(capsys, "memories", "add", *remote, "-u", "alice", "--run", "cli", *texts)
    assert code == 0 and out.count("ADD") == 1200
    # list pages through the server's cursor (1,000 per page)
    scope = ("-u", "alice", "--run", "cli")
    code, out, _ = run(capsys, "memories", "list", *remote, *scope, "--limit", "5000", "--json")
    listed = json_lines(out)
    assert code == 0 and len(listed) == 1200 and len({i["id"] for i in listed}) == 1200
    code, out, _ = run(capsys, "memories", "search", *remote, *scope, "remote fact 7", "--json")
    assert code == 0 and json_lines(out)

    export = Path(os.environ.get("TMPDIR", "/tmp")) / f"cli-export-{os.getpid()}.jsonl"
    try:
        code, _, err = run(capsys, "memories", "export", *remote, *scope, "-o", str(export))
        assert code == 0 and "exported 1200" in err
        code, out, _ = run(capsys, "memories", "delete", *remote, *scope, "--all", "--yes")
        assert code == 0 and "deleted 1200" in out
        code, out, _ = run(capsys, "memories", "import", *remote, str(export))
        assert code == 0 and "imported 1200" in out
    finally:
        export.unlink(missing_ok=True)
    code, out, _ = run(capsys, "memories", "delete", *remote, listed[0]["id"])
    assert code == 0
    # The key's rights apply: bob is off limits, as one line and exit code 1.
    code, out, err = run(capsys, "memories", "list", *remote, "-u", "bob")
    assert code == 1 and out == ""
    assert err.startswith("memproxy: HTTP 403:") and err.count("\n") == 1


def cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_errors_are_one_line_and_nonzero(
    bulk_server: ApiServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = bulk_server.base_url
    cases = [
        (("memories", "list", "--url", "http://127.0.0.1:9", "-u", "a"), "cannot reach"),
        (("memories", "list", "--url", url, "--api-key", "sk-nope", "-u", "a"), "HTTP 401"),
        (("memories", "list", "--url", url, "-u", "a"), "HTTP 401"),
        (("memories", "list", "--url", url, "--api-key", API_KEYS["team"]), "--user"),
        (("memories", "add", "--url", url, "-u", "a", "x", "--metadata", "[1]"), "JSON object"),
        (("memories", "delete", "--url", url, "-u", "a", "--all"), "--yes"),
        (("memories", "import", "--url", url, str(tmp_path / "missing.jsonl")), "cannot read"),
        (("memories", "list", "--data", str(tmp_path / "d"), "-u", "bad id!"), "user_id must"),
    ]
    for argv, expected in cases:
        code, out, err = run(capsys, *argv)
        assert code == 1, (argv, err)
        assert err.count("\n") == 1 and err.startswith("memproxy: "), (argv, err)
        assert expected in err and "Traceback" not in err, err
    # And as a real process: the exit status reaches the shell.
    result = cli("memories", "list", "--url", url, "--api-key", "sk-nope", "-u", "a")
    assert result.returncode == 1
    assert result.stderr.startswith("memproxy: HTTP 401") and result.stderr.count("\n") == 1


def test_export_and_import_show_a_progress_bar(bulk_server: ApiServer, tmp_path: Path) -> None:
    env = {"MEMPROXY_API_KEY": API_KEYS["team"], "COLUMNS": "120"}
    url = bulk_server.base_url
    with bulk_server.client("team") as c:
        r = c.post(
            "/memories",
            json={"messages": ["one", "two", "three"], "user_id": "prog", "infer": False},
        )
        assert r.status_code == 200
    # Export to stdout is pipe-friendly: JSONL only there, the bar goes to stderr.
    exported = cli("memories", "export", "--url", url, "-u", "prog", env=env)
    assert exported.returncode == 0, exported.stderr
    assert "export" in exported.stderr and "3/3" in exported.stderr
    lines = exported.stdout.splitlines()
    assert sorted(orjson.loads(x)["memory"] for x in lines) == ["one", "three", "two"]
    target = tmp_path / "prog.jsonl"
    target.write_text(exported.stdout)
    imported = cli("memories", "import", "--url", url, str(target), env=env)
    assert imported.returncode == 0, imported.stderr
    # The bar counts bytes (rich writes "bytes" below 1 kB, then "kB"; the three lines are ~1 kB).
    assert "import" in imported.stderr and re.search(r"\d (?:bytes|kB)\b", imported.stderr)
    assert "already present 3" in imported.stdout
