"""The readable API page at ``/docs``: the OpenAPI document rendered as plain HTML (no CDN)."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import Any


def render_api_page(spec: Mapping[str, Any]) -> str:
    """A readable, dependency-free HTML page of the OpenAPI document."""
    esc = html.escape
    parts = [
        '<!doctype html><html lang=en><meta charset=utf-8><link rel=icon href="data:,">',
        f"<title>{esc(spec['info']['title'])}</title>",
        '<link rel="stylesheet" href="/ui/style.css">',
        "<body class=docs><main>",
        f"<h1>{esc(spec['info']['title'])}</h1><p>{esc(spec['info']['description'])}</p>",
        "<p>Authenticate with <code>Authorization: Bearer KEY</code> or <code>X-API-Key</code>. "
        'Errors: <code>{"error": {"message", "type", "param", "code"}}</code>. '
        'Machine-readable: <a href="/openapi.json">/openapi.json</a>. '
        'Memory browser: <a href="/ui/">/ui/</a>.</p>',
    ]
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            parts.append(
                f"<section class=op><h2><span class='m {esc(method)}'>{esc(method.upper())}"
                f"</span> <code>{esc(path)}</code></h2><p>{esc(op['summary'])}</p>"
            )
            params = op.get("parameters") or []
            if params:
                rows = "".join(
                    f"<li><code>{esc(p['name'])}</code> ({esc(p['in'])})"
                    f"{' — ' + esc(p['description']) if p.get('description') else ''}</li>"
                    for p in params
                )
                parts.append(f"<h3>Parameters</h3><ul>{rows}</ul>")
            body = op.get("requestBody", {}).get("content", {})
            for media, content in body.items():
                parts.append(f"<h3>Request body ({esc(media)})</h3>")
                parts.append(_schema_block(spec, content["schema"]))
            status, success = next((c, r) for c, r in op["responses"].items() if c < "300")
            for media, content in success.get("content", {}).items():
                parts.append(f"<h3>Response {esc(status)} ({esc(media)})</h3>")
                parts.append(_schema_block(spec, content["schema"]))
            parts.append("</section>")
    parts.append("<section class=op><h2>Models</h2>")
    for name in sorted(spec["components"]["schemas"]):
        parts.append(_schema_block(spec, {"$ref": f"#/components/schemas/{name}"}))
    parts.append("</section></main></body></html>")
    return "".join(parts)


def _schema_block(spec: Mapping[str, Any], schema: Mapping[str, Any]) -> str:
    """A model as a table of its fields (name, type, required, description), raw JSON folded."""
    ref = schema.get("$ref") or schema.get("items", {}).get("$ref")
    if ref is None:
        return f"<p><code>{html.escape(_type_name(schema))}</code></p>"
    name = ref.rsplit("/", 1)[-1]
    resolved = spec["components"]["schemas"].get(name, {})
    prefix = "array of " if "items" in schema else ""
    required = set(resolved.get("required", []))
    rows = []
    for prop_name, prop in resolved.get("properties", {}).items():
        note = prop.get("description") or ""
        if "default" in prop and prop["default"] not in (None, [], {}):
            note = f"default {json.dumps(prop['default'])}. {note}".strip()
        rows.append(
            f"<tr><td><code>{html.escape(prop_name)}</code></td>"
            f"<td>{html.escape(_type_name(prop))}</td>"
            f"<td>{'yes' if prop_name in required else ''}</td>"
            f"<td>{html.escape(note)}</td></tr>"
        )
    return (
        f"<p>{prefix}<strong>{html.escape(name)}</strong></p>"
        "<table><tr><th>field</th><th>type</th><th>required</th><th>notes</th></tr>"
        + "".join(rows)
        + "</table><details><summary>JSON schema</summary>"
        f"<pre>{html.escape(json.dumps(resolved, indent=2))}</pre></details>"
    )


def _type_name(schema: Mapping[str, Any]) -> str:
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " | ".join(_type_name(s) for s in schema["anyOf"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type_name(schema.get('items', {}))}"
    if "enum" in schema:
        return " | ".join(json.dumps(v) for v in schema["enum"])
    return str(kind)
