"""The installed version of a distribution, for the records files and reports keep."""

from __future__ import annotations

import importlib.metadata


def package_version(dist: str) -> str | None:
    """``dist``'s installed version, or None when it is not installed."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
