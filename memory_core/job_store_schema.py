"""The SQLite outbox's schema (``job_store.py``): the jobs table, the ``job_results`` log, the
columns added since the first release, and the log's page cursors."""

from __future__ import annotations

from .errors import InvalidInput

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    scope_key TEXT NOT NULL,
    payload BLOB NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_expires REAL,
    last_error TEXT,
    enqueued_at REAL NOT NULL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_scope ON jobs(scope_key, status, seq);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, seq);
CREATE TABLE IF NOT EXISTS job_results (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    scope_key TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    enqueued_at REAL NOT NULL,
    finished_at REAL NOT NULL,
    result BLOB,
    error TEXT
);
CREATE INDEX IF NOT EXISTS job_results_id ON job_results(id);
CREATE INDEX IF NOT EXISTS job_results_scope ON job_results(scope_key, seq);
"""
# Columns added after the first release (queue files made before get them on open).
ADDED_COLUMNS = {"job_results": {"kind": "TEXT NOT NULL DEFAULT ''"}}
RESULT_KEYS = ("id", "scope_key", "kind", "status", "attempts", "enqueued_at", "finished_at")


def parse_cursor(cursor: str) -> int:
    """A ``results()`` cursor of this store: the row's sequence number."""
    if not cursor.isascii() or not cursor.isdigit() or len(cursor) > 19:
        raise InvalidInput("invalid cursor", param="cursor")
    return int(cursor)


__all__ = ["ADDED_COLUMNS", "RESULT_KEYS", "SCHEMA", "parse_cursor"]
