"""The library entry points. The CLI is a thin layer over these."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from dataclasses import fields as dataclass_fields
from pathlib import Path

import onnx

from dfmpc_onnx.errors import OptionsError
from dfmpc_onnx.measure.synthetic import check_shape_names
from dfmpc_onnx.model.modelio import (
    TWO_GB,
    check_output,
    check_output_path,
    custom_nodes,
    inlined,
    load_model,
    make_work_folder,
    owned_tempdir,
    save_model_atomic,
    uses_external_data,
)
from dfmpc_onnx.model.opset import serialized_bytes
from dfmpc_onnx.model.weightstore import WeightStore
from dfmpc_onnx.model.weightstore import remove as remove_folder
from dfmpc_onnx.passes import Context, conversion_passes, pairing_passes, planning_passes, run_passes

from .options import ConvertOptions
from .report import Report

ModelLike = onnx.ModelProto | str | os.PathLike


def _load(model_or_path: ModelLike) -> onnx.ModelProto:
    if isinstance(model_or_path, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model_or_path)  # the caller's model is never modified
        return copy
    return load_model(model_or_path)


def convert(model_or_path: ModelLike, options: ConvertOptions | None = None, *,
            progress: Callable[[str], None] | None = None,
            check: bool = True) -> tuple[onnx.ModelProto, Report]:
    """Quantize a float model with DF-MPC. Returns the new model and the report.

    With ``check`` (default), the result must pass the full onnx.checker and load in ONNX Runtime
    (ConversionCheckError otherwise). Models over 2 GB are checked when saved (convert_file).
    Models with custom-domain operators are converted (their nodes are left alone) but only the
    checker can vouch for them: no runtime here loads them; the report says so.
    """
    options = options or ConvertOptions()
    start = time.perf_counter()
    model, report = _convert(_load(model_or_path), options, progress)
    if check and serialized_bytes(model) < TWO_GB:
        # The caller's model or file is unchanged: it tells a broken input from a broken output.
        check_output(model, runtime=not custom_nodes(model), source=model_or_path)
    report.seconds = time.perf_counter() - start
    return model, report


def _convert(model: onnx.ModelProto, options: ConvertOptions,
             progress: Callable[[str], None] | None,
             store: WeightStore | None = None) -> tuple[onnx.ModelProto, Report]:
    """Run the passes on ``model`` (in place) and note what the output check will skip."""
    ctx = Context(options, progress=progress, store=store)
    ctx.report.options = asdict(options)
    if options.synthetic == "distilled":
        ctx.source_model = onnx.ModelProto()
        ctx.source_model.CopyFrom(inlined(model))  # torch needs the values, not stubs
    custom = custom_nodes(model)
    check_shape_names(model, options.input_shapes)
    run_passes(conversion_passes(options), model, ctx)
    stamp_provenance(model, ctx.report)
    if custom:
        shown = ", ".join(custom[:3]) + (f" and {len(custom) - 3} more" if len(custom) > 3 else "")
        ctx.report.notes.append(
            f"custom operators {shown} were left untouched; the output passed the full "
            "onnx.checker but was not loaded in ONNX Runtime (register their library to run it)")
    return model, ctx.report


def stamp_provenance(model: onnx.ModelProto, report: Report) -> None:
    """Say in the output what made it: producer dfmpc-onnx and its version, and in metadata_props
    the original producer, the options and the plan in one line (no time: outputs stay
    byte-identical for the same input and options)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("dfmpc-onnx")
    except PackageNotFoundError:
        ours = "unknown"
    props = {p.key: p.value for p in model.metadata_props}
    source = f"{model.producer_name} {model.producer_version}".strip()
    if "dfmpc.source_producer" not in props:  # a re-conversion keeps the first producer
        props["dfmpc.source_producer"] = source
    bits: dict[str, int] = {}
    for layer in report.layers:
        key = "float" if layer.bits is None or layer.role == "float" else f"{layer.bits}-bit"
        bits[key] = bits.get(key, 0) + 1
    props["dfmpc.version"] = ours
    props["dfmpc.options"] = json.dumps(report.options, sort_keys=True, default=list)
    props["dfmpc.plan"] = (
        f"{report.stored_bits:.2f} stored bits per weight; layers: "
        + ", ".join(f"{n} {k}" for k, n in sorted(bits.items())) + f"; opset {report.opset_out}")
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "dfmpc-onnx"
    model.producer_version = ours


def convert_file(input_path: str | os.PathLike, output_path: str | os.PathLike,
                 options: ConvertOptions | None = None, *,
                 progress: Callable[[str], None] | None = None) -> Report:
    """Convert a file to a file, atomically; the output keeps external data when the input had
    it or is over 2 GB. Nothing is written unless the output passes the checks of ``convert``."""
    options = options or ConvertOptions()
    start = time.perf_counter()
    out = check_output_path(output_path, input_path)
    # The conversion's working folder, beside the output (where there is room for it): its weight
    # store holds the large weights instead of memory (dfmpc_onnx.model.weightstore).
    work = make_work_folder(out)
    store = WeightStore(work)
    try:
        model = load_model(input_path, store)
        external = uses_external_data_in_file(input_path) or serialized_bytes(model) >= TWO_GB
        model, report = _convert(model, options, progress, store)
        report.seconds = time.perf_counter() - start  # conversion time excludes writing
        external = external or serialized_bytes(model) >= TWO_GB
        save_model_atomic(model, out, external=external, runtime=not custom_nodes(model),
                          source=input_path)
    finally:
        store.close()
        remove_folder(work)
    return report


