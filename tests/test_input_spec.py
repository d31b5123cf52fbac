"""Inputs the model does not pin down (issue 19): symbolic dimensions set by documented rules and
checked in ONNX Runtime, integer draws in the range the graph allows, the input range read from
the graph, and explicit requests honoured or refused."""

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper
from tinymodels import make_model

from dfmpc_onnx import ConvertOptions, convert
from dfmpc_onnx.cli import main
from dfmpc_onnx.errors import OptionsError
from dfmpc_onnx.measure.input_spec import infer_range, ort_check, resolve_shapes
from dfmpc_onnx.measure.synthetic import integer_ranges, synthetic_inputs


def strided_net(shape, seed: int = 0, pre=(), in_type=TensorProto.FLOAT, strides=((2, 2), (2, 2))):
    """x[shape] -> [pre nodes] -> conv(s1) -> relu -> conv(s2) -> relu -> GAP -> Flatten -> fc."""
    rng = np.random.default_rng(seed)
    nodes, inits, x, c = list(pre), {}, ("x" if not pre else pre[-1].output[0]), 3
    for i, s in enumerate(strides):
        inits[f"w{i}"] = (rng.standard_normal((8, c, 3, 3)) * 0.3).astype(np.float32)
        inits[f"b{i}"] = (0.1 * rng.standard_normal(8)).astype(np.float32)
        nodes += [helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], name=f"conv{i}",
                                   pads=[1, 1, 1, 1], strides=list(s)),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        x, c = f"r{i}", 8
    inits["fc.w"] = (rng.standard_normal((8, 10)) * 0.3).astype(np.float32)
    nodes += [helper.make_node("GlobalAveragePool", [x], ["g"], name="gap"),
              helper.make_node("Flatten", ["g"], ["f"], name="flat"),
              helper.make_node("MatMul", ["f", "fc.w"], ["y"], name="fc")]
    return make_model(nodes, [helper.make_tensor_value_info("x", in_type, shape)],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)


def test_symbolic_height_and_width_are_resolved_and_reported():
    model = strided_net(["N", 3, "H", "W"])
    spec = resolve_shapes(model, check=ort_check(model))
    assert spec.shapes == {"x": (1, 3, 224, 224)}  # 224 is a multiple of the total stride 4
    _, rep = convert(model, ConvertOptions(target_bits=4))
    assert rep.inputs["x"]["shape"] == [1, 3, 224, 224]
    assert "'H' = 224" in rep.inputs["x"]["rule"] and "total stride 4" in rep.inputs["x"]["rule"]
    assert rep.fidelity["samples"] >= 16 and rep.stored_bits <= 4
    assert "measured on: x 1x3x224x224" in rep.format()


def test_one_fixed_axis_sets_the_other_to_four_times_it_on_the_stride():
    model = strided_net(["N", 3, 12, "W"], strides=((2, 2), (2, 4)))  # W stride 8
    spec = resolve_shapes(model, check=ort_check(model))
    assert spec.shapes["x"] == (1, 3, 12, 48)  # 4 x 12 = 48, a multiple of 8
    model = strided_net(["N", 3, 10, "W"], strides=((2, 2), (2, 4)))
    assert resolve_shapes(model).shapes["x"] == (1, 3, 10, 40)
    model = strided_net(["N", 3, 9, "W"], strides=((1, 2), (1, 4)))
    assert resolve_shapes(model).shapes["x"] == (1, 3, 9, 40)  # 36 rounded up to 8's multiple


def test_a_text_line_model_gets_its_row_stride_and_a_line_aspect():
    """Both axes symbolic, rows downsampled 16x more than columns (a CTC recogniser)."""
    model = strided_net(["N", 3, "H", "W"], strides=((4, 1), (4, 1)))
    assert resolve_shapes(model).shapes["x"] == (1, 3, 16, 64)


