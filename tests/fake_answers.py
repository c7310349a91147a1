"""What the fake upstream answers: scripted chat replies, memory answers and response bodies.

Pure functions of a request; the server (``tests.fake_upstream``) adds state, delays and HTTP.

Normal chats answer ``"ECHO: " + <last user text>``; a ``<memories>...</memories>`` block in a
system/developer/user message adds ``" | MEMORIES: " + <its lines joined by " ; ">``. A tool
result answers ``"TOOL RESULT: ..."`` (the results of parallel calls joined by " + "), "call
tool" with ``tools`` answers a tool call ("call tool parallel": one per tool; a tool result
saying "call tool again": one more step; the JSON object that follows "call tool", if any, is
the call's arguments), and JSON mode answers ``{"echo": ..., "memories": ...}``.

Embeddings are deterministic feature-hashing vectors (``embed_text``).

memproxy's two memory prompts (fact extraction and memory update) are recognised by
``classify`` and answered with JSON from ``tests.fake_extractor``.

Magic strings in the last user message of a normal chat:

- ``[[fail:503]]``: answer that HTTP status with an OpenAI error body
- ``[[sleep:2.5]]``: wait that many seconds before answering
- ``[[stream-abort]]``: in stream mode, send 2 chunks then drop the connection

Magic strings in the conversation of an extraction call: ``[[extract-fail:500]]``,
``[[extract-sleep:1.5]]``, ``[[extract-invalid-json]]``. A fact containing ``[[bogus-id]]``
makes the update call answer an UPDATE for id ``"999"`` (never offered).
"""

from __future__ import annotations

import array
import base64
import hashlib
import itertools
import math
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import orjson

from tests.fake_extractor import STOPWORDS, WORD_RE, decide_updates, extract_conversation_facts
from tests.fake_graph import graph_kind
from tests.fake_languages import exchange_date
from tests.fake_media import media_kind

Json = dict[str, Any]
RequestKind = Literal[
    "chat",
    "extract",
    "update",
    "vision",
    "export",
    "graph",
    "same",
    "profile",
    "embeddings",
    "models",
]

EXTRACTION_PREFIX = "You are memproxy's fact extractor."
UPDATE_PREFIX = "You are memproxy's memory manager."
PROFILE_PREFIX = "You are memproxy's profile writer."
DEFAULT_EMBEDDING_DIM = 64
EXTRACT_INVALID_JSON = "[[extract-invalid-json]]"
INVALID_JSON_PROSE = (
    "Sure! Here are the facts I found in this conversation: the user shared a few details "
    "about their life. Let me know if you need anything else."
)

_MEMORIES_RE = re.compile(r"<memories>(.*?)</memories>", re.DOTALL)
_FAIL_RE = re.compile(r"\[\[fail:(\d{3})\]\]")
_SLEEP_RE = re.compile(r"\[\[sleep:(\d+(?:\.\d+)?)\]\]")
_STREAM_ABORT = "[[stream-abort]]"
_EXTRACT_FAIL_RE = re.compile(r"\[\[extract-fail:(\d{3})\]\]")
_EXTRACT_SLEEP_RE = re.compile(r"\[\[extract-sleep:(\d+(?:\.\d+)?)\]\]")
_WORD_BOUNDARY_RE = re.compile(r"(?<=\s)(?=\S)")
_ID_COUNTER = itertools.count(1)

# ---------------------------------------------------------------------------------------------
# Reading a request
# ---------------------------------------------------------------------------------------------


