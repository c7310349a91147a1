"""The learned fusion's features, and its shipped weights read from ``data/fusion_weights.json``.

Kept apart from ``retrieval`` so the config can validate weight names without an import cycle.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import ConfigError

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

# What feedback on a memory adds to its fused score, in top ranks' worth (the unit recency uses
# too), times ``search.feedback_weight``: negative lowers a memory, positive lifts it a little.
# VERY_NEGATIVE never reaches the fusion: it hides the memory from search (``lifecycle.py``).
FEEDBACK_WEIGHTS = {"POSITIVE": 0.25, "NEGATIVE": -1.0}

WEIGHTS_FILE = Path(__file__).parent / "data" / "fusion_weights.json"


def load_learned_weights(path: Path = WEIGHTS_FILE) -> dict[str, float]:
    """The shipped weights (fitted by ``python -m bench locomo --fit``, which writes the file):
    a logistic regression of "is an evidence turn" on ``FEATURES``, in raw units."""
    weights = json.loads(path.read_text(encoding="utf-8"))["weights"]
    unknown = sorted(set(weights) - set(FEATURES))
    if unknown:
        raise ConfigError(f"{path}: unknown fusion features {unknown}")
    return {name: float(weights.get(name, 0.0)) for name in FEATURES}


# Read once at import: the search path never touches the disk for them.
LEARNED_WEIGHTS: dict[str, float] = load_learned_weights()
