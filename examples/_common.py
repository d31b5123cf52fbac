"""Shared helpers for the reference-model generator scripts in ``examples/``.

Only the generator scripts (``examples/make_*.py``) import this module; it needs torch, which the
converter itself never imports.  Everything here exists so that every reference model is trained,
exported and verified the same way:

* ``seed_everything`` pins every RNG and turns on deterministic kernels, so reruns on the same
  machine reproduce the same weights (bit-exactness across CPUs / thread counts is not promised).
* ``train_classifier`` is one plain mini-batch loop (AdamW + one-cycle schedule, batch 128) - kept
  deliberately small because the generator machine is shared and has 2 cores.
* ``export_and_verify`` writes one ONNX file with the conventions the converter's examples and
  benchmarks rely on (input ``input``, output ``logits``, dynamic batch, float32 initializers) and
  checks them, plus that onnxruntime reproduces torch's logits.
"""

from __future__ import annotations

import os
import random
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

EXAMPLES_DIR = Path(__file__).resolve().parent
MODELS_DIR = EXAMPLES_DIR / "models"
DATA_DIR = EXAMPLES_DIR / "data"

OPSET = 17
BATCH_SIZE = 128
MAX_ONNX_BYTES = 2 * 1024 * 1024
MAX_ABS_DIFF = 1e-4


def seed_everything(seed: int, threads: int = 2) -> None:
    """Seed python/numpy/torch and force deterministic kernels.

    Called before every model so that each model's weights do not depend on which other models
    were built earlier in the same process (``--only`` gives the same file as a full run).
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def train_classifier(
    model: nn.Module,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    weight_decay: float = 5e-4,
    seed: int = 0,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    label_smoothing: float = 0.0,
    name: str = "model",
) -> nn.Module:
    """Train ``model`` with AdamW + OneCycleLR and cross-entropy; returns it in eval mode.

    One-cycle AdamW converges in a handful of epochs without tuning, which is what a short,
    CPU-only, shared-machine budget needs.  The shuffling generator is seeded separately so the
    batch order is reproducible.  ``augment`` (optional) is applied per batch on the fly.
    """
    gen = torch.Generator().manual_seed(seed)
    n = x_train.shape[0]
    steps_per_epoch = (n + BATCH_SIZE - 1) // BATCH_SIZE
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, epochs=epochs, steps_per_epoch=steps_per_epoch, pct_start=0.25
    )
    t0 = time.time()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        total_loss, correct = 0.0, 0
        for i in range(steps_per_epoch):
            idx = perm[i * BATCH_SIZE : (i + 1) * BATCH_SIZE]
            xb, yb = x_train[idx], y_train[idx]
            if augment is not None:
                xb = augment(xb, gen)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb, label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += float(loss.detach()) * idx.numel()
            correct += int((logits.argmax(1) == yb).sum())
        print(
            f"  [{name}] epoch {epoch + 1}/{epochs}  loss {total_loss / n:.4f}  "
            f"train acc {correct / n:.4f}  ({time.time() - t0:.0f}s)",
            flush=True,
        )
    return model.eval()


@torch.no_grad()
def torch_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy of an eval-mode torch model, batched to keep memory flat."""
    model.eval()
    preds = [model(x[i : i + 512]).argmax(1) for i in range(0, x.shape[0], 512)]
    return float((torch.cat(preds) == y).float().mean())


def ort_logits(path: Path, x: np.ndarray) -> np.ndarray:
    """Run an ONNX file through onnxruntime (CPU) in chunks of 512 and return the logits."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    outs = [sess.run(["logits"], {"input": x[i : i + 512]})[0] for i in range(0, len(x), 512)]
    return np.concatenate(outs, axis=0)


def ort_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of an ONNX file through onnxruntime - the number the README reports."""
    return float((ort_logits(path, x).argmax(1) == y).mean())


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    """Count node op types; printed so the graph's spelling of each layer is visible in logs."""
    return dict(sorted(Counter(n.op_type for n in model.graph.node).items()))


def materialise_identity_initializers(m: onnx.ModelProto) -> int:
    """Replace ``Identity(initializer)`` nodes by a copy of the initializer; returns the count.

    The TorchScript exporter de-duplicates initializers that are bit-identical and re-creates the
    duplicates with ``Identity`` nodes.  That really happens in trained ResNets: the bias of the
    last BN of a block and of its projection-shortcut BN receive identical gradients (both feed
    the same Add) from the same zero init, so they stay equal.  The brief for these reference
    files is "every weight is an initializer", so the copies are written back as initializers.
    """
    inits = {i.name: i for i in m.graph.initializer}
    keep, count = [], 0
    for node in m.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            m.graph.initializer.append(copy)
            count += 1
        else:
            keep.append(node)
    if count:
        del m.graph.node[:]
        m.graph.node.extend(keep)
        print(f"  materialised {count} Identity-of-initializer node(s) as initializers")
    return count


