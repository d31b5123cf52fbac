"""Outputs judged by kind (issue 19 s3): inference from shapes and the final operator, and each
kind's metric against a plain loop over rows / pixels."""

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from dfmpc_onnx.errors import OptionsError
from dfmpc_onnx.measure.fidelity import FidelityProbe, compare
from dfmpc_onnx.measure.output_kinds import activation_hints, infer_kind, parse_output_kinds


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def head_model(op: str, out_shape: list, axis: int = -1):
    """input (N, 4, 6) -> MatMul (6 -> C) -> [Transpose] -> op: a tiny head of each kind."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((6, 5)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"], name="mm")]
    last = "mm"
    if op:
        nodes.append(helper.make_node("Transpose", ["mm"], ["t"], perm=[0, 1, 2]))
        attrs = {"axis": axis} if op == "Softmax" else {}
        nodes.append(helper.make_node(op, ["t"], ["y"], **attrs))
        last = "y"
    m = helper.make_model(helper.make_graph(
        nodes, "h", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 6])],
        [helper.make_tensor_value_info(last, TensorProto.FLOAT, out_shape)], [w]),
        opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_kinds_are_inferred_from_shape_and_the_final_operator():
    rng = np.random.default_rng(0)
    assert infer_kind(rng.standard_normal((4, 10)).astype(np.float32)) == "class"
    seq = _softmax(rng.standard_normal((2, 7, 5))).astype(np.float32)
    assert infer_kind(seq) == "sequence"  # probabilities per position
    assert infer_kind(rng.standard_normal((2, 7, 5)).astype(np.float32)) == "regression"  # hidden states
    assert infer_kind(rng.standard_normal((2, 7, 5)).astype(np.float32), "softmax") == "sequence"
    heat = (1 / (1 + np.exp(-rng.standard_normal((2, 1, 8, 8))))).astype(np.float32)
    assert infer_kind(heat, "sigmoid") == "dense"
    assert infer_kind(_softmax(rng.standard_normal((2, 3, 8, 8)), axis=1)) == "dense"  # segmentation
    assert infer_kind(rng.standard_normal((2, 1, 8, 8)).astype(np.float32)) == "regression"
    assert infer_kind(rng.standard_normal(4).astype(np.float32)) == "regression"
    assert infer_kind(np.arange(4)) == "mismatch"
    # The final operator is found through shape-only operators.
    assert activation_hints(head_model("Softmax", ["N", 4, 5])) == {"y": "softmax"}
    assert activation_hints(head_model("Sigmoid", ["N", 4, 5])) == {"y": "sigmoid"}
    assert activation_hints(head_model("Softmax", ["N", 4, 5], axis=1)) == {"y": "softmax:1"}
    assert activation_hints(head_model("", ["N", 4, 5])) == {}


def test_the_probe_infers_sequence_and_a_named_kind_overrides_it():
    x = {"x": np.random.default_rng(1).standard_normal((8, 4, 6)).astype(np.float32)}
    assert FidelityProbe(head_model("Softmax", ["N", 4, 5]), ["w"], x).kinds == {"y": "sequence"}
    assert FidelityProbe(head_model("", ["N", 4, 5]), ["w"], x).kinds == {"mm": "regression"}
    named = FidelityProbe(head_model("", ["N", 4, 5]), ["w"], x, kinds={"mm": "sequence"})
    assert named.kinds == {"mm": "sequence"}
    fid = named.measure({"w": np.round(named.weight("w"))})
    assert fid.metric == {"mm": "kl"} and fid.top1_agreement is not None


def _by_hand_sequence(a, b):
    """Per position: KL of the probabilities, and argmax agreement over the positions where
    either side picks other than the float model's most frequent class."""
    rows_a, rows_b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    kls = []
    for p, q in zip(rows_a.astype(np.float64), rows_b.astype(np.float64), strict=True):
        q = np.clip(q, 1e-12, None)
        q = q / q.sum()
        kls.append(sum(pi * np.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0))
    arg_a = [int(np.argmax(r)) for r in rows_a]
    arg_b = [int(np.argmax(r)) for r in rows_b]
    mode = max(set(arg_a), key=lambda k: (arg_a.count(k), -k))
    counted = [(x, y) for x, y in zip(arg_a, arg_b, strict=True) if x != mode or y != mode]
    agree = sum(x == y for x, y in counted) / len(counted) if counted else 1.0
    return float(np.mean(kls)), agree


@pytest.mark.parametrize("time_major", [False, True])
def test_sequence_kl_and_agreement_per_position_match_a_loop(time_major):
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((6, 9, 5)) * 2
    logits[..., 0] += 3  # mostly "blank", as a CTC recogniser on a text line
    a = _softmax(logits).astype(np.float32)
    b = _softmax(logits + 0.8 * rng.standard_normal(logits.shape)).astype(np.float32)
    if time_major:
        a, b = a.transpose(1, 0, 2).copy(), b.transpose(1, 0, 2).copy()
    fid = compare([{"y": a[:3]}, {"y": a[3:]}], [{"y": b[:3]}, {"y": b[3:]}], ["y"])
    kl, agree = _by_hand_sequence(a, b)
    assert fid.kinds == {"y": "sequence"} and fid.metric == {"y": "kl-prob"}
    assert fid.divergence["y"] == pytest.approx(kl, rel=1e-6)
    assert fid.top1_agreement == pytest.approx(agree)
    plain = np.mean(np.argmax(a, -1) == np.argmax(b, -1))
    assert agree < plain  # the blanks kept do not count as characters read


