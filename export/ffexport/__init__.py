"""ffexport: a trained checkpoint -> checked, self-describing ONNX files (and engine, Triton repository).

    from ffexport import export, ExportRequest, ExportReport

    report = export(ExportRequest(ckpt="model.pt", out="line3", int8=True))
    report.status, [f.path for f in report.files]

The names are loaded on first use, so ``import ffexport.<module>`` stays as light as that
module (``python -m ffexport.tensorrt`` runs on a GPU host without PyTorch).
"""

from __future__ import annotations

import importlib

#: Public name -> the module that defines it.
_EXPORTS = {
    "export": "orchestrate",
    "ExportRequest": "request",
    "ExportReport": "report",
    "ExportStatus": "report",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ffexport' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
