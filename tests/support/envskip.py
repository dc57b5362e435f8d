"""Skip, or fail under CI: what a test does when the environment it needs cannot be made.

Locally, a test whose tool or package cannot be installed (no network, no compiler) is
skipped with the reason. In CI (``CI=true``, as GitHub Actions, GitLab CI and most runners
set it), the same failure fails the test: otherwise ``make test`` passes with the Triton,
TensorRT-bindings, CUDA-host and packaging tests silently gone. A missing GPU is not an
environment failure and stays a skip (tests/conftest.py marks those).
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def unavailable(reason: str) -> NoReturn:
    """Skip the test with ``reason``, or under CI=true fail it."""
    if in_ci():
        pytest.fail(f"{reason} [CI=true: a test environment that cannot be set up fails the run; "
                    "unset CI to skip such tests locally]", pytrace=False)
    pytest.skip(reason)
