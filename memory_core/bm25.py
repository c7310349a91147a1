"""BM25 over one scope's memories in process, analysed and scored as LanceDB's full-text index
does (its default ``FTS`` tokenizer: split on non-alphanumerics, drop tokens of 40+ bytes,
lowercase, fold accents, Snowball 3 English stem, drop stop words after stemming; BM25 with
k1 1.2, b 0.75). Pure: ``tokenize``, ``Bm25Index.build`` and ``scores``.

One difference on purpose: the statistics (document count, average length, document
frequencies) are the scope's own. LanceDB's index keeps them over the whole table (every
user's memories) and only as of its last ``optimize()``, so there another user's writes move
your ranking; with a single scope in the table after an optimize, both score the same.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt
import Stemmer

K1 = 1.2
B = 0.75
MAX_TOKEN_BYTES = 40  # LanceDB's ``max_token_length``: longer tokens are dropped
# Which analyser made a list of terms: stored with the terms of each memory (``store_schema``),
# so a load uses them only while ``tokenize`` still makes the same. Move it on with any change
# to ``tokenize``, its word pattern, stemmer or stop words.
ANALYSER_VERSION = 1

_WORD = re.compile(r"[^\W_]+")
_STEMMER = Stemmer.Stemmer(
    "english"
)  # Snowball 3 English, as LanceDB's tokenizer (Porter2 differs)

# Matched against stems, as LanceDB does (so "canned" -> "can" is dropped, "because" ->
# "becaus" is kept); measured against LanceDB 0.40's index on every LoCoMo word.
STOP_WORDS = frozenset(
    """a about above after again against ain all am an and any are aren as at be because been
    before being below between both but by can couldn d did didn do does doesn doing don down
    during each few for from further had hadn has hasn have haven having he her here hers herself
    him himself his how i if in into is isn it its itself just ll m ma me mightn more most mustn
    my myself needn no nor not now o of off on once only or other our ours ourselves out over own
    re s same shan she should shouldn so some such t than that the their theirs them themselves
    then there these they this those through to too under until up ve very was wasn we were
    weren what when where which while who whom why will with won wouldn y you your yours
    yourself yourselves""".split()
)


@lru_cache(maxsize=65536)
def _term(word: str) -> str | None:
    """One word's index term, or None when LanceDB's analyser drops it."""
    if len(word.encode()) >= MAX_TOKEN_BYTES:
        return None
    lowered = word.lower()
    if not lowered.isascii():
        folded = unicodedata.normalize("NFKD", lowered)
        lowered = "".join(c for c in folded if not unicodedata.combining(c))
    stem: str = _STEMMER.stemWord(lowered)
    return None if stem in STOP_WORDS else stem


def tokenize(text: str) -> list[str]:
    """The index terms of ``text``, in order, repeats kept."""
    return [t for t in map(_term, _WORD.findall(text)) if t is not None]


def has_content_words(text: str) -> bool:
    """True when ``text`` has a word a full-text search would match on (not only stop words,
    punctuation or emoji): "ok", "and?" or "thanks!" alone have none worth a recall."""
    return any(term not in CHITCHAT for term in tokenize(text))


# Stems of words that carry no topic in a chat turn on their own, beyond the stop words.
CHITCHAT = frozenset(
    _STEMMER.stemWord(w)
    for w in """ok okay k yes yeah yep yup no nope sure thanks thank thx ty please pls hi hello
    hey bye goodbye cool great nice good fine wow lol haha hmm hm oh ah uh um continue go on
    more again right alright got it yes""".split()
)


@dataclass(frozen=True, slots=True)
class Bm25Index:
    """Postings of a fixed list of documents, compressed rows: term ``t`` (``terms[t]``) is in
    documents ``docs[starts[t]:starts[t + 1]]``, ``tfs`` times each: a few numpy calls, not
    two small arrays per term (1,000 memories: 11.7 ms instead of 13.3, the analyser's 8.9 ms
    included). Built from analysed documents: a load reads the terms stored with each
    memory (``ANALYSER_VERSION``) instead of analysing its text again."""

    terms: dict[str, int]
    starts: npt.NDArray[np.int64]
    docs: npt.NDArray[np.int32]
    tfs: npt.NDArray[np.float32]
    lengths: npt.NDArray[np.float32]
    norms: npt.NDArray[np.float32]  # BM25's length normalisation of each document, once

    @classmethod
    def build(cls, analysed: Sequence[Sequence[str]]) -> Bm25Index:
        """The index of documents given as their terms (``tokenize`` of each text)."""
        terms: dict[str, int] = {}
        term_of_token: list[int] = []
        lengths = np.zeros(len(analysed), dtype=np.float32)
        for doc, tokens in enumerate(analysed):
            lengths[doc] = len(tokens)
            term_of_token.extend(terms.setdefault(t, len(terms)) for t in tokens)
        width = max(len(analysed), 1)
        doc_of_token = np.repeat(np.arange(len(analysed), dtype=np.int64), lengths.astype(np.int64))
        pairs = np.asarray(term_of_token, dtype=np.int64) * width + doc_of_token
        unique, counts = np.unique(pairs, return_counts=True)  # sorted: by term, then document
        starts = np.searchsorted(unique // width, np.arange(len(terms) + 1)).astype(np.int64)
        docs = (unique % width).astype(np.int32)
        average = float(lengths.mean()) if len(analysed) else 1.0
        norms = (K1 * (1.0 - B + B * lengths / (average or 1.0))).astype(np.float32)
        return cls(terms, starts, docs, counts.astype(np.float32), lengths, norms)

    @property
    def nbytes(self) -> int:
        arrays = self.starts.nbytes + self.docs.nbytes + self.tfs.nbytes
        arrays += self.lengths.nbytes + self.norms.nbytes
        return int(arrays) + sum(100 + len(term) for term in self.terms)  # dict entry + str

    def postings(self, term: str) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
        """The documents holding ``term`` and how often (empty when none does)."""
        index = self.terms.get(term)
        if index is None:
            return self.docs[:0], self.tfs[:0]
        first, last = self.starts[index], self.starts[index + 1]
        return self.docs[first:last], self.tfs[first:last]

    def scores(self, query: str) -> npt.NDArray[np.float32]:
        """Each document's BM25 score for ``query`` (0 where no term matches); a term the
        query repeats counts each time, as in LanceDB."""
        total = np.zeros(len(self.lengths), dtype=np.float32)
        count = len(self.lengths)
        if count == 0:
            return total
        norm = self.norms
        for term in tokenize(query):
            docs, tfs = self.postings(term)
            if not len(docs):
                continue
            idf = np.log1p((count - len(docs) + 0.5) / (len(docs) + 0.5))
            total[docs] += (idf * (K1 + 1.0) * tfs / (tfs + norm[docs])).astype(np.float32)
        return total


__all__ = ["ANALYSER_VERSION", "STOP_WORDS", "Bm25Index", "has_content_words", "tokenize"]
