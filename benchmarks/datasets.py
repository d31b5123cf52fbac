"""Held-out test sets of the example models, as (inputs, labels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_test_set(model_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The npz named by the model's task prefix (digits_..., glyphs_...): its normalised
    ``input`` and its ``label``, the arrays ``dfmpc-onnx validate --inputs`` reads too."""
    task = Path(model_path).name.split("_")[0]
    data = np.load(EXAMPLES / "data" / f"{task}_test.npz")
    return data["input"].astype(np.float32), data["label"]
