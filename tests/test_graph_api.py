"""The graph routes (docs/graph.md, "REST API and browser") through a real uvicorn server
with graph memory on, learning through the scripted fake LLM (tests/fake_graph.py): the
graph paged newest first with its nodes, history on request, relations renamed (re-embedded,
merged onto a twin) and deleted, the 409 when graph memory is off, hostile names as data.
Isolation between keys is in tests/test_isolation.py."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import ApiServer


def learn(server: ApiServer, user: str, *texts: str) -> None:
    with server.client("team") as c:
        for text in texts:
            body = {"messages": [{"role": "user", "content": text}], "user_id": user}
            r = c.post("/v1/memories", json=body)
            assert r.status_code == 200, r.text
            assert r.json()["results"], (text, r.text)


def graph(c: httpx.Client, user: str, **params: Any) -> dict[str, Any]:
    r = c.get("/v1/graph", params={"user_id": user, **params})
    assert r.status_code == 200, r.text
    return dict(r.json())


def triples(page: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(e["source"], e["relationship"], e["destination"]) for e in page["edges"]}


def edge(page: dict[str, Any], relationship: str, destination: str) -> dict[str, Any]:
    return next(
        e
        for e in page["edges"]
        if e["relationship"] == relationship and e["destination"] == destination
    )


def test_graph_pages_newest_first_with_its_nodes(graph_server: ApiServer) -> None:
    learn(
        graph_server,
        "gina",
        "My sister Maria lives in Lisbon.",
        "Maria works at Acme.",
        "My brother Tom plays chess.",
    )
    with graph_server.client("team") as c:
        whole = graph(c, "gina")
        assert {
            ("User", "sister", "Maria"),
            ("Maria", "lives_in", "Lisbon"),
            ("Maria", "works_at", "Acme"),
            ("User", "brother", "Tom"),
            ("Tom", "plays", "chess"),
        } <= triples(whole)
        assert whole["next_cursor"] is None
        order = [(e["created_at"], e["id"]) for e in whole["edges"]]
        assert order == sorted(order, reverse=True)
        assert whole["edges"][0]["destination"] in ("Tom", "chess")  # the newest exchange

        paged: list[dict[str, Any]] = []
        cursor = None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = graph(c, "gina", **params)
            assert len(page["edges"]) <= 2
            ends = {end for e in page["edges"] for end in (e["source_id"], e["target_id"])}
            assert {n["id"] for n in page["nodes"]} == ends
            paged += page["edges"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert paged == whole["edges"]

        names = {n["id"]: n["name"] for n in whole["nodes"]}
        for e in whole["edges"]:
            assert (names[e["source_id"]], names[e["target_id"]]) == (e["source"], e["destination"])
            assert e["memory_ids"] and e["invalid_at"] is None
        memory = c.get(f"/v1/memories/{edge(whole, 'works_at', 'Acme')['memory_ids'][0]}")
        assert "Acme" in memory.json()["memory"]
        # The unprefixed alias and the trailing slash answer the same.
        assert c.get("/graph/", params={"user_id": "gina"}).json()["edges"] == whole["edges"]


def test_superseded_relations_only_on_request(graph_server: ApiServer) -> None:
    learn(
        graph_server, "hugo", "My sister Maria lives in Lisbon.", "My sister Maria moved to Porto."
    )
    with graph_server.client("team") as c:
        valid = graph(c, "hugo")
        assert ("Maria", "lives_in", "Porto") in triples(valid)
        assert ("Maria", "lives_in", "Lisbon") not in triples(valid)
        history = graph(c, "hugo", include_invalid="true")
        old = edge(history, "lives_in", "Lisbon")
        assert old["invalid_at"] is not None and old["valid_from"] <= old["invalid_at"]
        assert "Lisbon" in {n["name"] for n in history["nodes"]}


def test_rename_re_embeds_and_delete_cascades(graph_server: ApiServer) -> None:
    learn(graph_server, "ines", "My brother Tom plays chess.")
    with graph_server.client("team") as c:
        brother = edge(graph(c, "ines"), "brother", "Tom")
        r = c.patch(f"/v1/graph/relations/{brother['id']}", json={"relationship": "Cousin of!"})
        assert r.status_code == 200, r.text
        renamed = r.json()
        assert renamed["relationship"] == "cousin_of" and renamed["id"] == brother["id"]
        assert renamed["updated_at"] > brother["updated_at"]
        assert ("User", "cousin_of", "Tom") in triples(graph(c, "ines"))
        # The new text is what the walk matches now.
        found = c.post("/v1/search", json={"query": "Who is my cousin?", "user_id": "ines"})
        relations = {
            (x["source"], x["relationship"], x["destination"]) for x in found.json()["relations"]
        }
        assert ("User", "cousin_of", "Tom") in relations

        for bad in ({"relationship": "!!!"}, {"relationship": ""}, {}, {"relationship": 3}):
            r = c.patch(f"/graph/relations/{brother['id']}", json=bad)
            assert r.status_code == 400, (bad, r.text)
            assert r.json()["error"]["type"] == "invalid_request_error"

        chess = edge(graph(c, "ines"), "plays", "chess")
        r = c.delete(f"/v1/graph/relations/{chess['id']}")
        assert r.status_code == 200 and r.json() == {"message": "Relation deleted"}
        after = graph(c, "ines")
        assert triples(after) == {("User", "cousin_of", "Tom")}
        assert "chess" not in {n["name"] for n in after["nodes"]}  # left alone: gone too
        for method in ("PATCH", "DELETE"):
            r = c.request(method, f"/graph/relations/{chess['id']}", json={"relationship": "x"})
            assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
        # The memory stays: deleting a relation edits the graph, not what was learned.
        assert c.get(f"/v1/memories/{chess['memory_ids'][0]}").status_code == 200


def test_rename_onto_a_twin_merges(graph_server: ApiServer) -> None:
    learn(graph_server, "jana", "My sister Maria likes jazz.", "Maria loves jazz.")
    with graph_server.client("team") as c:
        page = graph(c, "jana")
        likes, loves = edge(page, "likes", "jazz"), edge(page, "loves", "jazz")
        r = c.patch(f"/v1/graph/relations/{loves['id']}", json={"relation": "likes"})
        assert r.status_code == 200, r.text
        assert r.json()["id"] == likes["id"]
        assert set(r.json()["memory_ids"]) == set(likes["memory_ids"]) | set(loves["memory_ids"])
        after = graph(c, "jana")
        assert [e["relationship"] for e in after["edges"] if e["destination"] == "jazz"] == [
            "likes"
        ]


HOSTILE_FACTS = {
    "My sister O'Brien lives in <script>alert(1)</script>.": (
        "O'Brien",
        "<script>alert(1)</script>",
    ),
    "My brother Tom likes Robert'); DROP TABLE graph_relations.": (
        "Tom",
        "Robert'); DROP TABLE graph_relations",
    ),
    'My friend Zoe owns the "big" \\ boat 100% _*.': ("Zoe", 'the "big" \\ boat 100% _*'),
}


def test_hostile_names_are_stored_and_returned_as_data(graph_server: ApiServer) -> None:
    learn(graph_server, "kim", *HOSTILE_FACTS)
    with graph_server.client("team") as c:
        page = graph(c, "kim")
        names = {n["name"] for n in page["nodes"]}
        for source, target in HOSTILE_FACTS.values():
            assert {source, target} <= names, (source, target, names)
            assert any(e["source"] == source and e["destination"] == target for e in page["edges"])
        tom = next(
            e for e in page["edges"] if e["source"] == "Tom" and e["relationship"] == "likes"
        )
        r = c.patch(
            f"/v1/graph/relations/{tom['id']}", json={"relationship": "x'); DROP TABLE t;--"}
        )
        assert r.status_code == 200 and r.json()["relationship"] == "x_drop_table_t"
        assert len(graph(c, "kim")["edges"]) == len(page["edges"])  # the tables are intact


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 1001},
        {"limit": "many"},
        {"cursor": "not-a-cursor"},
        {"cursor": "x" * 600},
        {"include_invalid": "perhaps"},
        {"user_id": "a'b"},
        {"user_id": "<script>"},
    ],
)
def test_bad_queries_are_400(graph_server: ApiServer, params: dict[str, Any]) -> None:
    with graph_server.client("team") as c:
        r = c.get("/v1/graph", params={"user_id": "gina", **params})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("relation_id", ["a'b", "x" * 300, "%00", "<script>", "..%2F..%2Fetc"])
def test_hostile_relation_ids_are_404(graph_server: ApiServer, relation_id: str) -> None:
    with graph_server.client("admin") as c:
        for method in ("PATCH", "DELETE"):
            r = c.request(method, f"/v1/graph/relations/{relation_id}", json={"relation": "x"})
            assert r.status_code == 404, r.text
            assert r.json()["error"]["type"] == "not_found_error"


def test_graph_off_is_a_clear_409(api_server: ApiServer) -> None:
    with api_server.client("team") as c:
        for method, path, kwargs in (
            ("GET", "/v1/graph", {"params": {"user_id": "alice"}}),
            ("GET", "/graph", {"params": {"user_id": "alice"}}),
            ("PATCH", "/v1/graph/relations/abc", {"json": {"relationship": "x"}}),
            ("DELETE", "/v1/graph/relations/abc", {}),
        ):
            r = c.request(method, path, **kwargs)
            assert r.status_code == 409, (path, r.text)
            error = r.json()["error"]
            assert error["type"] == "invalid_request_error"
            assert "memory.graph.enabled" in error["message"]


def test_openapi_documents_the_graph_routes(graph_server: ApiServer) -> None:
    spec = httpx.get(graph_server.base_url + "/openapi.json").json()
    assert {"get"} == set(spec["paths"]["/graph"])
    assert {"patch", "delete"} == set(spec["paths"]["/graph/relations/{relation_id}"])
    params = {p["name"] for p in spec["paths"]["/graph"]["get"]["parameters"]}
    assert {
        "user_id",
        "agent_id",
        "run_id",
        "app_id",
        "limit",
        "cursor",
        "include_invalid",
    } <= params
    assert "409" in spec["paths"]["/graph"]["get"]["responses"]
