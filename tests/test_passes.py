"""Passes declare what they need; one pass runs alone on a hand-built context."""

import pytest
from tinymodels import conv_net

from dfmpc_onnx import ConvertOptions
from dfmpc_onnx.passes import Context, Pair, PreconditionError, run_passes
from dfmpc_onnx.passes.plan_bits import PlanBits
from dfmpc_onnx.passes.quantize_compensate import QuantizeAndCompensate
from dfmpc_onnx.report import LayerReport


def test_a_pass_without_its_facts_names_what_is_missing():
    ctx = Context(ConvertOptions())
    with pytest.raises(PreconditionError, match="quantize-and-compensate.*needs layers, pairs, plan"):
        run_passes([QuantizeAndCompensate()], conv_net(), ctx)


def test_plan_bits_alone_on_a_hand_built_context():
    ctx = Context(ConvertOptions(low_bits=3, method="paper",
                                 plan={"fc": {"bits": 4, "quantizer": "block32"}}))
    ctx.layers = ["conv0", "conv1", "conv2", "fc"]
    ctx.pairs = [Pair("conv1", "conv2", None)]
    ctx.report.layers = [LayerReport(n, "Conv") for n in ctx.layers]
    ctx.facts |= {"layers", "pairs"}
    run_passes([PlanBits()], conv_net(), ctx)
    plan = ctx.plan
    assert (plan["conv1"].bits, plan["conv1"].correction) == (3, "paper")  # c acts on A
    assert (plan["conv2"].bits, plan["conv2"].correction) == (8, "none")
    assert plan["conv0"].quantizer == "paper"
    assert (plan["fc"].bits, plan["fc"].quantizer) == (4, "block32")
    assert "plan" in ctx.facts
