"""What ``ffrt serve`` refuses in an HTTP inference request before Triton reads it.

Triton's HTTP frontend allocates each input tensor at the size its JSON header *declares*
before it reads the tensor's data: a 90-byte request declaring ``[1, 100000, 100000, 3]``
makes it allocate 30 GB and abort (``std::bad_alloc``), and ``[1, 20000, 20000, 3]`` costs
1.2 GB for three bytes sent. Triton has no option that bounds this (its gRPC frontend checks
the declared size against the bytes received). So :mod:`ffrt.triton.http_guard` reads each
infer request's JSON header and asks :func:`infer_request_problem` first:

- every input's shape must be a list of non-negative integers;
- its declared size must fit the largest tensor a valid request can need: ``max_batch``
  images at the server's ``max_pixels`` limit, three bytes a pixel (``RequestBounds``);
- ffrt_detector's raw ``image`` input is refused as the Detector would refuse it
  (:meth:`ffrt.preprocess.ImageLimits.problem`: the same message);
- data written as JSON numbers needs at least one character an element, so an input that
  declares more elements than its JSON header has characters cannot be valid.

The header must be JSON this module reads as Triton does: one that Python's parser refuses
(invalid UTF-8, which Triton's RapidJSON does not check) or with a key twice (Python keeps the
last, RapidJSON finds the first: ``{"inputs": [hostile], "inputs": []}``) is refused whole.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from ..errors import InvalidImageError
from ..preprocess import ImageLimits
from . import protocol

#: Bytes per element of each Triton data type; a BYTES element is at least its 4-byte length.
DATATYPE_BYTES = {"BOOL": 1, "UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "BF16": 2, "UINT32": 4,
                  "INT32": 4, "FP32": 4, "UINT64": 8, "INT64": 8, "FP64": 8, "BYTES": 4}
#: Triton's HTTP infer endpoint, /v2/models/NAME[/versions/V]/infer, anywhere in a request
#: target: Triton also answers the absolute form (``http://host/v2/...``, any scheme).
INFER_PATH = re.compile(r"/v2/models/(?P<model>[^/?#]+)(?:/versions/[^/?#]*)?/infer(?:[?#]|$)")
#: A JSON request body (or the JSON header of a binary one) larger than this is refused: Triton
#: parses JSON into a document of many times its size, and a raw image belongs in binary form
#: (tritonclient's default) or as encoded bytes.
MAX_JSON_BYTES = 64 << 20


@dataclass(frozen=True)
class RequestBounds:
    """What a valid request to this server can hold."""

    limits: ImageLimits
    max_batch: int

    @property
    def max_tensor_bytes(self) -> int | None:
        """The largest input tensor a valid request needs: a full batch of raw 3-channel uint8
        images at the pixel limit (None: no pixel limit, so no bound)."""
        if self.limits.max_pixels is None:
            return None
        return self.max_batch * self.limits.max_pixels * 3


def infer_path_model(target: str) -> str | None:
    """The model an HTTP request target infers with; "" for a target that mentions infer but
    names no model readably (checked without the per-model rules); None when it cannot reach
    Triton's infer handler. Liberal on purpose: a form Triton accepts and this reads as no
    infer request would pass unchecked."""
    if "infer" not in target.lower():
        return None
    match = INFER_PATH.search(target)
    return match.group("model") if match else ""


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    for key in keys:
        if keys.count(key) > 1:
            raise _DuplicateKey(key)
    return dict(pairs)


def infer_request_problem(model: str, header: bytes, bounds: RequestBounds) -> str | None:
    """Why this infer request's JSON header must not reach Triton, or None to forward it.

    JSON without a list of inputs is forwarded: Triton refuses it itself, without allocating
    by a declared shape."""
    if len(header) > MAX_JSON_BYTES:
        return (f"the request's JSON is {len(header) / 1e6:.0f} MB, above this server's {MAX_JSON_BYTES >> 20} MB; "
                "send tensors in binary form (tritonclient's default) or the image as encoded bytes.")
    try:
        request = json.loads(header, object_pairs_hook=_unique_keys)
    except _DuplicateKey as e:
        return f"the request's JSON has the key {str(e)[:80]!r} more than once in one object."
    except ValueError as e:
        return f"the request's JSON header cannot be read ({str(e)[:120]}); send UTF-8 JSON."
    inputs = request.get("inputs") if isinstance(request, dict) else None
    if not isinstance(inputs, list):
        return None
    for tensor in inputs:
        if not isinstance(tensor, dict):
            continue
        problem = _input_problem(model, tensor, len(header), bounds)
        if problem is not None:
            return problem
    return None


def _input_problem(model: str, tensor: dict, header_bytes: int, bounds: RequestBounds) -> str | None:
    name = str(tensor.get("name"))[:80]
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        return f"input {name!r}: shape must be a list of non-negative integers, not {str(shape)[:80]}."
    elements = math.prod(shape)
    declared = elements * DATATYPE_BYTES.get(str(tensor.get("datatype")), 8)
    if model == protocol.DETECTOR_MODEL and name == protocol.INPUT_IMAGE and len(shape) == 4 and elements:
        problem = bounds.limits.problem(shape[1], shape[2])
        if problem is not None:
            return protocol.error_message(InvalidImageError(problem))
    most = bounds.max_tensor_bytes
    if most is not None and declared > most:
        return (f"input {name!r} declares shape {shape} ({declared / 1e6:.1f} MB), more than any valid request holds "
                f"({bounds.max_batch} images of at most max_pixels={bounds.limits.max_pixels}: {most / 1e6:.1f} MB). "
                "Send smaller images, or start ffrt serve with a larger --max-pixels.")
    if "data" in tensor and elements > header_bytes:
        return (f"input {name!r} declares shape {shape} ({elements} elements) but the request's JSON has only "
                f"{header_bytes} characters: its data cannot fill that shape.")
    return None
