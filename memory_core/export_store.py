"""Structured export jobs and their results, in an ``exports`` table of the same LanceDB store
as the memories (so every replica sharing the store sees them)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any, Literal

import orjson
import pyarrow as pa

from .errors import NotFound
from .store_tables import open_side_table
from .timestamps import now_stamp
from .types import IDENTITY_FIELDS

EXPORTS = "exports"
Status = Literal["queued", "running", "retrying", "completed", "failed"]
_ID = re.compile(r"^[0-9a-f]{32}$")  # our own ids: safe in SQL without quoting tricks

EXPORTS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("user_id", pa.string()),
        pa.field("agent_id", pa.string()),
        pa.field("run_id", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("request", pa.string(), nullable=False),  # JSON: schema, instructions, filters
        pa.field("result", pa.string()),  # JSON: the validated object
        pa.field("error", pa.string()),
        pa.field("attempts", pa.int32(), nullable=False),
        pa.field("created_at", pa.string(), nullable=False),
        pa.field("updated_at", pa.string(), nullable=False),
        pa.field("app_id", pa.string()),  # added since: ``_open`` migrates older tables
    ]
)


def new_export_id() -> str:
    return uuid.uuid4().hex


def check_export_id(export_id: str) -> str:
    if not isinstance(export_id, str) or not _ID.match(export_id):
        raise NotFound(f"export {export_id[:64]!r} not found")
    return export_id


def decode_export(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored export as the API shows it."""
    request = orjson.loads(row["request"])
    return {
        "id": row["id"],
        "user_id": row["user_id"],
        "agent_id": row["agent_id"],
        "run_id": row["run_id"],
        "app_id": row.get("app_id"),
        "status": row["status"],
        "schema": request.get("schema"),
        "instructions": request.get("instructions"),
        "filters": request.get("filters"),
        "result": orjson.loads(row["result"]) if row["result"] else None,
        "error": row["error"],
        "attempts": row["attempts"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


class ExportStore:
    """Create, update and read export records."""

    def __init__(
        self,
        uri: str,
        *,
        storage_options: Mapping[str, str] | None = None,
        read_consistency_interval_s: float | None = None,
    ) -> None:
        self._uri = uri
        self._options = dict(storage_options or {})
        self._consistency_s = read_consistency_interval_s
        self._table: Any = None

    async def _open(self) -> Any:
        if self._table is None:
            self._table = await open_side_table(
                self._uri,
                EXPORTS,
                EXPORTS_SCHEMA,
                storage_options=self._options,
                read_consistency_interval_s=self._consistency_s,
            )
        return self._table

    async def create(self, scope: Mapping[str, str | None], request: Mapping[str, Any]) -> str:
        export_id = new_export_id()
        stamp = now_stamp()
        row = {
            "id": export_id,
            **{k: scope.get(k) for k in IDENTITY_FIELDS},
            "status": "queued",
            "request": orjson.dumps(dict(request)).decode(),
            "result": None,
            "error": None,
            "attempts": 0,
            "created_at": stamp,
            "updated_at": stamp,
        }
        table = await self._open()
        await table.add(pa.Table.from_pylist([row], schema=EXPORTS_SCHEMA))
        return export_id

    async def get(self, export_id: str) -> dict[str, Any]:
        table = await self._open()
        where = f"id = '{check_export_id(export_id)}'"
        rows = (await table.query().where(where).limit(1).to_arrow()).to_pylist()
        if not rows:
            raise NotFound(f"export {export_id} not found")
        return decode_export(rows[0])

    async def set_status(
        self,
        export_id: str,
        status: Status,
        *,
        result: Any = None,
        error: str | None = None,
        attempts: int | None = None,
    ) -> None:
        values: dict[str, Any] = {"status": status, "updated_at": now_stamp(), "error": error}
        if result is not None:
            values["result"] = orjson.dumps(result).decode()
        if attempts is not None:
            values["attempts"] = attempts
        table = await self._open()
        await table.update(values, where=f"id = '{check_export_id(export_id)}'")


__all__ = ["EXPORTS", "ExportStore", "check_export_id", "decode_export", "new_export_id"]
