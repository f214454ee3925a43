"""Checks for arguments that size an output or a batch (k, top_k, batch_size, max_tokens, window, pad_to).

Every such argument goes through :func:`size_arg`: an int (``operator.index``; bool refused) within [lo, hi], else an
``InvalidArgumentError`` naming the argument. The C bindings check their own (csrc/py/py_limits.h: k,
context_length, max_length against what the data can fill and the memory the process may use).
"""
from __future__ import annotations

import operator

from . import _C

#: tokens per window / row: far above any text tower's context (CLIP 77, BERT 512)
MAX_SEQ = 65536


def size_arg(what: str, value: object, lo: int = 1, hi: int | None = None) -> int:
    """``value`` as an int in [lo, hi] (hi None: no upper bound), else InvalidArgumentError naming ``what``."""
    if isinstance(value, bool):
        raise _C.InvalidArgumentError(f"{what} must be an int, got bool")
    try:
        v = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise _C.InvalidArgumentError(f"{what} must be an int, got {type(value).__name__}") from None
    if v < lo or (hi is not None and v > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise _C.InvalidArgumentError(f"{what} must be {rng}, got {v}")
    return v
