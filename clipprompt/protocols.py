"""What the prompt tools need of an encoder, as typing Protocols (duck types: any object with these members works).

``ClipTextEncoder`` and ``MiniLMEncoder`` are ``TextEncoder``s; ``ClipTextEncoder`` is also a
``HiddenStateEncoder`` (what ``clipprompt.sd`` needs). Nothing here runs; it only names the contracts.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

__all__ = ["HiddenStateEncoder", "TextEncoder"]


class TextEncoder(Protocol):
    """Texts in, one float32 row per text out; ``fingerprint`` keys the PromptCache."""

    @property
    def fingerprint(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Any, normalize: bool = ..., batch_size: int = ...,
               progress: bool = ...) -> NDArray[np.float32]: ...


class HiddenStateEncoder(Protocol):
    """Per-token states of a CLIP text tower: ``hidden_states(ids_or_texts, layer) -> float32 [B, 77, width]``."""

    @property
    def fingerprint(self) -> str: ...

    @property
    def width(self) -> int: ...

    def hidden_states(self, texts_or_ids: Any, layer: int = ..., batch_size: int = ...,
                      progress: bool = ...) -> NDArray[np.float32]: ...
