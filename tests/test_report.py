"""The report table keeps layer names tellable apart, however long exporters make them."""

from dfmpc_onnx.report import LayerReport, Report


def test_long_names_keep_both_ends_and_reasons_stay_whole():
    long_a = "/encoder/layers.11/block/sub_block.0/attention/out_proj/MatMul_with_a_long_tail_A"
    long_b = long_a[:-1] + "B"
    rep = Report(layers=[
        LayerReport(long_a, "MatMul", "A", 2, 100, partner=long_b),
        LayerReport(long_b, "MatMul", "B", 8, 100, partner=long_a),
        LayerReport("fc", "Gemm", "float", None, 10, reason="weight is not a constant"),
    ])
    lines = rep.format().splitlines()
    a_row, b_row, fc_row = lines[1:4]
    assert a_row.split()[0] != b_row.split()[0]  # the differing tails survive
    assert a_row.split()[0].startswith("/encoder/layers.11") and a_row.split()[0].endswith("tail_A")
    assert all(len(row.split()[0]) <= 64 for row in (a_row, b_row))
    assert fc_row.endswith("weight is not a constant")
