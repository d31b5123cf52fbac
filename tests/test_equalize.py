"""--equalize under the default method: equalization runs right after find-pairs, before anything
is measured or the automatic plan drops the pairs, so it acts and the report counts it; a
pipeline that puts it after choose-plan is refused."""

import numpy as np
import pytest
from onnx import numpy_helper
from test_pair_groups import branch_net

from dfmpc_onnx import ConvertOptions, convert
from dfmpc_onnx.passes import Context, PreconditionError, analysis_passes, run_passes
from dfmpc_onnx.passes.equalize import EqualizePairs


def _note(report) -> str:
    return next(n for n in report.notes if n.startswith("equalize: equalized"))


def test_equalize_works_under_the_default_method():
    options = ConvertOptions(equalize=True, fidelity_samples=4)
    assert options.method == "auto"
    ctx = Context(options)
    model = branch_net()
    run_passes(analysis_passes(options), model, ctx)
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    plain = {t.name: numpy_helper.to_array(t) for t in branch_net().graph.initializer}
    assert not np.allclose(weights["conv1.weight"], plain["conv1.weight"])  # it acted
    _, report = convert(branch_net(), options)
    note = _note(report)
    n, total = (int(w) for w in note.removeprefix("equalize: equalized ").split()[::2][:2])
    assert 1 <= n <= total, note


def test_equalize_after_choose_plan_is_a_precondition_error():
    ctx = Context(ConvertOptions(method="pairs", fidelity_samples=0))
    with pytest.raises(PreconditionError, match="equalize-pairs.*must run before.*chosen"):
        run_passes(analysis_passes() + [EqualizePairs()], branch_net(), ctx)
