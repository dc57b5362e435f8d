"""The metadata (``ffrt.meta.ModelMeta``) inside ONNX files: read it without loading the
weights, put it into an in-memory model, replace it in a file atomically."""

from __future__ import annotations

import os
from pathlib import Path

from ffcore.files import atomic_write_bytes

from .errors import ModelFileError
from .meta import META_KEY, ModelMeta


def read_onnx_meta(path: str | os.PathLike) -> ModelMeta:
    """Read ``ModelMeta`` from an ONNX file without loading its weights."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file.")
    if path.stat().st_size == 0:  # parses as an empty ONNX model, which would read as "no metadata"
        raise ModelFileError(f"{path}: the file is empty (0 bytes): the export or copy did not complete. Copy or export it again.")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and friends for non-ONNX files
        raise ModelFileError(
            f"{path}: not a readable ONNX file ({type(e).__name__}). Export a model with ffexport."
        ) from e
    return meta_from_proto(proto, where=str(path))


def meta_from_proto(proto, where: str = "model") -> ModelMeta:
    props = {p.key: p.value for p in proto.metadata_props}
    if META_KEY not in props:
        raise ModelFileError(
            f"{where}: not an ffrt model (no '{META_KEY}' metadata). "
            "Export it with: ffexport --ckpt model.pt --out DIR"
        )
    return ModelMeta.from_json(props[META_KEY], where=where)


def set_proto_meta(proto, meta: ModelMeta) -> None:
    """Put ``meta`` into an in-memory ONNX ModelProto, replacing any earlier copy."""
    kept = [p for p in proto.metadata_props if p.key != META_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    entry = proto.metadata_props.add()
    entry.key = META_KEY
    entry.value = meta.to_json()


def write_onnx_meta(path: str | os.PathLike, meta: ModelMeta) -> None:
    """Replace the metadata of an existing single-file ONNX model, atomically."""
    import onnx

    path = Path(path)
    proto = onnx.load(str(path))
    set_proto_meta(proto, meta)
    atomic_write_bytes(path, proto.SerializeToString())
