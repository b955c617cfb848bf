"""What one workload may ask for, checked while it is parsed so that nothing past validation can
exhaust memory, disk or time: counts, layer sizes, the bytes seeding would write, trace files,
and ``{i%N}`` placeholders.

The bounds sit far above what a laptop or a small cluster of runners can simulate (issue 13's
target is 10,000 nodes per process), and far below what would take a machine down.
"""

from __future__ import annotations

import re
from typing import Final

MAX_IMAGE_COUNT: Final = 10_000
"""Repositories one ``images`` entry may expand to."""
MAX_LAYERS: Final = 1_000
"""Layers in one ``layers`` group (upstream registries and runtimes handle ~128 per image)."""
MAX_LAYER_BYTES: Final = 16 * 1024**3
"""Largest synthetic layer (16 GiB); log-normal sizes without ``max`` are clamped to it."""
MAX_SEED_BYTES: Final = 1024**4
"""Most bytes seeding may write (1 TiB), counting every layer at its largest."""
MAX_NODES: Final = 100_000
MAX_PODS: Final = 1_000_000
MAX_TRACE_BYTES: Final = 16 * 1024 * 1024
MAX_MODULUS: Final = 1_000_000_000

INDEX_PLACEHOLDER: Final = re.compile(r"\{i(?:%(\d+))?\}")
"""``{i}`` (the pod's index) or ``{i%N}`` (the index modulo N) in a pod template's image."""


def placeholder_problem(image: str) -> str | None:
    """Why ``image``'s ``{i%N}`` placeholders cannot be expanded, or None when they can."""
    for match in INDEX_PLACEHOLDER.finditer(image):
        modulus = match.group(1)
        if modulus is not None and not 1 <= int(modulus) <= MAX_MODULUS:
            return f"{match.group(0)}: N must be between 1 and {MAX_MODULUS:,}"
    leftover = INDEX_PLACEHOLDER.sub("", image)
    if "{" in leftover or "}" in leftover:
        return "the only placeholders are {i} and {i%N}"
    return None


def human(size: int) -> str:
    """Bytes in binary units, as workload files write them (``16GiB``)."""
    for unit, scale in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:g}{unit}"
    return f"{size}B"