def message_text(message: Mapping[str, Any]) -> str:
    """The plain text of a chat message (text parts joined by newlines)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text of the last ``user`` message ("" when there is none)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message)
    return ""


def injected_memories(messages: Sequence[Mapping[str, Any]]) -> str | None:
    """The ``<memories>`` blocks of system/developer/user messages, lines joined by " ; "."""
    blocks: list[str] = []
    for message in messages:
        if message.get("role") not in ("system", "developer", "user"):
            continue
        text = message_text(message)
        if "<memories>" not in text:
            continue
        for match in _MEMORIES_RE.finditer(text):
            lines = [line.strip() for line in match.group(1).strip().splitlines()]
            blocks.append(" ; ".join(line for line in lines if line))
    return " ; ".join(blocks) if blocks else None


def between(text: str, start_tag: str, end_tag: str) -> str | None:
    """The text between the first ``start_tag`` and the last ``end_tag``, if both exist."""
    start = text.find(start_tag)
    end = text.rfind(end_tag)
    if start == -1 or end == -1 or end < start:
        return None
    return text[start + len(start_tag) : end]


def memory_prompt(messages: Sequence[Mapping[str, Any]]) -> str:
    """The data part of a memory call: from the last ``Exchange date:`` / ``<existing_memories>``
    of the last user message holding one (a retry appends feedback after it; a model without
    a system role gets the instructions, worked examples included, in front of it)."""
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        text = message_text(message)
        for marker in ("Exchange date:", "<existing_memories>\n"):
            start = text.rfind(marker)
            if start != -1:
                return text[start:]
    return message_text(messages[-1]) if messages else ""


def classify(messages: Sequence[Mapping[str, Any]]) -> RequestKind:
    """``extract``/``update`` for memproxy's two prompts (also with a custom system prompt, or
    with the instructions folded into the first user message)."""
    first = messages[0] if messages else {}
    if first.get("role") in ("system", "developer", "user"):
        instructions = message_text(first).lstrip()
        if instructions.startswith(EXTRACTION_PREFIX):
            return "extract"
        if instructions.startswith(UPDATE_PREFIX):
            return "update"
        graph = graph_kind(instructions)
        if graph is not None:
            return graph
        if instructions.startswith(PROFILE_PREFIX):
            return "profile"
        media = media_kind(instructions)
        if media == "vision":
            return "vision"
        if media == "export":
            return "export"
    data = memory_prompt(messages)
    if data.startswith("Exchange date:") and "<conversation>" in data:
        return "extract"
    if data.startswith("<existing_memories>") and "<new_facts>" in data:
        return "update"
    return "chat"


@dataclass(slots=True)
class MagicRequests:
    """What the magic strings of a chat or extraction call ask for."""

    fail_status: int | None = None
    fail_message: str = ""
    sleep_s: float = 0.0
    abort_stream: bool = False


def magic_requests(kind: RequestKind, messages: Sequence[Mapping[str, Any]]) -> MagicRequests:
    """The ``[[fail:...]]``, ``[[sleep:...]]``, ``[[stream-abort]]`` and ``[[extract-...]]``
    requests in the last user message (chat) or the rendered conversation (extraction)."""
    magic = MagicRequests()
    if kind == "chat":
        last = last_user_text(messages)
        if "[[" not in last:
            return magic
        fail = _FAIL_RE.search(last)
        if fail:
            code = int(fail.group(1))
            return MagicRequests(code, f"Requested failure ({code}) via magic content")
        sleep = _SLEEP_RE.search(last)
        if sleep:
            magic.sleep_s = float(sleep.group(1))
        magic.abort_stream = _STREAM_ABORT in last
        return magic
    conversation = memory_prompt(messages)
    if kind == "extract" and "[[extract-" in conversation:
        fail = _EXTRACT_FAIL_RE.search(conversation)
        if fail:
            code = int(fail.group(1))
            return MagicRequests(code, f"Requested extraction failure ({code})")
        sleep = _EXTRACT_SLEEP_RE.search(conversation)
        if sleep:
            magic.sleep_s = float(sleep.group(1))
    return magic


# ---------------------------------------------------------------------------------------------
# Replies
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Reply:
    """What the assistant says: text, or tool calls."""

    content: str | None
    finish_reason: str = "stop"
    tool_calls: list[Json] | None = None


def chat_reply(body: Json, messages: list[Json]) -> Reply:
    """The scripted answer to a normal chat: echo, tool result, tool call or JSON mode."""
    last_message = messages[-1]
    memories = injected_memories(messages)
    suffix = "" if memories is None else " | MEMORIES: " + memories
    tools = body.get("tools")
    asked = message_text(last_message).lower()
    if last_message.get("role") == "tool" and tools and "call tool again" in asked:
        call = {
            "id": "call_9",
            "type": "function",
            "function": {"name": _tool_name(tools, None), "arguments": '{"x": 2}'},
        }
        return Reply(None, "tool_calls", [call])
    if last_message.get("role") == "tool":
        results: list[str] = []
        for message in reversed(messages):
            if message.get("role") != "tool":
                break
            results.insert(0, message_text(message))
        return Reply("TOOL RESULT: " + " + ".join(results) + suffix)
    if (
        tools
        and isinstance(tools, list)
        and last_message.get("role") == "user"
        and "call tool" in asked
    ):
        names = [_tool_name(tools, body.get("tool_choice"))]
        if "parallel" in asked and len(tools) > 1:  # one call per tool, in one reply
            names = [_tool_name([tool], None) for tool in tools]
        arguments = _tool_arguments(message_text(last_message))
        calls = [
            {
                "id": f"call_{number}",
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
            for number, name in enumerate(names, start=1)
        ]
        return Reply(None, "tool_calls", calls)
    # A block a translation folded into the user's turn is memory, not the user's words.
    text = _MEMORIES_RE.sub("", last_user_text(messages)).strip()
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in (
        "json_object",
        "json_schema",
    ):
        payload: Json = {"echo": text}
        if memories is not None:
            payload["memories"] = memories
        return Reply(orjson.dumps(payload).decode())
    return Reply("ECHO: " + text + suffix)


def _tool_arguments(text: str) -> str:
    """The JSON object after "call tool" in ``text``, else ``{"x": 1}``."""
    start = text.find("{", text.lower().find("call tool"))
    end = text.rfind("}")
    if 0 <= start < end:
        try:
            return orjson.dumps(orjson.loads(text[start : end + 1])).decode()
        except orjson.JSONDecodeError:
            pass
    return '{"x": 1}'


def _tool_name(tools: list[Any], tool_choice: Any) -> str:
    if isinstance(tool_choice, dict):
        chosen = tool_choice.get("function")
        if isinstance(chosen, dict) and isinstance(chosen.get("name"), str):
            return str(chosen["name"])
    first = tools[0] if tools else {}
    function = first.get("function") if isinstance(first, dict) else None
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        return str(function["name"])
    return "tool"


def extraction_answer(prompt: str, *, fenced: bool) -> str:
    """``{"facts": [...]}`` for the prompt's ``<conversation>``; ``fenced`` wraps it in a
    Markdown code block after a line of prose, as real models sometimes do."""
    conversation = between(prompt, "<conversation>", "</conversation>") or ""
    facts = extract_conversation_facts(conversation, exchange_date(prompt))
    answer = orjson.dumps({"facts": facts}).decode()
    if fenced:
        return f"Here you go:\n```json\n{answer}\n```"
    return answer


def profile_answer(messages: Sequence[Mapping[str, Any]]) -> str:
    """``{"profile": "PROFILE: <memory> + <memory> ..."}``: the memories of the profile prompt's
    ``<user_memories>`` block (newest first, dates dropped), joined in their order."""
    block = between(message_text(messages[-1]), "<user_memories>", "</user_memories>") or ""
    texts = [
        re.sub(r"^- (\[[^\]]*\] )?", "", line.strip())
        for line in block.splitlines()
        if line.strip().startswith("- ")
    ]
    return orjson.dumps({"profile": "PROFILE: " + " + ".join(texts)}).decode()


def update_answer(prompt: str) -> str:
    """``{"memory": [...]}``: a decision per new fact against the existing memories."""
    existing = _json_list(between(prompt, "<existing_memories>", "</existing_memories>"))
    facts = _json_list(between(prompt, "<new_facts>", "</new_facts>"))
    decisions = decide_updates(
        (item for item in existing if isinstance(item, dict)),
        (str(fact) for fact in facts if isinstance(fact, str)),
    )
    for decision in decisions:  # a reason where a model would give one; none on ADD/NONE
        if decision["event"] in SCRIPTED_REASONS:
            decision["reason"] = SCRIPTED_REASONS[decision["event"]]
    return orjson.dumps({"memory": decisions}).decode()


# The update answer's optional "reason" (memory_core.contracts.UPDATE_SCHEMA), as the scripted
# memory manager gives it.
SCRIPTED_REASONS = {
    "UPDATE": "the new fact replaces the stored value",
    "DELETE": "the user said it is no longer true",
}


def _json_list(text: str | None) -> list[Any]:
    if not text:
        return []
    try:
        value = orjson.loads(text.strip())
    except orjson.JSONDecodeError:
        return []
    return value if isinstance(value, list) else []


# ---------------------------------------------------------------------------------------------
# Response bodies
# ---------------------------------------------------------------------------------------------


def estimate_tokens(text: str) -> int:
    """A cheap token estimate (about four characters per token)."""
    return (len(text) + 3) // 4


def usage(messages: list[Json], reply: Reply, n: int) -> Json:
    """Estimated token counts of a completion with ``n`` choices."""
    prompt = sum(estimate_tokens(message_text(m)) + 3 for m in messages)
    if reply.tool_calls:
        one = sum(estimate_tokens(c["function"]["arguments"]) + 5 for c in reply.tool_calls)
    else:
        one = estimate_tokens(reply.content or "")
    completion = max(1, one) * n
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def completion_body(body: Json, messages: list[Json], reply: Reply, n: int) -> Json:
    """A ``chat.completion`` object with ``n`` identical choices."""
    message: Json = {"role": "assistant", "content": reply.content, "refusal": None}
    if reply.tool_calls:
        message["tool_calls"] = reply.tool_calls
    return {
        "id": f"chatcmpl-fake-{next(_ID_COUNTER)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "system_fingerprint": "fp_fake",
        "choices": [
            {
                "index": index,
                "message": message,
                "logprobs": None,
                "finish_reason": reply.finish_reason,
            }
            for index in range(n)
        ],
        "usage": usage(messages, reply, n),
    }


def split_chunks(content: str, count: int | None = None) -> list[str]:
    """Split ``content`` for streaming: word by word, or into ``count`` near-equal pieces."""
    if not content:
        return []
    if count is None or count <= 0:
        return _WORD_BOUNDARY_RE.split(content)
    count = min(count, len(content))
    size, extra = divmod(len(content), count)
    pieces: list[str] = []
    start = 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        pieces.append(content[start:end])
        start = end
    return pieces


def stream_events(body: Json, messages: list[Json], reply: Reply, n: int) -> list[bytes]:
    """The SSE events of a streamed completion, ``data: [DONE]`` included.

    Text streams word by word (or in ``fake_chunks`` pieces), tool-call arguments in two
    halves, and a usage chunk comes last when ``stream_options.include_usage`` is set.
    """
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
    chunks = body.get("fake_chunks")
    base: Json = {
        "id": f"chatcmpl-fake-{next(_ID_COUNTER)}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body["model"],
        "system_fingerprint": "fp_fake",
    }
    if include_usage:
        base["usage"] = None

    def event(choices: list[Json]) -> bytes:
        return b"data: " + orjson.dumps({**base, "choices": choices}) + b"\n\n"

    def choice(index: int, delta: Json, finish: str | None = None) -> Json:
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}

    events: list[bytes] = []
    if reply.tool_calls:
        for position, call in enumerate(reply.tool_calls):
            head = {
                "index": position,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""},
            }
            arguments = call["function"]["arguments"]
            half = len(arguments) // 2
            for index in range(n):
                delta: Json = {"tool_calls": [head]}
                if position == 0:
                    delta = {"role": "assistant", "content": None, **delta}
                events.append(event([choice(index, delta)]))
            for part in (arguments[:half], arguments[half:]):
                for index in range(n):
                    delta = {"tool_calls": [{"index": position, "function": {"arguments": part}}]}
                    events.append(event([choice(index, delta)]))
    else:
        for index in range(n):
            events.append(event([choice(index, {"role": "assistant", "content": ""})]))
        count = chunks if isinstance(chunks, int) and chunks > 0 else None
        for piece in split_chunks(reply.content or "", count):
            for index in range(n):
                events.append(event([choice(index, {"content": piece})]))
    for index in range(n):
        events.append(event([choice(index, {}, reply.finish_reason)]))
    if include_usage:
        totals = usage(messages, reply, n)
        events.append(b"data: " + orjson.dumps({**base, "choices": [], "usage": totals}) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


# ---------------------------------------------------------------------------------------------
# Embeddings
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=65536)
def _token_hash(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")


def _embedding_tokens(text: str) -> list[str]:
    tokens: list[str] = []
    for word in WORD_RE.findall(text.lower()):
        word = word.strip("'")
        if word.endswith("'s"):
            word = word[:-2]
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]  # a tiny stemmer: "lives" ~ "live"
        if word:
            tokens.append(word)
    content = [token for token in tokens if token not in STOPWORDS]
    return content or tokens or ["\x00empty"]


def embed_text(text: str, dim: int = DEFAULT_EMBEDDING_DIM) -> list[float]:
    """A deterministic unit vector: feature hashing of lower-cased, lightly stemmed words.

    Stop words (and "user", "my", "I"...) are ignored when the text has other words, so texts
    sharing content words have a high cosine similarity.
    """
    vector = [0.0] * dim
    for token in _embedding_tokens(text):
        value = _token_hash(token)
        vector[value % dim] += 1.0 if (value >> 40) & 1 else -1.0
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0.0:  # every word cancelled out: fall back to one bucket
        vector[_token_hash(text) % dim] = 1.0
        return vector
    return [x / norm for x in vector]


def embedding_inputs(value: Any) -> list[str] | None:
    """The texts of an embeddings ``input`` (token arrays joined by spaces); None if invalid."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(item, str) for item in value):
        return list(value)
    if all(isinstance(item, int) for item in value):  # one pre-tokenised input
        return [" ".join(map(str, value))]
    if all(isinstance(item, list) for item in value):  # several pre-tokenised inputs
        return [" ".join(map(str, item)) for item in value]
    return None


def embeddings_body(texts: list[str], dim: int, *, as_base64: bool, model: str) -> Json:
    """An embeddings ``list`` object: one vector per text, as floats or base64 float32."""
    data: list[Json] = []
    for index, text in enumerate(texts):
        vector = embed_text(text, dim)
        data.append(
            {
                "object": "embedding",
                "index": index,
                "embedding": _embedding_base64(vector) if as_base64 else vector,
            }
        )
    tokens = sum(estimate_tokens(text) for text in texts)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _embedding_base64(vector: list[float]) -> str:
    packed = array.array("f", vector)
    if sys.byteorder != "little":  # pragma: no cover
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode()
