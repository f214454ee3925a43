"""clipprompt — CLIP prompts as an engineered, measurable input.

A thin layer over the C core in ``clipprompt._C``: every heavy function lives there; this package re-exports it
and adds the pieces that are naturally Python (encoders' batching, prompt strategies, the pipeline, SD helpers, the
command line). See README.md and docs/.
"""
from __future__ import annotations

from typing import Any

from . import _C
from ._C import (
    ClipPromptError,
    ClipTokenizer,
    DependencyError,
    DeviceError,
    DeviceOutOfMemoryError,
    DimensionMismatchError,
    EmptyPromptError,
    FileAccessError,
    FlatIPIndex,
    IndexStateError,
    InvalidArgumentError,
    ModelFormatError,
    PromptCache,
    SentencePieceTokenizer,
    TokenizerError,
    WordPieceTokenizer,
    add_word,
    clip_clean,
    clip_clean_batch,
    get_num_threads,
    load_userdict,
    normalize,
    normalize_batch,
    segment,
    segment_batch,
    segment_join,
    set_num_threads,
)

__version__ = "0.1.0"


def build_info() -> dict[str, Any]:
    """What this build contains: compiler, BLAS, OpenMP, utf8proc, CUDA on/off, cuBLAS/cuDNN versions, threads, and
    the reduced-precision GEMM library with the CPU ISA it runs on (lowp_library, lowp_cpu_isa, lowp_bf16,
    lowp_int8)."""
    info = _C.build_info()
    if hasattr(_C, "lowp_info"):  # the bf16/int8 GEMM library and the ISA it dispatches to on this CPU
        info.update(_C.lowp_info())
    info["version"] = __version__
    return info


# Text encoders over the C models, then the prompt tools (Python over the parts above; they import this package).
from . import sd  # noqa: E402
from .encoders import ClipTextEncoder, MiniLMEncoder  # noqa: E402
from .expand import Expansion, PromptExpander  # noqa: E402
from .multilingual import E5Encoder, USEEncoder  # noqa: E402
from .pipeline import PromptPipeline  # noqa: E402
from .strategies import template_names, templates  # noqa: E402
from .words import keywords  # noqa: E402

__all__ = [
    "ClipPromptError",
    "ClipTextEncoder",
    "ClipTokenizer",
    "DependencyError",
    "DeviceError",
    "DeviceOutOfMemoryError",
    "DimensionMismatchError",
    "E5Encoder",
    "EmptyPromptError",
    "Expansion",
    "FileAccessError",
    "FlatIPIndex",
    "IndexStateError",
    "InvalidArgumentError",
    "MiniLMEncoder",
    "ModelFormatError",
    "PromptCache",
    "PromptExpander",
    "PromptPipeline",
    "SentencePieceTokenizer",
    "TokenizerError",
    "USEEncoder",
    "WordPieceTokenizer",
    "__version__",
    "add_word",
    "build_info",
    "clip_clean",
    "clip_clean_batch",
    "get_num_threads",
    "keywords",
    "load_userdict",
    "normalize",
    "normalize_batch",
    "sd",
    "segment",
    "segment_batch",
    "segment_join",
    "set_num_threads",
    "template_names",
    "templates",
]
