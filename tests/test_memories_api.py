"""The memory REST API against a real uvicorn server: every route, its shapes and errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import ApiServer, SharedEmbedder


def add(client: httpx.Client, texts: list[str], prefix: str = "", **scope: Any) -> list[str]:
    r = client.post(f"{prefix}/memories", json={"messages": texts, "infer": False, **scope})
    assert r.status_code == 200, r.text
    return [x["id"] for x in r.json()["results"]]


def assert_error(r: httpx.Response, status: int, type_: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if type_ is not None:
        assert body["error"]["type"] == type_
    return dict(body["error"])


@pytest.mark.parametrize("prefix", ["", "/v1"])
def test_add_get_list_update_history_delete(api_server: ApiServer, prefix: str) -> None:
    user = f"crud{prefix.replace('/', '-')}"
    with api_server.client("team") as c:
        r = c.post(
            f"{prefix}/memories",
            json={
                "messages": [
                    {"role": "user", "content": "I play the cello"},
                    {"role": "assistant", "content": "Nice, which pieces?"},
                    {"role": "system", "content": "ignored"},
                ],
                "user_id": user,
                "metadata": {"source": "test"},
                "infer": False,
            },
        )
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert [x["event"] for x in results] == ["ADD", "ADD"]
        assert [x["memory"] for x in results] == ["I play the cello", "Nice, which pieces?"]
        assert set(results[0]) == {"id", "memory", "event"}
        memory_id = results[0]["id"]

        item = c.get(f"{prefix}/memories/{memory_id}").json()
        assert {
            "id",
            "memory",
            "hash",
            "metadata",
            "created_at",
            "updated_at",
            "user_id",
            "agent_id",
            "run_id",
        } <= set(item)
        assert item["user_id"] == user and item["agent_id"] is None
        assert item["metadata"] == {"source": "test"}
        assert "score" not in item

        listing = c.get(f"{prefix}/memories", params={"user_id": user}).json()
        assert {x["id"] for x in listing["results"]} == {x["id"] for x in results}
        assert listing["next_cursor"] is None

        r = c.put(
            f"{prefix}/memories/{memory_id}",
            json={"text": "I play the viola", "metadata": {"edited": True}},
        )
        assert r.status_code == 200, r.text
        assert r.json()["memory"] == "I play the viola"
        assert r.json()["metadata"] == {"source": "test", "edited": True}
        assert c.get(f"{prefix}/memories/{memory_id}").json()["memory"] == "I play the viola"

        history = c.get(f"{prefix}/memories/{memory_id}/history").json()
        assert [h["event"] for h in history] == ["ADD", "UPDATE"]
        assert history[1]["old_memory"] == "I play the cello"
        assert history[1]["new_memory"] == "I play the viola"
        assert set(history[0]) == {
            "id",
            "memory_id",
            "old_memory",
            "new_memory",
            "event",
            "created_at",
            "updated_at",
            "is_deleted",
            "source",
        }
        assert history[0]["source"] is None  # the REST API does not mark its writes

        r = c.delete(f"{prefix}/memories/{memory_id}")
        assert r.status_code == 200 and "deleted" in r.json()["message"].lower()
        assert_error(c.get(f"{prefix}/memories/{memory_id}"), 404, "not_found_error")
        assert_error(c.delete(f"{prefix}/memories/{memory_id}"), 404)
        assert_error(c.put(f"{prefix}/memories/{memory_id}", json={"text": "x"}), 404)
        # History survives the delete (for keys that see every user).
        history = c.get(f"{prefix}/memories/{memory_id}/history").json()
        assert [h["event"] for h in history] == ["ADD", "UPDATE", "DELETE"]
        assert history[-1]["is_deleted"] is True


def test_trailing_slash_routes_as_mem0_clients_send_them(api_server: ApiServer) -> None:
    with api_server.client("team") as c:
        ids = add(c, ["slash route memory"], "/v1", user_id="slashy")
        r = c.get("/v1/memories/", params={"user_id": "slashy"})
        assert r.status_code == 200 and [x["id"] for x in r.json()["results"]] == ids
        assert c.get(f"/v1/memories/{ids[0]}/").status_code == 200
        assert (
            c.post("/v1/search/", json={"query": "slash", "user_id": "slashy"}).status_code == 200
        )


def test_add_validation(api_server: ApiServer) -> None:
    with api_server.client("team") as c:
        err = assert_error(c.post("/memories", json={"messages": "hi", "infer": False}), 400)
        assert "user_id" in err["message"]
        assert_error(c.post("/memories", content=b"{not json"), 400, "invalid_request_error")
        assert_error(c.post("/memories", content=b"[1, 2]"), 400)
        assert_error(c.post("/memories", json={"user_id": "u1", "infer": False}), 400)
        assert_error(
            c.post("/memories", json={"messages": "x", "user_id": "u1", "metadata": "str"}), 400
        )
        # Identity keys cannot be smuggled in through metadata.
        r = c.post(
            "/memories",
            json={"messages": "x", "user_id": "u1", "infer": False, "metadata": {"user_id": "u2"}},
        )
        assert_error(r, 400)
        # Without an LLM configured, infer=True is a clear 400, not a crash.
        err = assert_error(c.post("/memories", json={"messages": "x", "user_id": "u1"}), 400)
        assert "infer" in err["message"]
        # A string message and agent/run scopes work.
        r = c.post(
            "/memories",
            json={"messages": "agent fact", "agent_id": "bot-1", "run_id": "r1", "infer": False},
        )
        assert r.status_code == 200 and r.json()["results"][0]["event"] == "ADD"
        listing = c.get("/memories", params={"agent_id": "bot-1", "run_id": "r1"}).json()
        assert [x["memory"] for x in listing["results"]] == ["agent fact"]
        assert listing["results"][0]["user_id"] is None
        # Exact duplicates are not stored twice.
        again = c.post(
            "/memories",
            json={"messages": "agent fact", "agent_id": "bot-1", "run_id": "r1", "infer": False},
        )
        assert again.json() == {"results": []}


def test_add_with_a_timestamp_and_search_by_its_date(api_server: ApiServer) -> None:
    with api_server.client("team") as c:
        for text, when in [
            ("I went hiking in the Alps", "2023-07-15T10:00:00Z"),
            ("I watched a movie about hiking", 1682935200),  # 2023-05-01T10:00:00Z
        ]:
            r = c.post(
                "/memories",
                json={"messages": text, "user_id": "dated", "infer": False, "timestamp": when},
            )
            assert r.status_code == 200, r.text
        listing = c.get("/memories", params={"user_id": "dated"}).json()["results"]
        assert {m["memory"]: m["created_at"][:19] for m in listing} == {
            "I went hiking in the Alps": "2023-07-15T10:00:00",
            "I watched a movie about hiking": "2023-05-01T10:00:00",
        }
        found = c.post(
            "/search", json={"query": "What did I do on 15 July, 2023?", "user_id": "dated"}
        )
        assert found.json()["results"][0]["memory"] == "I went hiking in the Alps"
        bad = {"messages": "x", "user_id": "dated", "infer": False, "timestamp": "last tuesday"}
        assert "timestamp" in assert_error(c.post("/memories", json=bad), 400)["message"].lower()
        assert_error(c.post("/memories", json=bad | {"timestamp": True}), 400)
        assert len(c.get("/memories", params={"user_id": "dated"}).json()["results"]) == 2


def test_list_paging_with_cursor(api_server: ApiServer) -> None:
    with api_server.client("team") as c:
        ids = set(add(c, [f"paging fact number {i}" for i in range(23)], user_id="pager"))
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params: dict[str, Any] = {"user_id": "pager", "top_k": 5}
            if cursor:
                params["cursor"] = cursor
            page = c.get("/memories", params=params).json()
            pages += 1
            assert len(page["results"]) <= 5
            seen += [x["id"] for x in page["results"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == 5
        assert len(seen) == len(set(seen)) == 23 and set(seen) == ids
        # limit is an alias of top_k; a bad cursor or top_k is a 400.
        assert (
            len(c.get("/memories", params={"user_id": "pager", "limit": 3}).json()["results"]) == 3
        )
        assert_error(c.get("/memories", params={"user_id": "pager", "cursor": "!!"}), 400)
        assert_error(c.get("/memories", params={"user_id": "pager", "top_k": 0}), 400)
        assert_error(c.get("/memories", params={"user_id": "pager", "top_k": "many"}), 400)
        assert_error(c.get("/memories"), 400)


def test_list_with_filters(api_server: ApiServer) -> None:
    with api_server.client("team") as c:
        for text, meta in (("filter red", {"color": "red", "n": 1}), ("filter blue", {"n": 5})):
            r = c.post(
                "/memories",
                json={"messages": text, "user_id": "filt", "metadata": meta, "infer": False},
            )
            assert r.status_code == 200
        body = {"user_id": "filt", "filters": {"color": "red"}}
        got = c.post("/memories/list", json=body).json()["results"]
        assert [x["memory"] for x in got] == ["filter red"]
        body = {"filters": {"AND": [{"user_id": "filt"}, {"n": {"gte": 2}}]}}
        got = c.post("/memories/list", json=body).json()["results"]
        assert [x["memory"] for x in got] == ["filter blue"]
        body = {"user_id": "filt", "filters": {"created_at": {"gte": "2000-01-01"}}}
        assert len(c.post("/memories/list", json=body).json()["results"]) == 2
        body = {"user_id": "filt", "filters": {"created_at": {"lt": "2000-01-01"}}}
        assert c.post("/memories/list", json=body).json()["results"] == []
        err = assert_error(
            c.post("/memories/list", json={"user_id": "filt", "filters": {"n": {"regex": "x"}}}),
            400,
        )
        assert "operator" in err["message"]
        bad_field = {"user_id": "filt", "filters": {"vector": {"eq": 1}}}
        assert_error(c.post("/memories/list", json=bad_field), 400)


def test_search(api_server: ApiServer) -> None:
    with api_server.client("team") as c:
        add(
            c,
            ["I am allergic to peanuts", "My sister lives in Lisbon", "I drive a blue car"],
            user_id="searcher",
        )
        r = c.post("/search", json={"query": "food allergy", "user_id": "searcher"})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert results[0]["memory"] == "I am allergic to peanuts"
        assert all(isinstance(x["score"], float) for x in results)
        assert results == sorted(results, key=lambda x: -x["score"]) or len(results) <= 3
        one = c.post("/v1/search", json={"query": "car", "user_id": "searcher", "limit": 1})
        assert len(one.json()["results"]) == 1
        top = c.post("/search", json={"query": "car", "user_id": "searcher", "top_k": 2})
        assert len(top.json()["results"]) == 2
        high = c.post("/search", json={"query": "car", "user_id": "searcher", "threshold": 0.99})
        assert high.json()["results"] == []
        by_filter = c.post("/search", json={"query": "car", "filters": {"user_id": "searcher"}})
        assert {x["user_id"] for x in by_filter.json()["results"]} == {"searcher"}
        assert_error(c.post("/search", json={"query": "", "user_id": "searcher"}), 400)
        assert_error(c.post("/search", json={"query": "car"}), 400)
        assert_error(c.post("/search", json={"user_id": "searcher"}), 400)
        bad = {"query": "car", "user_id": "searcher", "filters": {"x": {"nope": 1}}}
        assert_error(c.post("/search", json=bad), 400)


def test_delete_all_removes_1000_memories(bulk_server: ApiServer) -> None:
    with bulk_server.client("team") as c:
        texts = [f"bulk memory {i:04d} about topic {i % 7}" for i in range(1000)]
        assert len(add(c, texts, user_id="bulk")) == 1000
        add(c, ["bystander keeps this"], user_id="bulk-neighbour")
        listing = c.get("/memories", params={"user_id": "bulk", "top_k": 2000}).json()
        assert len(listing["results"]) == 1000
        r = c.delete("/memories", params={"user_id": "bulk"})
        assert r.status_code == 200, r.text
        assert r.json()["deleted"] == 1000
        assert c.get("/memories", params={"user_id": "bulk"}).json()["results"] == []
        kept = c.get("/memories", params={"user_id": "bulk-neighbour"}).json()["results"]
        assert [x["memory"] for x in kept] == ["bystander keeps this"]
        assert_error(c.delete("/memories"), 400)


def test_export_import_roundtrip(bulk_server: ApiServer) -> None:
    with bulk_server.client("team") as c:
        texts = [f"exported fact {i}" for i in range(1200)]
        add(c, texts, user_id="exporter")
        r = c.get("/memories/export", params={"user_id": "exporter"})
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/x-ndjson")
        assert r.headers["x-memory-count"] == "1200"
        lines = r.content.splitlines()
        items = [orjson.loads(line) for line in lines]
        assert len(items) == 1200 and {x["memory"] for x in items} == set(texts)

        # Import into a fresh user: ids are kept; then re-import is a no-op.
        c.delete("/memories", params={"user_id": "exporter"})
        bad = [
            b"{not json",
            b'{"memory": "no id", "user_id": "exporter"}',
            b'{"id": "x1", "memory": "", "user_id": "exporter"}',
            b'{"id": "x2", "memory": "ok", "user_id": "bad id!"}',
            b'{"id": "x3", "memory": "no scope"}',
            b'{"id": "x4", "memory": "m", "user_id": "exporter", "metadata": {"user_id": "z"}}',
            b'{"id": "x5", "memory": "m", "user_id": "exporter", "created_at": "yesterday"}',
            b"[1,2]",
        ]
        body = b"\n".join(lines[:600] + bad + lines[600:] + [b""])
        r = c.post(
            "/memories/import", content=body, headers={"content-type": "application/x-ndjson"}
        )
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["imported"] == 1200
        assert [e["line"] for e in report["errors"]] == list(range(601, 609))
        assert all(e["message"] for e in report["errors"])
        restored = c.get("/memories", params={"user_id": "exporter", "top_k": 5000}).json()
        by_id = {x["id"]: x for x in restored["results"]}
        assert set(by_id) == {x["id"] for x in items}
        original = items[0]
        assert by_id[original["id"]]["created_at"] == original["created_at"]
        assert by_id[original["id"]]["memory"] == original["memory"]
        # Idempotent by id.
        again = c.post("/memories/import", content=b"\n".join(lines)).json()
        assert again == {"imported": 0, "exists": 1200, "duplicate": 0, "errors": []}
        count = len(
            c.get("/memories", params={"user_id": "exporter", "top_k": 5000}).json()["results"]
        )
        assert count == 1200
        # Search works on imported memories (they were embedded).
        hit = c.post("/search", json={"query": "exported fact 7", "user_id": "exporter"}).json()
        assert hit["results"]


def test_import_target_scope(api_server: ApiServer) -> None:
    with api_server.client("team") as c:
        body = (
            b'{"id": "imp-1", "memory": "target one"}\n'
            b'{"id": "imp-2", "memory": "other", "user_id": "someone"}\n'
        )
        r = c.post("/memories/import", params={"user_id": "target"}, content=body)
        report = r.json()
        assert report["imported"] == 1
        assert report["errors"][0]["line"] == 2
        got = c.get("/memories/imp-1").json()
        assert got["user_id"] == "target"
        # Exact text already held by the scope under another id: a duplicate, not stored.
        dup = b'{"id": "imp-3", "memory": "target one", "user_id": "target"}'
        assert c.post("/memories/import", content=dup).json()["duplicate"] == 1


def test_reset_is_admin_only(tmp_path: Path, local_embedder: Any) -> None:
    from memory_core import AsyncMemory
    from proxy.app import create_app
    from tests.conftest import api_settings
    from tests.servers import ServerThread

    settings = api_settings(str(tmp_path / "lancedb"))
    memory = AsyncMemory(settings.memory.core_config(), embedder=SharedEmbedder(local_embedder))
    with ServerThread(create_app(settings, memory=memory)) as server:
        api = ApiServer(server.base_url, memory)
        with api.client("team") as team, api.client("admin") as admin:
            add(team, ["to be reset"], user_id="r1")
            assert_error(team.post("/reset"), 403, "permission_error")
            assert_error(api.client("alice").post("/v1/reset"), 403)
            assert_error(api.client().post("/reset"), 401, "authentication_error")
            assert team.get("/memories", params={"user_id": "r1"}).json()["results"]
            r = admin.post("/v1/reset")
            assert r.status_code == 200 and r.json()["message"]
            assert team.get("/memories", params={"user_id": "r1"}).json()["results"] == []


def test_auth_me(api_server: ApiServer) -> None:
    me = api_server.client("pair").get("/v1/auth/me").json()
    assert me == {
        "name": "pair-app",
        "users": ["alice", "carol"],
        "admin": False,
        "open_mode": False,
    }
    assert api_server.client("admin").get("/auth/me").json()["admin"] is True
    assert_error(api_server.client().get("/v1/auth/me"), 401)


def test_openapi_and_docs(api_server: ApiServer) -> None:
    with api_server.client() as c:
        spec = c.get("/openapi.json").json()
        assert spec["openapi"].startswith("3.")
        for path in (
            "/memories",
            "/memories/{memory_id}",
            "/memories/{memory_id}/history",
            "/search",
            "/reset",
            "/memories/export",
            "/memories/import",
        ):
            assert path in spec["paths"]
        schemas = spec["components"]["schemas"]
        assert "top_k" in schemas["SearchRequest"]["properties"]
        assert "AddRequest" in schemas and "MemoryItemModel" in schemas
        ref = spec["paths"]["/memories"]["post"]["requestBody"]["content"]["application/json"]
        assert ref["schema"]["$ref"] == "#/components/schemas/AddRequest"
        page = c.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "/memories/{memory_id}/history" in page.text and "http" not in page.text.split(
            "<body", 1
        )[0].replace("http-equiv", "")
        assert "cdn" not in page.text.lower()


def test_browser_is_served(api_server: ApiServer) -> None:
    with api_server.client() as c:
        r = c.get("/", follow_redirects=False)
        assert r.status_code in (302, 307) and r.headers["location"] == "/ui/"
        page = c.get("/ui/")
        assert page.status_code == 200 and "<script" in page.text
        for asset in ("app.js", "learning.js", "style.css"):
            assert c.get(f"/ui/{asset}").status_code == 200


def test_infer_true_uses_the_llm(
    tmp_path: Path, local_embedder: Any, fake_llm_config: dict[str, Any]
) -> None:
    from memory_core import AsyncMemory
    from proxy.app import create_app
    from proxy.settings import Settings
    from tests.servers import ServerThread

    settings = Settings.from_dict(
        {"memory": {"storage_uri": str(tmp_path / "db"), "llm": fake_llm_config}}
    )
    memory = AsyncMemory(settings.memory.core_config(), embedder=SharedEmbedder(local_embedder))
    with (
        ServerThread(create_app(settings, memory=memory)) as server,
        httpx.Client(base_url=server.base_url, timeout=120) as c,
    ):
        r = c.post(
            "/v1/memories",
            json={
                "messages": [{"role": "user", "content": "I live in Berlin and I love jazz."}],
                "user_id": "inferred",
            },
        )
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert results and all(x["event"] == "ADD" for x in results)
        stored = c.get("/memories", params={"user_id": "inferred"}).json()["results"]
        assert any("Berlin" in x["memory"] for x in stored)
        assert all(x["memory"] != "I live in Berlin and I love jazz." for x in stored)


def test_memory_disabled_is_503(tmp_path: Path) -> None:
    from proxy.app import create_app
    from proxy.settings import Settings
    from tests.servers import ServerThread

    settings = Settings.from_dict({"memory": {"enabled": False, "storage_uri": str(tmp_path)}})
    with ServerThread(create_app(settings)) as server, httpx.Client(base_url=server.base_url) as c:
        assert_error(c.get("/memories", params={"user_id": "a"}), 503)


def test_open_mode_is_local_admin(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """No keys: every route works without a key (as a local admin), with a start-up warning;
    binding beyond loopback without keys is refused unless explicitly allowed."""
    import logging

    from memory_core import AsyncMemory
    from memory_core.errors import ConfigError
    from proxy.app import create_app
    from proxy.cli import main
    from proxy.settings import Settings
    from tests.conftest import HashEmbedder
    from tests.servers import ServerThread

    settings = Settings.from_dict({"memory": {"storage_uri": str(tmp_path / "db")}})
    memory = AsyncMemory(settings.memory.core_config(), embedder=HashEmbedder())
    with caplog.at_level(logging.WARNING, logger="proxy"):
        with ServerThread(create_app(settings, memory=memory)) as server:
            with httpx.Client(base_url=server.base_url) as c:
                assert c.get("/v1/auth/me").json()["open_mode"] is True
                ids = add(c, ["open mode fact"], user_id="anyone")
                assert c.get(f"/memories/{ids[0]}").status_code == 200
                assert c.post("/reset").status_code == 200
                assert c.get("/memories", params={"user_id": "anyone"}).json()["results"] == []
    assert any("open local mode" in r.getMessage() for r in caplog.records)

    for host in ("0.0.0.0", "192.168.1.10", "::"):
        with pytest.raises(ConfigError, match="refusing to bind"):
            Settings.from_dict({}, host=host).check_bind()
    Settings.from_dict({}, host="127.0.0.1").check_bind()
    Settings.from_dict({"server": {"allow_open_non_loopback": True}}, host="0.0.0.0").check_bind()
    config = tmp_path / "open.yaml"
    config.write_text(f"memory: {{storage_uri: {tmp_path / 'db2'}}}\n")
    code = main(["serve", "--config", str(config), "--host", "0.0.0.0", "--port", "1"])
    err = capsys.readouterr().err
    assert code != 0 and "refusing to bind 0.0.0.0" in err and err.count("\n") == 1


def test_import_survives_an_over_long_line(bulk_server: ApiServer) -> None:
    huge = b'{"id": "long-1", "memory": "' + b"x" * (2 << 20) + b'", "user_id": "longline"}'
    body = (
        b'{"id": "ok-1", "memory": "before", "user_id": "longline"}\n'
        + huge
        + b'\n{"id": "ok-2", "memory": "after", "user_id": "longline"}\n'
    )
    with bulk_server.client("team") as c:
        report = c.post("/memories/import", content=body).json()
        assert report["imported"] == 2
        assert [e["line"] for e in report["errors"]] == [2]
        assert "longer than" in report["errors"][0]["message"]
        got = c.get("/memories", params={"user_id": "longline"}).json()["results"]
        assert sorted(x["memory"] for x in got) == ["after", "before"]
