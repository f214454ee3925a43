"""clipprompt — CLIP prompts as an engineered, measurable input.

A thin layer over the C core in ``clipprompt._C``: every heavy function lives there; this package re-exports it
and adds the pieces that are naturally Python (CLI, convenience wrappers). See README.md and ../shared/API.md.
"""
from __future__ import annotations

from . import _C
from ._C import (  # noqa: F401  (re-exports: the public surface)
    ClipPromptError,
    DependencyError,
    DeviceError,
    DeviceOutOfMemoryError,
    DimensionMismatchError,
    EmptyPromptError,
    FileAccessError,
    IndexStateError,
    InvalidArgumentError,
    ModelFormatError,
    TokenizerError,
    get_num_threads,
    set_num_threads,
)

__version__ = "0.1.0"


def build_info() -> dict:
    """What this build contains: compiler, BLAS, OpenMP, utf8proc, CUDA on/off, cuBLAS/cuDNN versions, threads, and
    the reduced-precision GEMM library with the CPU ISA it runs on (lowp_library, lowp_cpu_isa, lowp_bf16,
    lowp_int8)."""
    info = _C.build_info()
    if hasattr(_C, "lowp_info"):  # the bf16/int8 GEMM library and the ISA it dispatches to on this CPU
        info.update(_C.lowp_info())
    info["version"] = __version__
    return info


def _export(name: str) -> None:
    if hasattr(_C, name):
        globals()[name] = getattr(_C, name)


# Parts of the C core that later modules add (each present once its csrc/py/py_<part>.c is built).
for _name in ("normalize", "normalize_batch", "clip_clean", "clip_clean_batch", "segment", "segment_batch",
              "segment_join", "add_word", "load_userdict", "ClipTokenizer", "WordPieceTokenizer", "PromptCache",
              "FlatIPIndex"):
    _export(_name)
del _name

from .encoders import ClipTextEncoder, MiniLMEncoder  # noqa: E402,F401  (issue 4: text encoders over _C models)

# Prompt strategies, expansion, the pipeline and SD helpers: Python over the parts above (issue 6).
from . import sd  # noqa: E402,F401
from .expand import Expansion, PromptExpander  # noqa: E402,F401
from .pipeline import PromptPipeline  # noqa: E402,F401
from .strategies import keywords, template_names, templates  # noqa: E402,F401
