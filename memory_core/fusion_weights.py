"""The learned fusion's features and shipped weights (``python -m bench locomo --fit``).

Kept apart from ``retrieval`` so the config can validate weight names without an import cycle.
"""

from __future__ import annotations

# What ``retrieval.score_candidates`` weighs. Rank features are ``1 / (k + rank + 1)`` in that
# ranking (0 when the memory is not in it), so weights on them alone are reciprocal-rank fusion.
FEATURES = (
    "vector_rank",  # rank in the exact vector search
    "text_rank",  # rank in the BM25 full-text search
    "date_rank",  # rank in the vector search around a date the query names
    "similarity",  # cosine of memory and query
    "text_score",  # BM25 score over the query's best BM25 score (0 when not a text hit)
    "speaker",  # 1: the query names the memory's speaker label (and not every candidate's)
    "question",  # 1: the memory (without its speaker label) ends with a question mark
    "asks",  # 1: it contains a question mark
    "length",  # log(1 + words)
    "names",  # capitalised words after the first (names, places: what facts are about)
    "digits",  # 1: it contains a digit (dates, amounts)
)

# Fitted on the LoCoMo tune split by ``python -m bench locomo --fit`` (which rewrites this
# literal): logistic regression of "is an evidence turn" on the features, in raw units.
LEARNED_WEIGHTS: dict[str, float] = {
    "vector_rank": 21.7162,
    "text_rank": 18.5571,
    "date_rank": 18.4828,
    "similarity": 8.23374,
    "text_score": 2.36517,
    "speaker": 1.82516,
    "question": -0.627809,
    "asks": -0.338661,
    "length": 0.729019,
    "names": 0.123267,
    "digits": 0.842146,
}