def test_input_shape_overrides_the_rules():
    model = strided_net(["N", 3, "H", "W"])
    spec = resolve_shapes(model, {"x": (2, 3, 16, 40)}, check=ort_check(model))
    assert spec.shapes == {"x": (2, 3, 16, 40)} and spec.rules["x"] == "--input-shape"
    with pytest.raises(OptionsError, match="rank 4"):
        resolve_shapes(model, {"x": (1, 16, 40)})


def _reshape_net(dims, target):
    """x[dims] -> Reshape(target) -> MatMul: runs only where the input's size fits ``target``."""
    inits = {"shape": np.array(target, np.int64),
             "w": np.random.default_rng(0).standard_normal((target[-1], 4)).astype(np.float32)}
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"], name="reshape"),
             helper.make_node("MatMul", ["r", "w"], ["y"], name="fc")]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)


def test_a_refused_shape_moves_on_to_the_next_candidate_and_says_so():
    model = _reshape_net([1, "L"], [1, 512])  # a streaming chunk: 16000, 4096, 1024 do not fit
    spec = resolve_shapes(model, check=ort_check(model))
    assert spec.shapes == {"x": (1, 512)}
    assert [r.split(" (")[0] for r in spec.refused] == ["x 1x16000", "x 1x4096", "x 1x1024"]


def test_explicit_target_bits_with_an_unresolvable_input_exits_2(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(_reshape_net(["N", "L"], [-1, 37]), src)  # no candidate is a multiple of 37
    runner = CliRunner()
    r = runner.invoke(main, ["convert", str(src), "-o", str(tmp_path / "q.onnx"), "-q",
                             "--target-bits", "4"])
    assert r.exit_code == 2, r.output
    assert "--target-bits 4 needs the model measured" in r.stderr and "--input-shape x=" in r.stderr
    assert not (tmp_path / "q.onnx").exists()
    r = runner.invoke(main, ["convert", str(src), "-o", str(tmp_path / "q.onnx"), "-q",
                             "--activations", "int8"])
    assert r.exit_code == 2 and "--activations int8 needs the model measured" in r.stderr
    # The defaults ask for nothing measuring must give: converted, unmeasured, and said so.
    r = runner.invoke(main, ["convert", str(src), "-o", str(tmp_path / "d.onnx"), "-q", "--json"])
    assert r.exit_code == 0, r.output
    assert any("not measured" in n for n in json.loads(r.stdout)["notes"])
    # Given the shape, the request is honoured.
    r = runner.invoke(main, ["convert", str(src), "-o", str(tmp_path / "g.onnx"), "-q", "--json",
                             "--target-bits", "4", "--input-shape", "x=1,74"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["inputs"]["x"]["shape"] == [1, 74] and rep["stored_bits"] <= 4


def test_target_bits_without_measuring_is_refused():
    with pytest.raises(OptionsError, match="--fidelity-samples 0"):
        ConvertOptions(target_bits=4, fidelity_samples=0)


def test_shared_dimension_names_and_token_ids_below_the_table_size():
    table = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((8, 8)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], name="embed"),
             helper.make_node("Cast", ["mask"], ["mf"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["mf", "axes"], ["mu"], name="unsq"),
             helper.make_node("Mul", ["e", "mu"], ["m"], name="apply_mask"),
             helper.make_node("MatMul", ["m", "w"], ["y"], name="fc")]
    model = make_model(nodes, [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "seq"]),
                               helper.make_tensor_value_info("mask", TensorProto.INT64, ["b", "seq"])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "seq", 8])],
                       {"table": table, "w": w, "axes": np.array([-1], np.int64)})
    spec = resolve_shapes(model, check=ort_check(model))
    assert spec.shapes == {"ids": (1, 128), "mask": (1, 128)}
    assert "as on ids" in spec.rules["mask"]
    assert integer_ranges(model) == {"ids": (0, 50)}
    feeds = synthetic_inputs(model, n=4, shapes=spec.shapes)
    assert feeds["ids"].max() < 50 and feeds["ids"].max() > 30  # the whole table is used
    assert set(np.unique(feeds["mask"])) <= {0, 1}
    _, rep = convert(model, ConvertOptions())  # (4 bits: below what 8x8 grids with scales need)
    assert rep.inputs["ids"]["range"] == "integers 0..49 (below the size 50 of the Gather table it indexes)"
    assert rep.inputs["mask"]["range"] == "0/1 (a mask or flag)"


