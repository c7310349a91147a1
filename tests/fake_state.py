"""The fake upstream's state: recorded requests, counters and failure controls.

One ``FakeState`` is shared by the server thread (which records requests and consumes the
controls) and the test thread (which reads the recordings and sets the controls).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.fake_answers import Json, RequestKind, last_user_text


@dataclass(slots=True)
class RecordedRequest:
    """One request the fake received (control routes are not recorded)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Json
    kind: RequestKind
    at: float = field(default_factory=time.time)

    @property
    def messages(self) -> list[Json]:
        messages = self.body.get("messages")
        return messages if isinstance(messages, list) else []

    @property
    def last_user_text(self) -> str:
        return last_user_text(self.messages)

    def to_json(self) -> Json:
        return {
            "method": self.method,
            "path": self.path,
            "headers": self.headers,
            "body": self.body,
            "kind": self.kind,
            "at": self.at,
        }


class FakeState:
    """Recorded requests, counters and failure controls; safe to use from any thread.

    Controls: ``fail_next`` (next N chat calls, extraction/update included, answer
    ``fail_status``), ``invalid_json_next`` (next N extraction/update calls answer prose),
    ``embed_fail_next`` (next N embeddings calls answer ``fail_status``), ``delay_s`` (every
    chat call), ``extract_delay_s`` (extraction/update calls, on top of ``delay_s``).
    """

    def __init__(
        self,
        *,
        delay_s: float = 0.0,
        extract_delay_s: float = 0.0,
        max_recorded: int | None = 50_000,
    ) -> None:
        self._lock = threading.Lock()
        self._default_delays = (max(0.0, delay_s), max(0.0, extract_delay_s))
        self.max_recorded = max_recorded
        self.requests: list[RecordedRequest] = []
        self.fail_next = 0
        self.fail_status = 500
        self.invalid_json_next = 0
        self.embed_fail_next = 0
        self.delay_s, self.extract_delay_s = self._default_delays
        self.counts: dict[str, int] = {}
        self._extractions = 0
        self.memory_script: list[str] = []
        self.no_system_role = False

    # -- recording ---------------------------------------------------------------------------

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.counts[request.kind] = self.counts.get(request.kind, 0) + 1
            self.counts["total"] = self.counts.get("total", 0) + 1
            if self.max_recorded == 0:
                return
            self.requests.append(request)
            limit = self.max_recorded
            if limit is not None and len(self.requests) > 2 * limit:
                del self.requests[: len(self.requests) - limit]

    def snapshot(self, kind: str | None = None) -> list[RecordedRequest]:
        """A copy of the recorded requests, optionally only one kind."""
        with self._lock:
            if kind is None:
                return list(self.requests)
            return [r for r in self.requests if r.kind == kind]

    def count(self, name: str) -> None:
        with self._lock:
            self.counts[name] = self.counts.get(name, 0) + 1

    # -- controls ----------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget recorded requests and counters; clear the controls (delays back to the
        values given to the constructor)."""
        with self._lock:
            self.requests.clear()
            self.counts = {}
            self._extractions = 0
            self.fail_next = 0
            self.fail_status = 500
            self.invalid_json_next = 0
            self.embed_fail_next = 0
            self.delay_s, self.extract_delay_s = self._default_delays
            self.memory_script = []
            self.no_system_role = False

    def behave_like_a_small_model(
        self, script: list[str] | None = None, *, no_system_role: bool | None = None
    ) -> None:
        """``script``: raw answers for the next extraction/update calls, in order (what real
        small models said: truncated JSON, objects as facts, placeholders...).
        ``no_system_role``: drop system messages silently, as chat templates without a system
        role do (the model then answers a memory call it has no instructions for in prose)."""
        with self._lock:
            if script is not None:
                self.memory_script = [str(answer) for answer in script]
            if no_system_role is not None:
                self.no_system_role = bool(no_system_role)

    def take_scripted(self) -> str | None:
        with self._lock:
            if not self.memory_script:
                return None
            self.counts["scripted"] = self.counts.get("scripted", 0) + 1
            return self.memory_script.pop(0)

    def set_failures(
        self,
        *,
        fail_next: int | None = None,
        fail_status: int | None = None,
        invalid_json_next: int | None = None,
        embed_fail_next: int | None = None,
        delay_s: float | None = None,
        extract_delay_s: float | None = None,
    ) -> None:
        """Set the given controls; ``None`` leaves a control unchanged."""
        with self._lock:
            if fail_next is not None:
                self.fail_next = max(0, int(fail_next))
            if fail_status is not None:
                if not 100 <= int(fail_status) <= 599:
                    raise ValueError(f"fail_status must be an HTTP status, not {fail_status}")
                self.fail_status = int(fail_status)
            if invalid_json_next is not None:
                self.invalid_json_next = max(0, int(invalid_json_next))
            if embed_fail_next is not None:
                self.embed_fail_next = max(0, int(embed_fail_next))
            if delay_s is not None:
                self.delay_s = max(0.0, float(delay_s))
            if extract_delay_s is not None:
                self.extract_delay_s = max(0.0, float(extract_delay_s))

    def controls(self) -> Json:
        with self._lock:
            return {
                "fail_next": self.fail_next,
                "fail_status": self.fail_status,
                "invalid_json_next": self.invalid_json_next,
                "embed_fail_next": self.embed_fail_next,
                "delay_s": self.delay_s,
                "extract_delay_s": self.extract_delay_s,
                "memory_script": len(self.memory_script),
                "no_system_role": self.no_system_role,
            }

    def stats(self) -> Json:
        with self._lock:
            counts = dict(self.counts)
            recorded = len(self.requests)
        return {"counts": counts, "recorded": recorded, "controls": self.controls()}

    # -- consumed by the handlers -----------------------------------------------------------

    def take_failure(self) -> int | None:
        with self._lock:
            if self.fail_next <= 0:
                return None
            self.fail_next -= 1
            self.counts["injected_failures"] = self.counts.get("injected_failures", 0) + 1
            return self.fail_status

    def take_embed_failure(self) -> int | None:
        with self._lock:
            if self.embed_fail_next <= 0:
                return None
            self.embed_fail_next -= 1
            self.counts["injected_failures"] = self.counts.get("injected_failures", 0) + 1
            return self.fail_status

    def take_invalid_json(self) -> bool:
        with self._lock:
            if self.invalid_json_next <= 0:
                return False
            self.invalid_json_next -= 1
            self.counts["invalid_json"] = self.counts.get("invalid_json", 0) + 1
            return True

    def next_extraction_number(self) -> int:
        with self._lock:
            self._extractions += 1
            return self._extractions

    def delay_for(self, kind: RequestKind) -> float:
        with self._lock:
            if kind in ("extract", "update"):
                return self.delay_s + self.extract_delay_s
            return self.delay_s


async def read_and_record(request: Any, state: FakeState) -> Json | None:
    """The request's JSON object (None when it is not one), recorded in ``state`` as a chat
    request with its headers (the fakes of other API shapes)."""
    raw = await request.body()
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        body = None
    record = body if isinstance(body, dict) else {}
    state.record(
        RecordedRequest(request.method, request.url.path, dict(request.headers), record, "chat")
    )
    return body if isinstance(body, dict) else None


def json_response(payload: Any, status: int = 200) -> Any:
    from starlette.responses import Response

    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")