def _check_conventions(m: onnx.ModelProto, path: Path, keep_bn: bool | None) -> None:
    """Assert the interface the converter's examples and benchmarks rely on."""
    g = m.graph
    assert [i.name for i in g.input] == ["input"], [i.name for i in g.input]
    assert [o.name for o in g.output] == ["logits"], [o.name for o in g.output]
    for vi in (g.input[0], g.output[0]):
        dim0 = vi.type.tensor_type.shape.dim[0]
        assert dim0.dim_param and not dim0.HasField("dim_value"), f"{vi.name}: batch not dynamic"
        assert vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    for init in g.initializer:
        assert init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.INT64), init.name
    assert sum(i.data_type == onnx.TensorProto.FLOAT for i in g.initializer) > 0
    ops = op_histogram(m)
    if keep_bn is True:
        assert ops.get("BatchNormalization", 0) > 0, f"{path.name}: BN was folded: {ops}"
        for n in g.node:
            if n.op_type == "BatchNormalization":
                for a in n.attribute:
                    if a.name == "training_mode":
                        assert a.i == 0, f"{path.name}: BN exported in training mode"
    if keep_bn is False:
        assert "BatchNormalization" not in ops, f"{path.name}: BN not folded: {ops}"
    if "Identity" in ops:
        warnings.warn(f"{path.name}: graph contains Identity nodes: {ops}", stacklevel=2)
    size = path.stat().st_size
    assert size < MAX_ONNX_BYTES, f"{path.name} is {size} bytes"


def export_and_verify(
    model: nn.Module,
    x_check: torch.Tensor,
    path: Path,
    *,
    keep_bn: bool | None,
) -> onnx.ModelProto:
    """Export ``model`` (eval mode) with the TorchScript exporter and verify the file.

    ``keep_bn``: ``False`` -> default eval export, BatchNorm folded into the preceding Conv by the
    exporter's constant folding; ``True`` -> ``TrainingMode.PRESERVE`` on an eval-mode model,
    which skips the Conv+BN fusion, so ``BatchNormalization`` nodes (inference form, running
    stats as initializers) stay in the graph; ``None`` -> network has no BN, plain export.
    The dynamo exporter is not used: the TorchScript one gives a flat graph with stable
    ``input``/``logits`` names and no function-local nodes, which is what the converter targets.
    """
    model = model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, torch.onnx.TrainingMode] = {}
    if keep_bn:
        kwargs["training"] = torch.onnx.TrainingMode.PRESERVE
    with warnings.catch_warnings():
        # Deprecation notice for the TorchScript exporter, and the constant-folding advice that
        # only concerns models exported while in train mode (ours are in eval mode).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x_check[:2],),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
            **kwargs,
        )
    m = onnx.load(str(path))
    if materialise_identity_initializers(m):
        onnx.save(m, str(path))
    onnx.checker.check_model(m, full_check=True)
    _check_conventions(m, path, keep_bn)

    with torch.no_grad():
        ref = model(x_check).numpy()
    got = ort_logits(path, x_check.numpy())
    diff = float(np.abs(ref - got).max())
    assert diff < MAX_ABS_DIFF, f"{path.name}: onnxruntime vs torch max abs diff {diff:.2e}"
    # The batch dimension must really be dynamic: run batch 1 and an odd batch as well.
    for b in (1, 7):
        got_b = ort_logits(path, x_check[:b].numpy())
        assert got_b.shape == (b, ref.shape[1])
        assert float(np.abs(ref[:b] - got_b).max()) < MAX_ABS_DIFF
    print(
        f"  wrote {path}  {path.stat().st_size / 1024:.0f} KiB  "
        f"max|ort-torch| {diff:.1e}  ops {op_histogram(m)}",
        flush=True,
    )
    return m


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters (printed next to each model for the README)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class BasicBlock(nn.Module):
    """ResNet basic block: Conv3x3-BN-ReLU-Conv3x3-BN, residual Add, ReLU.

    The shortcut is identity when shape is unchanged, otherwise a strided 1x1 Conv + BN (option B
    of the ResNet paper) - so the exported graph has both plain and projected residual Adds.
    """

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet: 3x3 stem, three stages (stride 1/2/2), global average pool, Linear.

    ``blocks_per_stage=3`` with widths 16/32/64 is ResNet-20 (6n+2 layers, n=3).
    """

    def __init__(
        self,
        num_classes: int,
        blocks_per_stage: int = 3,
        widths: tuple[int, int, int] = (16, 32, 64),
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        )
        layers: list[nn.Module] = []
        cin = widths[0]
        for stage, width in enumerate(widths):
            for b in range(blocks_per_stage):
                stride = 2 if stage > 0 and b == 0 else 1
                layers.append(BasicBlock(cin, width, stride))
                cin = width
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))
