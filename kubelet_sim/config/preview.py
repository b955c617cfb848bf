"""Any value rendered for a message, in bounded space and time.

Kept out of :mod:`kubelet_sim.config.yamlsafe` (which re-exports it): a module that quotes values
in its errors, as :mod:`kubelet_sim.config.kubelet` does, then loads neither PyYAML nor the
hardened loader until it reads a file (``kubelet-sim pull`` without ``--config`` reads none).
"""

from __future__ import annotations

import reprlib
from typing import Final

__all__ = ["preview"]


class _Preview(reprlib.Repr):
    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxtuple = self.maxlist = self.maxset = self.maxfrozenset = self.maxdeque = 4
        self.maxdict = 4
        self.maxstring = 60
        self.maxlong = 40
        self.maxother = 60

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:  # repr() of a 4300-digit integer raises; never build it
            return f"<integer of {x.bit_length()} bits>"
        return super().repr_int(x, level)


_PREVIEW: Final = _Preview()
_PREVIEW_LIMIT: Final = 200


def preview(value: object) -> str:
    """``repr(value)`` for a message, in bounded space and time: long strings, large collections
    (an alias bomb's expansion) and huge integers are cut short. Never for a Secret's value."""
    text = _PREVIEW.repr(value)
    return text if len(text) <= _PREVIEW_LIMIT else text[: _PREVIEW_LIMIT - 3] + "..."
