"""Count calls of real methods: each patched method counts, then calls the original."""

from __future__ import annotations

from collections import Counter


def count_methods(monkeypatch, owner: type, names: tuple[str, ...], counts: Counter) -> Counter:
    """Patch ``owner.<name>`` for each name with a wrapper that adds 1 to ``counts[name]`` and
    calls the real method; returns ``counts``."""
    for name in names:
        real = getattr(owner, name)

        def counted(self, *a, _real=real, _name=name, **k):
            counts[_name] += 1
            return _real(self, *a, **k)

        monkeypatch.setattr(owner, name, counted)
    return counts
