"""Re-export: the header reader lives in ffcore (``ffcore.imageheader``), where the
trainer's and the runtime's image reading both use it."""

from ffcore.imageheader import image_size  # noqa: F401

__all__ = ["image_size"]
