"""The contract every ffrt graph meets, checked by each backend on the graph it loaded.

Backends describe their graph's input and outputs as :class:`Port` (ONNX Runtime's type
strings, e.g. ``tensor(uint8)``; dimensions as ints, or a name/None where dynamic), so every
backend refuses a graph that does not match its metadata with the same words.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from ..errors import ModelFileError
from ..meta import ModelMeta


class Port(NamedTuple):
    name: str
    type: str  # "tensor(uint8)", "tensor(float)", ...
    shape: list | None  # ints where fixed, a name or None where dynamic


def _dims(shape) -> list:
    return list(shape) if shape is not None else []


def check_contract(inputs: list[Port], outputs: list[Port], meta: ModelMeta, model_path: Path) -> tuple[str, str, str]:
    """Check the graph's input/outputs against the metadata; return their names.

    A mismatch means the metadata does not describe this graph (hand-edited, or a graph
    swapped under it): running it would give wrong maps without any error, so refuse.
    """
    spec = meta.input
    where = f"{model_path}"
    redo = "Re-export the model with ffexport."
    if len(inputs) != 1:
        raise ModelFileError(f"{where}: the graph has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); an ffrt model has exactly one, {spec.name!r}. {redo}")
    inp = inputs[0]
    if inp.name != spec.name:
        raise ModelFileError(f"{where}: the graph's input is named {inp.name!r} but the metadata says {spec.name!r}. {redo}")
    if inp.type != "tensor(uint8)":
        raise ModelFileError(
            f"{where}: input {inp.name!r} is {inp.type}, but ffrt models take uint8 NHWC images "
            f"(cast and normalization inside the graph). {redo}"
        )
    dims = _dims(inp.shape)
    expected = [spec.height, spec.width, 3]
    if len(dims) != 4:
        raise ModelFileError(f"{where}: input {inp.name!r} has shape {dims}; expected [N, {spec.height}, {spec.width}, 3] (NHWC). {redo}")
    if isinstance(dims[0], int):
        raise ModelFileError(
            f"{where}: input {inp.name!r} has a fixed batch size of {dims[0]}; ffrt models need a dynamic "
            f"batch dimension. {redo}"
        )
    for got, want, what in zip(dims[1:], expected, ("height", "width", "channels")):
        if isinstance(got, int) and got != want:
            raise ModelFileError(
                f"{where}: input {inp.name!r} has shape {dims} but the metadata says [N, {spec.height}, "
                f"{spec.width}, 3] ({what} {got} != {want}); metadata and graph do not belong together. {redo}"
            )

    by_name = {o.name: o for o in outputs}
    for key, rank in ((meta.outputs.anomaly_map, 4), (meta.outputs.score, 1)):
        out = by_name.get(key)
        if out is None:
            raise ModelFileError(f"{where}: the graph has no output {key!r} (it has: {', '.join(by_name)}). {redo}")
        if out.type != "tensor(float)":
            raise ModelFileError(f"{where}: output {key!r} is {out.type}; expected float32. {redo}")
        odims = _dims(out.shape)
        if len(odims) != rank:
            want = f"[N, 1, {spec.height}, {spec.width}]" if rank == 4 else "[N]"
            raise ModelFileError(f"{where}: output {key!r} has shape {odims}; expected {want}. {redo}")
        if rank == 4:
            for got, want in zip(odims[1:], (1, spec.height, spec.width)):
                if isinstance(got, int) and got != want:
                    raise ModelFileError(
                        f"{where}: output {key!r} has shape {odims}; expected [N, 1, {spec.height}, {spec.width}]. {redo}"
                    )
    return inp.name, meta.outputs.anomaly_map, meta.outputs.score
