"""Distilled inputs (ZeroQ): noise optimised until every BatchNormalization layer sees batch
statistics equal to its running statistics (issue 9, part 1).

A model that keeps BN carries a summary of the activations its training data produced: the running
mean and variance of each BN input. Inputs that reproduce those statistics at every BN layer look,
to the network, more like real data than plain noise does (ZeroQ, Cai et al. 2020; the generators
of GDFQ and DFQF minimise the same loss). The loss needs gradients through the whole model, so the
model is converted with onnx2torch and optimised with torch's autograd and Adam: an optional extra
(``pip install dfmpc-onnx[synth]``), imported only here and only when asked for. The default
conversion path never imports torch.

Loss, summed over BN layers: ``||mean_b - mu||_2 + ||sqrt(var_b + eps) - sqrt(var + eps)||_2``, with
``mean_b``/``var_b`` the per-channel statistics of the current batch at that layer's input.
Whether these inputs rank layer sensitivity closer to real data than noise does is measured by
``benchmarks/sensitivity_truth.py``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from dfmpc_onnx.errors import OptionsError
from dfmpc_onnx.measure.synthetic import synthetic_inputs


def distilled_inputs(model: onnx.ModelProto, n: int = 32, steps: int = 200, lr: float = 0.2,
                     seed: int = 0, threads: int = 1,
                     shapes: Mapping[str, tuple[int, ...]] | None = None) -> dict[str, np.ndarray]:
    """``n`` inputs, starting from seeded Gaussian noise, after ``steps`` Adam steps on the BN loss.

    One torch thread by default: on the shared 2-core machine two threads cost 2.6x the CPU time
    for the same steps (measured on the digits ResNet-20, n=32).

    Integer inputs stay the 0/1 values of ``synthetic_inputs``; float inputs are optimised. Raises
    OptionsError when torch/onnx2torch are missing or the model has no BatchNormalization.
    """
    return distill(model, n, steps, lr, seed, threads, shapes)[0]


def distill(model: onnx.ModelProto, n: int = 32, steps: int = 200, lr: float = 0.2, seed: int = 0,
            threads: int = 1, shapes: Mapping[str, tuple[int, ...]] | None = None
            ) -> tuple[dict[str, np.ndarray], list[float]]:
    """``distilled_inputs`` and the BN loss before each step (to see that it converged)."""
    try:
        import torch
        from onnx2torch import convert
    except ImportError as exc:
        raise OptionsError("distilled inputs need torch and onnx2torch: pip install 'dfmpc-onnx[synth]' "
                           f"({exc})") from exc
    if not any(nd.op_type == "BatchNormalization" for nd in model.graph.node):
        raise OptionsError("distilled inputs need BatchNormalization layers (their running statistics "
                           "are the target); this model has none: use --synthetic gaussian/uniform/smooth")
    start = synthetic_inputs(model, n=n, kind="gaussian", seed=seed, shapes=shapes)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    net = convert(model).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    targets: list[tuple[object, object, float]] = []  # (mean, std) per BN call, refreshed each step
    batch: list[object] = []

    def capture(module, args):
        x = args[0]
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            mean, var = module.running_mean, module.running_var
        else:  # onnx2torch's OnnxBatchNorm: statistics arrive as inputs
            mean, var = args[3], args[4]
        eps = float(getattr(module, "eps", getattr(module, "epsilon", 1e-5)))
        batch.append(x)
        targets.append((mean, var, eps))

    hooks = [m.register_forward_pre_hook(capture) for m in net.modules()
             if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) or type(m).__name__ == "OnnxBatchNorm"]
    names = [name for name in start]
    tensors = {name: torch.tensor(value) for name, value in start.items()}
    free = [t for t in tensors.values() if t.is_floating_point()]
    for t in free:
        t.requires_grad_(True)
    optimiser = torch.optim.Adam(free, lr=lr)
    losses: list[float] = []
    try:
        for _ in range(steps):
            batch.clear()
            targets.clear()
            optimiser.zero_grad()
            net(*[tensors[name] for name in names])
            loss = 0.0
            for x, (mu, var, eps) in zip(batch, targets, strict=True):
                dims = [d for d in range(x.dim()) if d != 1]
                m_b = x.mean(dim=dims)
                v_b = x.var(dim=dims, unbiased=False)
                loss = loss + torch.linalg.vector_norm(m_b - mu) + torch.linalg.vector_norm(
                    torch.sqrt(v_b + eps) - torch.sqrt(var + eps))
            losses.append(float(loss.detach()))
            loss.backward()
            optimiser.step()
    finally:
        for h in hooks:
            h.remove()
    return {name: tensors[name].detach().numpy().astype(start[name].dtype) for name in names}, losses
