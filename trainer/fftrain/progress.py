"""Progress display lives in the torch-free core (:mod:`ffcore.progress`); this name stays for the trainer's callers."""

from ffcore.progress import StageLine, is_terminal, progress  # noqa: F401