def _norm(chain):
    """x -> the ``chain`` of (op, constant, constant first) -> the conv net."""
    nodes, inits, t = [], {}, "x"
    for i, (op, value, const_first) in enumerate(chain):
        inits[f"k{i}"] = np.asarray(value, np.float32).reshape(1, -1, 1, 1)
        ins = [f"k{i}", t] if const_first else [t, f"k{i}"]
        nodes.append(helper.make_node(op, ins, [f"n{i}"], name=f"norm{i}"))
        t = f"n{i}"
    model = strided_net(["N", 3, 16, 16], pre=nodes)
    model.graph.initializer.extend(onnx.numpy_helper.from_array(v, k) for k, v in inits.items())
    return model


@pytest.mark.parametrize("chain, expected", [
    ([("Sub", [123.7, 116.3, 103.5], False), ("Div", [58.4, 57.1, 57.4], False)], (0, 255)),
    ([("Div", 255.0, False), ("Sub", 0.5, False), ("Div", 0.5, False)], (0, 255)),
    ([("Sub", 0.5, False), ("Mul", 2.0, False)], (0, 1)),
    ([("Sub", [0.485, 0.456, 0.406], False), ("Div", [0.229, 0.224, 0.225], False)], (0, 1)),
    ([("Mul", 1 / 127.5, False), ("Sub", 1.0, False)], (0, 255)),
    ([("Mul", 2.0, False), ("Add", 0.0, False)], (-1, 1)),
])
def test_a_normalisation_at_the_input_gives_the_raw_range(chain, expected):
    model = _norm(chain)
    inferred = infer_range(model)
    assert inferred is not None and inferred.value_range == expected, inferred
    assert "norm0" in inferred.reason
    _, rep = convert(model, ConvertOptions(target_bits=4))
    assert rep.inputs["x"]["range"].startswith(f"{expected[0]}..{expected[1]} (inferred")
    # The user's range wins over the graph's.
    _, rep = convert(model, ConvertOptions(target_bits=4, input_range=(-3.0, 3.0)))
    assert rep.inputs["x"]["range"] == "-3..3 (--input-range)"


def test_no_cue_keeps_the_normalised_default_and_says_so():
    model = strided_net(["N", 3, 16, 16])
    assert infer_range(model) is None
    assert infer_range(_norm([("Sub", 2.0, True)])) is not None  # 2 - x is a cue too
    _, rep = convert(model, ConvertOptions(target_bits=4))
    assert "the default: a normalised input" in rep.inputs["x"]["range"]


def test_a_clip_at_the_input_gives_its_bounds():
    clip = helper.make_node("Clip", ["x", "lo", "hi"], ["c"], name="clip_in")
    model = strided_net(["N", 3, 16, 16], pre=[clip])
    model.graph.initializer.extend([onnx.numpy_helper.from_array(np.array(0, np.float32), "lo"),
                                    onnx.numpy_helper.from_array(np.array(6, np.float32), "hi")])
    assert infer_range(model).value_range == (0.0, 6.0)


def test_uint8_pixels_cast_inside_the_graph_are_drawn_over_0_255():
    cast = helper.make_node("Cast", ["x"], ["xf"], name="to_float", to=TensorProto.FLOAT)
    model = strided_net(["N", 3, "H", "W"], pre=[cast], in_type=TensorProto.UINT8)
    assert integer_ranges(model) == {"x": (0, 256)}
    spec = resolve_shapes(model, check=ort_check(model))
    x = synthetic_inputs(model, n=2, shapes=spec.shapes)["x"]
    assert x.dtype == np.uint8 and x.min() <= 5 and x.max() >= 250
    _, rep = convert(model, ConvertOptions(target_bits=4))
    assert rep.fidelity["samples"] >= 16 and rep.inputs["x"]["shape"] == [1, 3, 224, 224]
    assert rep.inputs["x"]["range"] == "integers 0..255 (the whole uint8 range)"