def quantize(model_input: str | os.PathLike, model_output: str | os.PathLike,
             options: ConvertOptions | None = None, *,
             progress: Callable[[str], None] | None = None, **option_values) -> Report:
    """File to file, as ONNX Runtime's ``quantize_dynamic(model_input, model_output, ...)`` is
    called: ``quantize("model.onnx", "model.q.onnx", target_bits=4)`` returns the report. The
    keyword options are ConvertOptions' fields (or pass ``options``, not both). Atomic, checked
    and with the guarantees of ``convert_file``, which it calls."""
    if options is not None and option_values:
        raise OptionsError("quantize(): give either options=ConvertOptions(...) or keyword "
                           "options, not both")
    if options is None:
        names = {f.name for f in dataclass_fields(ConvertOptions)}
        unknown = sorted(set(option_values) - names)
        if unknown:
            raise OptionsError(f"quantize(): unknown option(s) {', '.join(unknown)}; known: "
                               f"{', '.join(sorted(names))}")
        options = ConvertOptions(**option_values)
    return convert_file(model_input, model_output, options, progress=progress)


def uses_external_data_in_file(path: str | os.PathLike) -> bool:
    """Whether the file keeps tensors in external data (read without loading that data)."""
    with open(path, "rb") as fh:
        return uses_external_data(onnx.load_model(fh, load_external_data=False))


def inspect_model(model_or_path: ModelLike, options: ConvertOptions | None = None, *,
                  progress: Callable[[str], None] | None = None) -> Report:
    """Plan without writing: pairs, layers left alone and why, each layer's bits, grid and
    correction, and the ideal size, counted exactly as ``convert`` counts it (the layers are
    quantized in memory to know their scales). A file's large weights go to a weight store in a
    temporary folder (under ``TMPDIR``: put it on disk, not tmpfs, for a model larger than
    memory), as ``convert_file``'s do, so inspecting costs the memory converting does."""
    options = options or ConvertOptions()
    if isinstance(model_or_path, onnx.ModelProto):
        return _inspect(_load(model_or_path), options, progress, None)
    work = owned_tempdir("dfmpc-inspect-")
    store = WeightStore(work)
    try:
        return _inspect(load_model(model_or_path, store), options, progress, store)
    finally:
        store.close()
        remove_folder(work)


def _inspect(model: onnx.ModelProto, options: ConvertOptions,
             progress: Callable[[str], None] | None, store: WeightStore | None) -> Report:
    ctx = Context(options, progress=progress, store=store)
    ctx.report.options = asdict(options)
    if options.synthetic == "distilled":
        ctx.source_model = onnx.ModelProto()
        ctx.source_model.CopyFrom(inlined(model))
    check_shape_names(model, options.input_shapes)
    run_passes(planning_passes(options), model, ctx)
    if ctx.quantized:  # the opset convert will write, not the input's
        from dfmpc_onnx.passes.upgrade_opset import planned_opset

        ctx.report.opset_out = planned_opset(model, ctx)
    if options.integer_kernels:
        ctx.report.notes.append("--activations int8: activation ranges are measured when "
                                "converting; inspect plans the weights only")
    return ctx.report




@dataclass(frozen=True)
class PairCoverage:
    """How much of a model find-pairs pairs under one rule (benchmarks/pair_coverage.py)."""

    layers: int
    low_bit: int  # layers that are a pair's A
    pairs: int  # (A, B)
    weight_share: float  # weights of layers in a pair over those of all quantizable layers
    # every Conv/ConvTranspose/Gemm/MatMul in no pair -> find-pairs' reason (never empty)
    unpaired: dict[str, str] = field(default_factory=dict, compare=False)
    params_in_pairs: int = 0
    params_linear: int = 0


def pair_coverage(path: str | os.PathLike | onnx.ModelProto, pair_through: bool) -> PairCoverage:
    """The analysis passes up to find-pairs on ``path`` (nothing quantized: seconds) and what the
    pairs cover, with ``pair_through`` the rule."""
    model = onnx.load(str(path)) if not isinstance(path, onnx.ModelProto) else path
    ctx = Context(ConvertOptions(method="pairs", pair_through=pair_through))
    run_passes(pairing_passes(), model, ctx)
    paired = {p.a for p in ctx.pairs} | {p.b for p in ctx.pairs}
    total = sum(e.params for e in ctx.report.layers)
    inside = sum(e.params for e in ctx.report.layers if e.name in paired)
    unpaired = {e.name: e.reason for e in ctx.report.layers if e.name not in paired}
    return PairCoverage(len(ctx.layers), len({p.a for p in ctx.pairs}), len(ctx.pairs),
                        inside / total if total else 0.0, unpaired, inside, total)


__all__ = ["convert", "convert_file", "quantize", "inspect_model", "pair_coverage", "PairCoverage", "Path"]