def test_dense_maps_are_judged_by_mask_agreement_and_relative_error():
    rng = np.random.default_rng(3)
    a = (1 / (1 + np.exp(-2 * rng.standard_normal((2, 1, 6, 6))))).astype(np.float32)
    b = np.clip(a + 0.2 * rng.standard_normal(a.shape), 0, 1).astype(np.float32)
    fid = compare([{"m": a}], [{"m": b}], ["m"], {"m": "dense"})
    inter = union = 0
    for ai, bi in zip(a.ravel(), b.ravel(), strict=True):
        inter += (ai > 0.5) and (bi > 0.5)
        union += (ai > 0.5) or (bi > 0.5)
    assert fid.top1_agreement == pytest.approx(inter / union)
    err = np.sum((a.astype(np.float64) - b) ** 2) / np.sum(a.astype(np.float64) ** 2)
    assert fid.divergence["m"] == pytest.approx(err) and fid.metric == {"m": "rel_mse"}
    # A map the candidate empties agrees on nothing, though its relative error is modest.
    empty = compare([{"m": a}], [{"m": np.minimum(a, 0.5)}], ["m"], {"m": "dense"})
    assert empty.top1_agreement == 0.0 and empty.divergence["m"] < 0.5
    nothing = compare([{"m": a * 0.1}], [{"m": b * 0.1}], ["m"], {"m": "dense"})
    assert nothing.single_class  # no foreground in the float map: agreement cannot judge


def test_output_kind_option_is_parsed_and_checked(tmp_path):
    assert parse_output_kinds(["a=sequence", "b:c=dense"]) == {"a": "sequence", "b:c": "dense"}
    with pytest.raises(OptionsError, match="--output-kind 'a=text'"):
        parse_output_kinds(["a=text"])
    import onnx

    from dfmpc_onnx.cli import main

    src = tmp_path / "m.onnx"
    onnx.save(head_model("Softmax", ["N", 4, 5]), src)
    r = CliRunner().invoke(main, ["convert", str(src), "-o", str(tmp_path / "o.onnx"), "-q",
                                  "--output-kind", "nope=sequence", "--input-shape", "x=1,4,6"])
    assert r.exit_code != 0 and "nope" in r.output and "Traceback" not in r.output


def test_sequence_plans_are_compared_on_the_same_positions_against_the_8_bit_floor():
    from dfmpc_onnx.passes.choose_plan import _fid_ok

    rng = np.random.default_rng(4)
    logits = rng.standard_normal((4, 12, 5)) * 2
    logits[..., 0] += 3
    a = _softmax(logits).astype(np.float32)
    near = _softmax(logits + 0.3 * rng.standard_normal(logits.shape)).astype(np.float32)
    far = _softmax(logits + 3.0 * rng.standard_normal(logits.shape)).astype(np.float32)
    floor, good, bad = (compare([{"y": a}], [{"y": b}], ["y"]) for b in (near, near, far))
    assert floor.agrees.shape == bad.agrees.shape == (int(np.sum(np.argmax(a, -1) != 0)),)
    assert _fid_ok(good, 0.99, floor) and not _fid_ok(bad, 0.99, floor)


def test_regression_judges_every_feature_at_its_own_scale() -> None:
    """A detector head (batch, 4 boxes + 3 scores, anchors): boxes in the hundreds, scores in 0..1.
    Wrecking the scores hardly moves the plain relative error; the per-feature one sees it, and
    equals a slow loop over every axis and slice."""
    from dfmpc_onnx.measure.output_kinds import feature_relative_error, judge, relative_error

    rng = np.random.default_rng(0)
    a = np.concatenate([rng.uniform(100, 300, (2, 4, 50)), rng.uniform(0, 1, (2, 3, 50))], axis=1)
    b = a.copy()
    b[:, 4:] = rng.uniform(0, 1, (2, 3, 50))  # scores replaced by noise
    plain = relative_error([a], [b])
    per_feature = feature_relative_error([a[:1], a[1:]], [b[:1], b[1:]])
    assert plain < 0.01 < per_feature

    def slow(x: np.ndarray, y: np.ndarray) -> float:
        worst = float(np.sum((x - y) ** 2) / np.sum(x ** 2))
        for axis in range(1, x.ndim):
            ratios = []
            for c in range(x.shape[axis]):
                xc, yc = np.take(x, c, axis=axis), np.take(y, c, axis=axis)
                if np.sum(xc ** 2) > 0:
                    ratios.append(np.sum((xc - yc) ** 2) / np.sum(xc ** 2))
            worst = max(worst, float(np.mean(ratios)))
        return worst

    assert per_feature == pytest.approx(slow(a, b), rel=1e-9)
    assert judge("regression", [a], [b]).divergence == pytest.approx(per_feature)
    assert judge("regression", [a], [a]).divergence == 0.0