def _seeded_unit_images(kind: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """``kind``'s images for a model of input ``shape``, checked seeded and per image zero-mean
    and unit-variance (as every kind is without a stated range)."""
    m = strided_net(["N", *shape[1:]])
    a = synthetic_inputs(m, n=shape[0], kind=kind, seed=seed)["x"]
    assert a.shape == shape and a.dtype == np.float32
    assert np.array_equal(a, synthetic_inputs(m, n=shape[0], kind=kind, seed=seed)["x"])
    assert np.allclose(a.mean(axis=(2, 3)), 0, atol=1e-5) and np.allclose(a.std(axis=(2, 3)), 1, atol=1e-4)
    return a


def test_dead_leaves_are_flat_discs_normalised_and_seeded():
    m = strided_net(["N", 3, 32, 48])
    a = _seeded_unit_images("leaves", (3, 3, 32, 48), 1)
    # Flat regions: far fewer levels than pixels, and most neighbours equal.
    assert len(np.unique(a[0, 0])) < 200
    assert np.mean(a[:, :, :, 1:] == a[:, :, :, :-1]) > 0.5  # smooth noise: none
    r = synthetic_inputs(m, n=2, kind="leaves", value_range=(0.0, 255.0))["x"]
    assert r.min() >= 0 and r.max() <= 255


def test_strokes_are_ink_segments_on_flat_paper_seeded_and_in_range():
    m = strided_net(["N", 3, 48, 192])
    _seeded_unit_images("strokes", (4, 3, 48, 192), 2)
    # In a range: paper and ink at their levels; two levels an image (and the channels' jitter),
    # the paper's the most common, covering most of the image.
    r = synthetic_inputs(m, n=4, kind="strokes", seed=2, value_range=(-1.0, 1.0))["x"]
    assert r.min() >= -1 and r.max() <= 1
    for img in r[:, 0]:
        levels, counts = np.unique(img, return_counts=True)
        assert len(levels) == 2 and counts.max() > 0.5 * img.size
    # Without spatial axes there are no strokes to draw: plain Gaussian, as for smooth noise.
    flat = make_model([helper.make_node("Relu", ["x"], ["y"])],
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])], {})
    assert synthetic_inputs(flat, n=2, kind="strokes")["x"].shape == (2, 16)


def test_inspect_reports_the_shape_it_would_measure_at():
    from dfmpc_onnx import inspect_model

    rep = inspect_model(strided_net(["N", 3, 12, "W"]), ConvertOptions(target_bits=4))
    assert rep.inputs["x"]["shape"] == [1, 3, 12, 48]
    # Nothing to measure, nothing resolved: the model is never run for it.
    rep = inspect_model(_reshape_net(["N", "L"], [-1, 37]), ConvertOptions(method="pairs",
                                                                          fidelity_samples=0))
    assert rep.inputs == {}


def _scaled_net(scale: float, bn_std: float | None = None):
    """strided_net whose first layer answers unit-variance inputs at ``scale`` x its usual spread
    (about 1.6), optionally read by a kept BatchNormalization whose running std is ``bn_std``."""
    model = strided_net(["N", 3, 16, 16])
    w0 = next(t for t in model.graph.initializer if t.name == "w0")
    w0.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(w0) * scale, "w0"))
    if bn_std is not None:
        conv = next(n for n in model.graph.node if n.name == "conv0")
        conv.output[0] = "c0_pre"
        model.graph.node.insert(1, helper.make_node(
            "BatchNormalization", ["c0_pre", "bn.g", "bn.b", "bn.mu", "bn.var"], ["c0"], name="bn0"))
        for name, value in (("bn.g", 1.0), ("bn.b", 0.0), ("bn.mu", 0.0), ("bn.var", bn_std ** 2)):
            model.graph.initializer.append(
                onnx.numpy_helper.from_array(np.full(8, value, np.float32), name))
    return model


