"""The metrics live in the torch-free core (:mod:`ffcore.metrics`); this name stays for the trainer's callers."""

from ffcore.metrics import *  # noqa: F401,F403
from ffcore.metrics import __all__  # noqa: F401
