"""MatMul-heavy float models with seeded random weights, built with onnx.helper (no torch): an MLP
stack and a BERT-shaped encoder, the layers where weight-only integer matrix products can beat
float (batch 1 is memory-bound: the weights are read once per token row).

    model = bert_encoder(layers=12, hidden=768, heads=12, ffn=3072, seq=128)   # BERT-base shape
    model = mlp_stack(blocks=6, width=768, ffn=3072)

Both take a float input of dynamic batch (BERT: [batch, seq, hidden] hidden states, the
embeddings left out: a Gather over a table is no matrix product). Weights are N(0, 0.02), the
initialisation BERT and GPT-2 use, so activations stay in range through many layers.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 21  # block-wise DequantizeLinear; LayerNormalization from 17


class _Builder:
    """Nodes and initializers of one graph, with fresh names."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def const(self, stem: str, value: np.ndarray) -> str:
        n = self.name(stem)
        self.inits.append(numpy_helper.from_array(value, n))
        return n

    def op(self, op_type: str, inputs: list[str], stem: str | None = None, **attrs) -> str:
        out = self.name(stem or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"{out}_node", **attrs))
        return out

    def linear(self, x: str, n_in: int, n_out: int, stem: str) -> str:
        """MatMul by a [n_in, n_out] weight then Add of a bias (how exporters write nn.Linear)."""
        w = self.const(f"{stem}_W", (self.rng.standard_normal((n_in, n_out)) * 0.02).astype(np.float32))
        b = self.const(f"{stem}_b", (self.rng.standard_normal(n_out) * 0.02).astype(np.float32))
        return self.op("Add", [self.op("MatMul", [x, w], stem), b], f"{stem}_add")

    def layer_norm(self, x: str, width: int) -> str:
        g = self.const("ln_gamma", np.ones(width, np.float32))
        b = self.const("ln_beta", np.zeros(width, np.float32))
        return self.op("LayerNormalization", [x, g, b], "ln", axis=-1, epsilon=1e-12)

    def gelu(self, x: str) -> str:
        """0.5 x (1 + erf(x / sqrt 2)), as exporters write it before opset 20's Gelu."""
        e = self.op("Erf", [self.op("Div", [x, self.const("sqrt2", np.array(np.sqrt(2), np.float32))])])
        one = self.const("one", np.array(1.0, np.float32))
        half = self.const("half", np.array(0.5, np.float32))
        return self.op("Mul", [self.op("Mul", [x, self.op("Add", [e, one])]), half])

    def model(self, shape: list, y: str, name: str) -> onnx.ModelProto:
        """The graph from input ``x`` to output ``y``, both of ``shape``."""
        graph = helper.make_graph(
            self.nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info(y, TensorProto.FLOAT, shape)], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 10
        return model


def mlp_stack(blocks: int = 6, width: int = 768, ffn: int = 3072, seed: int = 0) -> onnx.ModelProto:
    """``blocks`` x (Linear width->ffn, GELU, Linear ffn->width, residual, LayerNorm); input
    [batch, width]."""
    b = _Builder(seed)
    x = "x"
    for i in range(blocks):
        h = b.linear(b.gelu(b.linear(x, width, ffn, f"fc{i}a")), ffn, width, f"fc{i}b")
        x = b.layer_norm(b.op("Add", [x, h]), width)
    return b.model(["batch", width], x, "mlp_stack")


def bert_encoder(layers: int = 12, hidden: int = 768, heads: int = 12, ffn: int = 3072,
                 seq: int = 128, seed: int = 0) -> onnx.ModelProto:
    """A BERT encoder (post-LayerNorm, GELU FFN, no attention mask) on hidden states
    [batch, seq, hidden]: per layer four hidden x hidden projections and the two FFN matrices,
    the BERT-base shape at the defaults (85 M weights in the matrix products)."""
    b = _Builder(seed)
    dh = hidden // heads
    split = b.const("heads_shape", np.array([0, seq, heads, dh], np.int64))
    merge = b.const("merge_shape", np.array([0, seq, hidden], np.int64))
    scale = b.const("attn_scale", np.array(1.0 / np.sqrt(dh), np.float32))
    x = "x"
    for i in range(layers):
        def heads_of(t: str, perm: list[int]) -> str:
            return b.op("Transpose", [b.op("Reshape", [t, split])], perm=perm)
        q = heads_of(b.linear(x, hidden, hidden, f"l{i}_q"), [0, 2, 1, 3])
        k = heads_of(b.linear(x, hidden, hidden, f"l{i}_k"), [0, 2, 3, 1])
        v = heads_of(b.linear(x, hidden, hidden, f"l{i}_v"), [0, 2, 1, 3])
        att = b.op("Softmax", [b.op("Mul", [b.op("MatMul", [q, k]), scale])], axis=-1)
        ctx = b.op("Reshape", [b.op("Transpose", [b.op("MatMul", [att, v])], perm=[0, 2, 1, 3]), merge])
        x = b.layer_norm(b.op("Add", [x, b.linear(ctx, hidden, hidden, f"l{i}_o")]), hidden)
        h = b.linear(b.gelu(b.linear(x, hidden, ffn, f"l{i}_ffn1")), ffn, hidden, f"l{i}_ffn2")
        x = b.layer_norm(b.op("Add", [x, h]), hidden)
    return b.model(["batch", seq, hidden], x, "bert_encoder")