def _brute_spread(model, value_range) -> float:
    """The first layer's median channel std on the same synthetic inputs, computed in NumPy."""
    x = synthetic_inputs(model, n=4, kind="smooth", value_range=value_range,
                         shapes={"x": (1, 3, 16, 16)})["x"].astype(np.float64)
    w = onnx.numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "w0"))
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.stack([xp[:, :, i:i + 16, j:j + 16] for i in range(3) for j in range(3)], axis=2)
    z = np.einsum("ncthw,oct->nohw", cols.reshape(4, 3, 9, 16, 16), w.reshape(8, 3, 9))
    return float(np.median(z.transpose(1, 0, 2, 3).reshape(8, -1).std(axis=1)))


def test_the_first_layer_response_keeps_a_normalised_model_and_finds_raw_pixels():
    from dfmpc_onnx.measure.input_spec import channel_spread, range_from_response

    shapes = {"x": (1, 3, 16, 16)}
    assert range_from_response(strided_net(["N", 3, 16, 16]), shapes) is None
    raw = _scaled_net(1 / 100)  # answers unit inputs at ~0.016: a model fed 0..255 pixels
    found = range_from_response(raw, shapes)
    assert found is not None and found.value_range == (0.0, 255.0), found
    assert "first layer's response" in found.reason
    # The spread it compares is the layer's real output spread (brute force, in NumPy).
    z_spread = _brute_spread(raw, None)
    assert 0.005 < z_spread < 0.05
    z = np.random.default_rng(0).standard_normal((4, 8, 5, 5)) * np.arange(1, 9)[None, :, None, None]
    assert channel_spread(z, None) == pytest.approx(np.median(z.transpose(1, 0, 2, 3).reshape(8, -1)
                                                               .std(axis=1)))
    # A MatMul's [batch, seq, features] output: the features are the channels.
    seq = np.random.default_rng(1).standard_normal((2, 7, 5)) * np.arange(1, 6)
    assert channel_spread(seq, None, -1) == pytest.approx(np.median(seq.reshape(-1, 5).std(axis=0)))
    # The conversion measures on the range it found, and says why.
    _, rep = convert(raw, ConvertOptions(target_bits=4))
    assert rep.inputs["x"]["range"].startswith("0..255 (inferred: the first layer's response")


def test_a_kept_batchnorm_gives_the_scale_real_inputs_reach():
    from dfmpc_onnx.measure.input_spec import range_from_response

    shapes = {"x": (1, 3, 16, 16)}
    # Unit-scale weights: the default fits unless the BN says real data spread the output 100x.
    assert range_from_response(_scaled_net(1.0, bn_std=1.6), shapes) is None
    found = range_from_response(_scaled_net(1.0, bn_std=160.0), shapes)
    assert found is not None and found.value_range == (0.0, 255.0), found
    assert "BatchNormalization" in found.reason


def test_a_scalar_input_is_generated_as_a_scalar():
    """A rank-0 input (silero's sample rate) resolves to shape () and gets one value, where it
    used to be refused as 'every dimension must be a positive integer, got ()'."""
    model = strided_net(["N", 3, 16, 16])
    model.graph.input.append(helper.make_tensor_value_info("sr", TensorProto.INT64, []))
    spec = resolve_shapes(model)
    assert spec.shapes["sr"] == ()
    feeds = synthetic_inputs(model, n=3, shapes=spec.shapes)
    assert feeds["sr"].shape == () and feeds["x"].shape == (3, 3, 16, 16)


def test_an_rnn_state_input_gets_a_batch_of_one_on_its_middle_axis():
    """ONNX's LSTM state layout [directions, batch, hidden] with the batch free (silero-vad's
    `state` 2x?x128): the middle axis is the batch, so 1; the sequence sizes tried before (128,
    64, ...) all fail against the input's batch of 1."""
    rng = np.random.default_rng(0)
    inits = {"W": rng.standard_normal((2, 12, 4)).astype(np.float32),
             "R": rng.standard_normal((2, 12, 3)).astype(np.float32)}
    nodes = [helper.make_node("LSTM", ["x", "W", "R", "", "", "h0"], ["y"], hidden_size=3,
                              direction="bidirectional", name="lstm")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 1, 4]),
                               helper.make_tensor_value_info("h0", TensorProto.FLOAT, [2, "B", 3])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 2, 1, 3])], inits)
    spec = resolve_shapes(model, check=ort_check(model))
    assert spec.shapes["h0"] == (2, 1, 3) and not spec.refused
    assert "RNN state" in spec.rules["h0"]
    # A fixed first axis of 1 is a batch of one: the free axis stays a sequence.
    seq = _reshape_net([1, "L", 128], [1, 64, 128])
    assert resolve_shapes(seq, check=ort_check(seq)).shapes["x"] == (1, 64, 128)


def _edge_map(bias: float) -> onnx.ModelProto:
    """x[N,1,32,32] -> Laplacian Conv -> Sigmoid(. - bias): a map above 0.5 only at sharp edges."""
    lap = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], np.float32).reshape(1, 1, 3, 3)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["e"], pads=[1, 1, 1, 1], name="edges"),
             helper.make_node("Sigmoid", ["e"], ["map"])]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 32, 32])],
                      [helper.make_tensor_value_info("map", TensorProto.FLOAT, ["N", 1, 32, 32])],
                      {"w": lap, "b": np.array([-bias], np.float32)})


def test_strokes_inputs_only_for_image_inputs():
    from dfmpc_onnx.measure.input_spec import strokes_inputs

    shapes = {"x": (1, 1, 32, 32)}
    feeds = strokes_inputs(_edge_map(0.0), shapes, (0.0, 1.0), 0.0, 1.0, seed=0)
    assert feeds["x"].shape == (8, 1, 32, 32) and 0 <= feeds["x"].min() <= feeds["x"].max() <= 1
    flat = make_model([helper.make_node("Relu", ["x"], ["y"])],
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])], {})
    assert strokes_inputs(flat, {"x": (1, 16)}, None, 0.0, 1.0, seed=0) is None


def test_auto_switches_to_strokes_where_smooth_noise_judges_nothing():
    shapes = {"x": (1, 1, 32, 32)}
    smooth = synthetic_inputs(_edge_map(0.0), n=8, kind="smooth", seed=0, shapes=shapes)["x"]
    edges = np.abs(4 * smooth[:, :, 1:-1, 1:-1] - smooth[:, :, :-2, 1:-1] - smooth[:, :, 2:, 1:-1]
                   - smooth[:, :, 1:-1, :-2] - smooth[:, :, 1:-1, 2:])
    edge_map = _edge_map(float(edges.max()) * 1.5)  # noise leaves it empty, strokes mark it
    _, report = convert(edge_map, ConvertOptions())  # --synthetic auto, the default
    assert any("measured on glyph-like strokes (--synthetic auto)" in n for n in report.notes)
    assert any("synthetic strokes inputs" in n for n in report.notes)
    assert "strokes" in report.fidelity["inputs"]
    # A kind the user names is kept, and the report suggests strokes.
    _, asked = convert(edge_map, ConvertOptions(synthetic="smooth"))
    assert any("--synthetic strokes may plan it better" in n for n in asked.notes)
    assert any("synthetic smooth inputs" in n for n in asked.notes)
    for quiet in (_edge_map(0.0), _edge_map(1e3)):  # responds to noise / to nothing: no switch
        _, r = convert(quiet, ConvertOptions())
        assert not any("strokes" in n for n in r.notes)
