"""Stable Diffusion conditioning: the text embeddings diffusers computes, from the same files, without torch.

``encode_prompt`` gives what ``StableDiffusionPipeline.encode_prompt`` / ``StableDiffusionXLPipeline.encode_prompt``
(diffusers 0.42) give, as NumPy arrays, for a pipeline directory written by ``save_pretrained`` (or encoder objects):

- SD 1.x / 2.x: the text tower's ``last_hidden_state`` [B, 77, W]; with ``clip_skip=k`` the output of layer
  ``-(k+1)`` through the final LayerNorm. The negative prompt (None -> "") is encoded the same way without clip skip,
  exactly as diffusers does.
- SDXL: CLIP ViT-L's and OpenCLIP bigG's ``hidden_states[-2]`` (no final LayerNorm; ``clip_skip=k`` ->
  ``hidden_states[-(k+2)]``) concatenated to [B, 77, 2048], and bigG's projected pooled output [B, 1280]. A negative
  of None gives zeros when the pipeline's ``force_zeros_for_empty_prompt`` is set (SDXL base), like diffusers.
- Token ids are the tokenizer's own: SOT, <=75 ids, EOT, then the tokenizer's pad token up to 77 — ``<|endoftext|>``
  (49407) for SD 1.x and SDXL's first tokenizer, ``!`` (0) for SD 2.x and SDXL's second, read from the saved
  tokenizer config.

Beyond diffusers: ``weighting="a1111"`` / ``"compel"`` read weighted prompt syntax (clipprompt.weighting),
``long_prompts="chunk"`` encodes prompts over 75 tokens as several 77-token windows concatenated along the sequence
(split after punctuation or at word ends), and ``cache=`` keeps each prompt's states in a PromptCache.

``CrossAttentionKV`` is the second-level cache: the K and V of every UNet cross-attention layer (``attn2.to_k`` /
``attn2.to_v``) for given prompt embeddings, computed once per prompt instead of at every denoising step.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import re
from collections.abc import Sequence
from typing import Any, NoReturn

import numpy as np

from . import _C
from . import weighting as _weighting
from ._limits import MAX_SEQ, size_arg
from .encoders import ClipTextEncoder

__all__ = [
    "EOT",
    "FAMILIES",
    "NEGATIVE_PRESETS",
    "SOT",
    "CrossAttentionKV",
    "PromptEmbeds",
    "SDEncoders",
    "SDTokenizer",
    "chunk_token_ids",
    "encode_prompt",
    "load_encoders",
    "negative_prompt",
]

SOT, EOT = 49406, 49407
CONTEXT = 77
WINDOW = CONTEXT - 2
FAMILIES = ("sd15", "sd2", "sdxl")
# The pad token each family's tokenizer(s) use in the published checkpoints (used for encoder objects given
# without a tokenizer directory).
_FAMILY_PAD = {"sd15": (EOT,), "sd2": (0,), "sdxl": (EOT, 0)}

_PUNCT_TOKENS = {",", ".", ";", ":", "!", "?", "，", "。", "、", "；", "：", "！", "？"}
# Han, kana, hangul and the CJK symbol blocks: scripts written without spaces between words
_CJK_RUN = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]+")


def _err(cls: type[Exception], msg: str) -> NoReturn:
    raise cls(msg)


# -- tokenizers ----------------------------------------------------------------------------------------------------
@functools.cache
def _bundled_vocab() -> list[str]:
    """CLIP's vocabulary in id order, derived from the bundled merges the way CLIP builds it."""
    import gzip

    path = os.path.join(os.path.dirname(__file__), "data", "bpe_simple_vocab_16e6.txt.gz")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        merges = f.read().split("\n")[1:49152 - 256 - 2 + 1]
    return _vocab_from_merges(merges)


def _byte_chars() -> list[str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def _vocab_from_merges(merges: list[str]) -> list[str]:
    chars = _byte_chars()
    return chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges] + \
        ["<|startoftext|>", "<|endoftext|>"]


class SDTokenizer:
    """A CLIP tokenizer with a Stable Diffusion tokenizer's conventions: SOT/EOT ids, the pad id, 77 positions.

    ``SDTokenizer.from_pretrained(dir)`` reads a saved ``tokenizer/`` directory (vocab.json + merges.txt, or
    tokenizer.json; tokenizer_config.json / special_tokens_map.json for the pad token and model_max_length). The
    vocabulary must be CLIP's (checked id for id); tokenization runs in clipprompt's C BPE.
    """

    def __init__(self, pad_id: int = EOT, *, context: int = CONTEXT, bpe: Any = None, vocab: list[str] | None = None):
        self.bpe = bpe if bpe is not None else _C.ClipTokenizer()
        self.vocab = vocab if vocab is not None else _bundled_vocab()
        self.pad_id = int(pad_id)
        self.context = int(context)
        self.bos_id, self.eos_id = SOT, EOT
        if not 0 <= self.pad_id < len(self.vocab):
            _err(_C.ModelFormatError, f"pad id {self.pad_id} is outside the vocabulary ({len(self.vocab)} ids)")
        if not 3 <= self.context <= 4096:
            _err(_C.ModelFormatError, f"model_max_length {self.context} is not a usable CLIP context")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str]) -> SDTokenizer:
        d = os.fspath(path)
        cfg: dict[str, Any] = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the latter wins
            p = os.path.join(d, name)
            if os.path.exists(p):
                try:
                    with open(p, encoding="utf-8") as f:
                        cfg.update(json.load(f))
                except (OSError, ValueError) as e:
                    _err(_C.ModelFormatError, f"{p}: {e}")
        vocab_map, merges = cls._read_vocab(d)
        bundled = _bundled_vocab()
        derived = _vocab_from_merges(merges)
        if len(vocab_map) != len(derived) or any(vocab_map.get(tok) != i for i, tok in enumerate(derived)):
            _err(_C.ModelFormatError, f"{d}: the vocabulary is not CLIP's byte-level BPE layout (ids must be the "
                                      f"256 bytes, the bytes + '</w>', one id per merge, then SOT and EOT)")
        if derived == bundled:
            bpe = _C.ClipTokenizer()
        elif os.path.exists(os.path.join(d, "merges.txt")):
            bpe = _C.ClipTokenizer(os.path.join(d, "merges.txt"))
        else:
            _err(_C.ModelFormatError, f"{d}: tokenizer.json holds merges that differ from CLIP's; save it with "
                                      f"vocab.json + merges.txt to use it")

        def tok_name(v: Any) -> Any:
            return v.get("content") if isinstance(v, dict) else v

        pad = tok_name(cfg.get("pad_token"))
        if pad is None:
            pad = "<|endoftext|>"  # CLIPTokenizer's default pad token
        if pad not in vocab_map:
            _err(_C.ModelFormatError, f"{d}: pad token {pad!r} is not in the vocabulary")
        for key, want in (("bos_token", "<|startoftext|>"), ("eos_token", "<|endoftext|>")):
            got = tok_name(cfg.get(key))
            if got is not None and got != want:
                _err(_C.ModelFormatError, f"{d}: {key} {got!r} is not CLIP's {want!r}")
        ctx = cfg.get("model_max_length", CONTEXT)
        ctx = CONTEXT if not isinstance(ctx, (int, float)) or ctx > 4096 else int(ctx)
        return cls(vocab_map[pad], context=ctx, bpe=bpe, vocab=derived)

    @staticmethod
    def _read_vocab(d: str) -> tuple[dict[str, int], list[str]]:
        vj, mt, tj = (os.path.join(d, n) for n in ("vocab.json", "merges.txt", "tokenizer.json"))
        try:
            if os.path.exists(vj) and os.path.exists(mt):
                with open(vj, encoding="utf-8") as f:
                    vocab = json.load(f)
                with open(mt, encoding="utf-8") as f:
                    lines = f.read().split("\n")
                merges = [m for m in (lines[1:] if lines and lines[0].startswith("#version") else lines) if m]
                return vocab, merges
            if os.path.exists(tj):
                with open(tj, encoding="utf-8") as f:
                    model = json.load(f).get("model", {})
                merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
                return model.get("vocab", {}), merges
        except (OSError, ValueError) as e:
            _err(_C.ModelFormatError, f"{d}: unreadable tokenizer files: {e}")
        _err(_C.FileAccessError, f"{d}: no tokenizer files (vocab.json + merges.txt, or tokenizer.json)")

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without SOT/EOT."""
        return list(self.bpe.encode(text)) if text.strip() else []

    def window(self, ids: Sequence[int]) -> list[int]:
        """SOT, ids (at most context-2), EOT, then pad ids up to the context length."""
        body = list(ids)[:self.context - 2]
        return [self.bos_id] + body + [self.eos_id] + [self.pad_id] * (self.context - 2 - len(body))

    def __call__(self, texts: Sequence[str] | str) -> np.ndarray:
        """int32 [B, context]: each text truncated to context-2 tokens, wrapped and padded as diffusers does."""
        if isinstance(texts, str):
            texts = [texts]
        return np.asarray([self.window(self.encode(t)) for t in texts], np.int32).reshape(-1, self.context)

    def __repr__(self) -> str:
        return f"SDTokenizer(pad_id={self.pad_id}, context={self.context})"


# -- encoders ------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Tower:
    encoder: Any           # ClipTextEncoder
    tokenizer: SDTokenizer
    pooled: bool = False   # SDXL's second tower gives the pooled text_embeds


@dataclasses.dataclass
class SDEncoders:
    """The text side of a Stable Diffusion pipeline: one tower (SD 1.x/2.x) or two (SDXL)."""
    family: str
    towers: list[_Tower]
    force_zeros_for_empty_prompt: bool = False
    path: str | None = None

    def __repr__(self) -> str:
        return (f"SDEncoders(family={self.family!r}, towers={[t.encoder.width for t in self.towers]}, "
                f"path={self.path!r})")


def _family_of(path: str, index: dict[str, Any]) -> str:
    cls = str(index.get("_class_name", ""))
    if "XL" in cls or ("text_encoder_2" in index and index.get("text_encoder_2", [None])[0]):
        return "sdxl"
    try:
        with open(os.path.join(path, "text_encoder", "config.json"), encoding="utf-8") as f:
            width = json.load(f).get("hidden_size", 768)
    except (OSError, ValueError) as e:
        _err(_C.ModelFormatError, f"{path}/text_encoder/config.json: {e}")
    return "sd2" if width == 1024 else "sd15"


def load_encoders(path: str | os.PathLike[str], family: str | None = None) -> SDEncoders:
    """Load the text encoders and tokenizers of a diffusers pipeline directory (``save_pretrained`` layout).
    ``family`` is read from model_index.json when None."""
    p = os.path.expanduser(os.fspath(path))
    idx_path = os.path.join(p, "model_index.json")
    if not os.path.isdir(p) or not os.path.exists(idx_path):
        _err(_C.FileAccessError, f"{p!r} is not a diffusers pipeline directory (no model_index.json)")
    try:
        with open(idx_path, encoding="utf-8") as f:
            index = json.load(f)
    except (OSError, ValueError) as e:
        _err(_C.ModelFormatError, f"{idx_path}: {e}")
    fam = family or _family_of(p, index)
    _check_family(fam)
    names = [("text_encoder", "tokenizer", False)]
    if fam == "sdxl":
        names.append(("text_encoder_2", "tokenizer_2", True))
    towers = []
    for enc_dir, tok_dir, pooled in names:
        ed, td = os.path.join(p, enc_dir), os.path.join(p, tok_dir)
        if not os.path.isdir(ed) or not os.path.isdir(td):
            _err(_C.FileAccessError, f"{p}: family {fam!r} needs {enc_dir}/ and {tok_dir}/")
        # float32 always: the conditioning is promised identical to diffusers'
        towers.append(_Tower(ClipTextEncoder.from_pretrained(ed, dtype="float32"), SDTokenizer.from_pretrained(td),
                             pooled))
    return SDEncoders(fam, towers, bool(index.get("force_zeros_for_empty_prompt", False)), p)


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        _err(_C.InvalidArgumentError, f"family must be one of {', '.join(FAMILIES)}, not {family!r}")


def _as_encoders(encoders: Any, family: str) -> SDEncoders:
    if isinstance(encoders, SDEncoders):
        if encoders.family != family:
            _err(_C.InvalidArgumentError, f"encoders are {encoders.family!r}, family={family!r} was asked for")
        return encoders
    if isinstance(encoders, (str, os.PathLike)):
        return _load_cached(os.fspath(encoders), family)
    objs = list(encoders) if isinstance(encoders, (list, tuple)) else [encoders]
    want = 2 if family == "sdxl" else 1
    if len(objs) != want or not all(hasattr(o, "hidden_states") for o in objs):
        _err(_C.InvalidArgumentError, f"family {family!r} takes {want} ClipTextEncoder object(s) (or a pipeline "
                                      f"directory), got {encoders!r}")
    towers = [_Tower(o, SDTokenizer(pad), family == "sdxl" and i == 1)
              for i, (o, pad) in enumerate(zip(objs, _FAMILY_PAD[family]))]
    return SDEncoders(family, towers, family == "sdxl")


_LOADED: dict[tuple[str, str], SDEncoders] = {}


def _load_cached(path: str, family: str) -> SDEncoders:
    """Pipeline directories are loaded once per process (the towers are read-only and thread-safe)."""
    key = (os.path.realpath(path), family)
    if key not in _LOADED:
        _LOADED[key] = load_encoders(path, family)
    return _LOADED[key]


# -- token streams and chunking -----------------------------------------------------------------------------------
def _fragment_ids(tok: SDTokenizer, text: str, split_cjk: bool) -> list[int]:
    if not split_cjk or not _CJK_RUN.search(text):
        return tok.encode(text)
    # a CJK run is one BPE "word": tokenized per segmenter word so that windows can end between words
    out, pos = [], 0
    for m in _CJK_RUN.finditer(text):
        out += tok.encode(text[pos:m.start()])
        for w in _C.segment(m.group(0), lang="auto"):
            out += tok.encode(w)
        pos = m.end()
    return out + tok.encode(text[pos:])


def chunk_token_ids(ids: Sequence[int], vocab: Sequence[str], *, window: int = WINDOW, lookback: int = 20,
                    breaks: Sequence[int] = ()) -> list[tuple[int, int]]:
    """Split a token stream into ``[start, end)`` windows of at most ``window`` tokens.

    A window that would overflow ends after its last punctuation token (, . ; : ! ? and CJK forms) when that
    carries at most ``lookback`` tokens into the next window, else after its last word-final token (BPE ``</w>``),
    else (one word longer than a window) at ``window``. ``breaks``: positions where a window must end (BREAK).
    """
    if window < 1:
        _err(_C.InvalidArgumentError, f"window must be >= 1, got {window}")
    n = len(ids)
    hard = sorted({b for b in breaks if 0 < b < n})
    out: list[tuple[int, int]] = []
    start = 0
    for seg_end in [*hard, n]:
        while seg_end - start > window:
            limit = start + window
            cut = None
            for k in range(limit, start, -1):  # after token k-1
                if vocab[ids[k - 1]].removesuffix("</w>") in _PUNCT_TOKENS and vocab[ids[k - 1]].endswith("</w>"):
                    if limit - k <= lookback:
                        cut = k
                    break
            if cut is None:
                cut = next((k for k in range(limit, start, -1) if vocab[ids[k - 1]].endswith("</w>")), limit)
            out.append((start, cut))
            start = cut
        out.append((start, seg_end))
        start = seg_end
    return out or [(0, 0)]


@dataclasses.dataclass
class _Stream:
    ids: list[int]
    weights: list[float]
    frag: list[int]          # fragment index of each token
    breaks: list[int]        # BREAK positions


def _stream(tok: SDTokenizer, fragments: list[tuple[str, float]], split_cjk: bool) -> _Stream:
    ids: list[int] = []
    weights: list[float] = []
    frag: list[int] = []
    breaks: list[int] = []
    for fi, (text, w) in enumerate(fragments):
        if text == "BREAK" and w == -1:
            breaks.append(len(ids))
            continue
        t = _fragment_ids(tok, text, split_cjk)
        ids += t
        weights += [float(w)] * len(t)
        frag += [fi] * len(t)
    return _Stream(ids, weights, frag, breaks)


def _windows(tok: SDTokenizer, s: _Stream, long_prompts: str) -> list[tuple[int, int]]:
    win = tok.context - 2
    if long_prompts == "truncate":
        end = min(len(s.ids), win, *(b for b in s.breaks if b > 0)) if s.breaks else min(len(s.ids), win)
        return [(0, end)]
    return chunk_token_ids(s.ids, tok.vocab, window=win, breaks=s.breaks)


# -- encoding ------------------------------------------------------------------------------------------------------
def _states(enc: Any, ids: np.ndarray, layer: int, final_norm: bool) -> np.ndarray:
    if final_norm:
        return np.asarray(enc.hidden_states(ids, layer=layer), np.float32)
    try:
        return np.asarray(enc.hidden_states(ids, layer=layer, final_norm=False), np.float32)
    except TypeError:
        _err(_C.DependencyError, "SDXL needs hidden states without the final LayerNorm "
                                 "(ClipTextEncoder.hidden_states(..., final_norm=False)), which this build lacks")


@dataclasses.dataclass
class _Spec:
    layer: int
    final_norm: bool
    weighting: str | None
    long_prompts: str
    strict: bool


def _plan(tok: SDTokenizer, fragments: list[tuple[str, float]], long_prompts: str
          ) -> tuple[_Stream, list[tuple[int, int]], np.ndarray, np.ndarray]:
    """Token windows of one prompt: (stream, [(start, end)], int32 ids [n, 77], float32 per-token weights [n, 77])."""
    s = _stream(tok, fragments, split_cjk=False)
    if long_prompts == "chunk" and len(s.ids) > tok.context - 2 and any(_CJK_RUN.search(t) for t, _ in fragments):
        s = _stream(tok, fragments, split_cjk=True)
    wins = _windows(tok, s, long_prompts)
    ids = np.asarray([tok.window(s.ids[a:b]) for a, b in wins], np.int32)
    w = np.ones(ids.shape, np.float32)
    for r, (a, b) in enumerate(wins):
        w[r, 1:1 + b - a] = s.weights[a:b]
    return s, wins, ids, w


def _compel_weighted(z: np.ndarray, w: np.ndarray, empty: np.ndarray) -> np.ndarray:
    """compel: each token's state lerped from the empty prompt's by its weight (weights == 1 kept as they are)."""
    out = z.copy()
    for r in range(z.shape[0]):
        m = w[r] != 1.0
        if m.any():
            out[r][m] = empty[m] + (z[r][m] - empty[m]) * w[r][m][:, None]
    return np.asarray(out, np.float32)


def _tower_batch(tower: _Tower, frag_lists: list[list[tuple[str, float]]], spec: _Spec,
                 empty: np.ndarray | None = None) -> tuple[list[np.ndarray], np.ndarray | None]:
    """[n_b·77, W] states of each prompt on one tower (one forward pass for all windows and, unless given, the
    empty window), weighted per spec.weighting; and the empty prompt's window [77, W]."""
    tok = tower.tokenizer
    plans = [_plan(tok, f, spec.long_prompts) for f in frag_lists]
    extra = [np.asarray([tok.window([])], np.int32)] if empty is None else []
    if not plans and not extra:
        return [], empty
    z_all = _states(tower.encoder, np.concatenate([p[2] for p in plans] + extra), spec.layer, spec.final_norm)
    if empty is None:
        empty = z_all[-1]
    out, pos = [], 0
    for frags, (s, wins, pid, w) in zip(frag_lists, plans):
        z = z_all[pos:pos + len(pid)].copy()
        pos += len(pid)
        width = z.shape[-1]
        if spec.weighting is None or all(x == 1.0 for x in s.weights):
            out.append(z.reshape(-1, width))
        elif spec.weighting == "a1111":
            # A1111's emphasis: scale each token's state by its weight, then restore the window's mean
            for r in range(len(wins)):
                mean0 = z[r].mean(dtype=np.float64)
                z[r] *= w[r][:, None]
                z[r] *= np.float32(mean0 / z[r].mean(dtype=np.float64))
            out.append(z.reshape(-1, width))
        else:
            out.append(_compel_downweight(tower, frags, _compel_weighted(z, w, empty).reshape(-1, width), empty,
                                          spec))
    return out, empty


def _compel_downweight(tower: _Tower, fragments: list[tuple[str, float]], base: np.ndarray, empty: np.ndarray,
                       spec: _Spec) -> np.ndarray:
    """compel's downweighting (weights < 1) as its DownweightMode.REMOVE: blend with the prompt without that
    fragment, lerp weight tan((1 - w)·π/2), the weights normalised to sum 1."""
    blend, weights = [base], [1.0]
    for fi, (text, wf) in enumerate(fragments):
        if wf >= 1.0 or (text == "BREAK" and wf == -1):
            continue
        _, _, ids2, w2 = _plan(tower.tokenizer, fragments[:fi] + fragments[fi + 1:], spec.long_prompts)
        z2 = _compel_weighted(_states(tower.encoder, ids2, spec.layer, spec.final_norm), w2, empty)
        z2 = z2.reshape(-1, base.shape[-1])
        while len(z2) < len(base):
            z2 = np.concatenate([z2, empty])
        blend.append(z2[:len(base)])
        weights.append(math.tan((1.0 - max(1e-5, wf)) * math.pi / 2))
    if len(blend) == 1:
        return base
    wts = np.asarray(weights, np.float32)
    wts = wts / wts.sum()
    return np.asarray(np.einsum("k,ktw->tw", wts, np.stack(blend)), np.float32)


def _plain_text(fragments: list[tuple[str, float]], syntax: str | None) -> str:
    return "".join(t for t, w in fragments if not (t == "BREAK" and w == -1))


@dataclasses.dataclass
class PromptEmbeds:
    """What ``encode_prompt`` returns; the names are the keyword arguments of diffusers' pipelines.

    ``pipe(prompt_embeds=r.prompt_embeds, negative_prompt_embeds=r.negative_prompt_embeds, ...)`` after
    ``torch.from_numpy``; ``r.as_kwargs()`` gives that dict (NumPy arrays)."""
    prompt_embeds: np.ndarray
    negative_prompt_embeds: np.ndarray | None = None
    pooled_prompt_embeds: np.ndarray | None = None
    negative_pooled_prompt_embeds: np.ndarray | None = None
    token_windows: list[int] = dataclasses.field(default_factory=list)  # windows per prompt (before padding)

    def as_kwargs(self) -> dict[str, np.ndarray]:
        keys = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


def _batch(encs: SDEncoders, texts: list[str], spec: _Spec, cache: Any
           ) -> tuple[list[np.ndarray], np.ndarray | None, np.ndarray]:
    """Per prompt: [n·77, sum W] states (towers concatenated on the feature axis); the pooled vectors [B, D] of the
    pooled tower (or None); the empty prompt's window [77, sum W]."""
    frags = [_weighting.parse(t, spec.weighting, strict=spec.strict) for t in texts]
    kind = f"sd:{spec.layer}:{int(spec.final_norm)}:{spec.weighting}:{spec.long_prompts}"
    per_tower: list[list[np.ndarray]] = []
    empties: list[np.ndarray] = []
    pooled: np.ndarray | None = None
    for tower in encs.towers:
        fp = f"{tower.encoder.fingerprint}:pad{tower.tokenizer.pad_id}"
        rows: list[np.ndarray | None] = [None] * len(texts)
        if cache is not None:
            for b, t in enumerate(texts):
                hit = cache.get(fp, t, kind=kind)
                if hit is not None:
                    rows[b] = np.asarray(hit, np.float32).reshape(-1, tower.encoder.width)
        todo = [b for b, r in enumerate(rows) if r is None]
        empty: np.ndarray | None = None
        if cache is not None:  # the empty window too, so that cached results are bit-identical
            hit = cache.get(fp, "", kind=kind + ":empty")
            empty = None if hit is None else np.asarray(hit, np.float32).reshape(-1, tower.encoder.width)
        known = empty is not None
        got, empty = _tower_batch(tower, [frags[b] for b in todo], spec, empty)
        assert empty is not None  # computed when not given
        if cache is not None and not known:
            cache.put(fp, "", empty, kind=kind + ":empty")
        for b, z in zip(todo, got):
            rows[b] = z
            if cache is not None:
                cache.put(fp, texts[b], z, kind=kind)
        per_tower.append([r for r in rows if r is not None])
        empties.append(empty)
        if tower.pooled:
            # the pooled text_embeds of the first window (truncated, as diffusers does). compel pools the prompt as
            # written, syntax included; a1111 pools the text without its syntax.
            plain = list(texts) if spec.weighting == "compel" else [_plain_text(f, spec.weighting) for f in frags]
            pooled = np.asarray(tower.encoder.encode(tower.tokenizer(plain), normalize=False), np.float32)
    out: list[np.ndarray] = []
    for b, t in enumerate(texts):
        parts = [rows[b] for rows in per_tower]
        if len({len(p) for p in parts}) != 1:  # towers chunked differently (not for CLIP's shared vocabulary)
            _err(_C.DimensionMismatchError, f"prompt {t!r}: the towers gave {[len(p) for p in parts]} positions")
        out.append(np.concatenate(parts, axis=-1))
    return out, pooled, np.concatenate(empties, axis=-1)


def _pad_stack(rows: list[np.ndarray], n_tokens: int, empty: np.ndarray) -> np.ndarray:
    ctx = empty.shape[0]
    out = np.empty((len(rows), n_tokens, empty.shape[-1]), np.float32)
    for b, z in enumerate(rows):
        out[b, :len(z)] = z
        for p in range(len(z), n_tokens, ctx):  # pad with the empty prompt's window, as compel does
            out[b, p:p + ctx] = empty
    return out


def encode_prompt(prompt: str | Sequence[str], negative: str | Sequence[str] | None = None, *,
                  family: str = "sd15", encoders: Any = None, clip_skip: int | None = None,
                  weighting: str | None = None, long_prompts: str = "truncate", cache: Any = None,
                  strict: bool = True, negative_clip_skip: bool = False) -> PromptEmbeds:
    """Text conditioning for a Stable Diffusion pipeline, equal to diffusers' ``encode_prompt`` (see the module
    docstring); prompt_embeds [B, 77·n, W], negative_prompt_embeds the same shape, and for SDXL pooled [B, 1280].

    encoders: a diffusers pipeline directory (loaded once per process), ``load_encoders(dir)``, or the
        ClipTextEncoder object(s) (two for SDXL) with the family's standard tokenizers.
    clip_skip: layers to skip, as diffusers counts them. diffusers applies it to the prompt only; so does this
        unless ``negative_clip_skip=True``.
    weighting: None (text as is), "a1111" ((word:1.2), ((word)), [word], BREAK; A1111's emphasis: states scaled by
        their weights, then the window's mean restored) or "compel" (word++, (words)1.3; compel's lerp from the
        empty prompt, downweighting as compel's DownweightMode.REMOVE). ``strict=False``: lenient bracket parsing.
    long_prompts: "truncate" (75 tokens, as diffusers) or "chunk" (every token, in 77-token windows split after
        punctuation or at word ends; the negative is padded with empty windows to the same length).
    cache: a PromptCache; each prompt's states per tower are one entry.
    """
    _check_family(family)
    if long_prompts not in ("chunk", "truncate"):
        _err(_C.InvalidArgumentError, f"long_prompts must be 'chunk' or 'truncate', not {long_prompts!r}")
    if weighting not in (None, "a1111", "compel"):
        _err(_C.InvalidArgumentError, f"weighting must be 'a1111', 'compel' or None, not {weighting!r}")
    if clip_skip is not None and (not isinstance(clip_skip, (int, np.integer)) or clip_skip < 0):
        _err(_C.InvalidArgumentError, f"clip_skip must be None or an int >= 0, got {clip_skip!r}")
    if encoders is None:
        _err(_C.InvalidArgumentError, "encoders= is required: a diffusers pipeline directory or ClipTextEncoder(s)")
    encs = _as_encoders(encoders, family)
    texts: list[str] = [prompt] if isinstance(prompt, str) else list(prompt)
    if not texts or not all(isinstance(t, str) for t in texts):
        _err(_C.InvalidArgumentError, "prompt must be a str or a non-empty list of str")
    sdxl = family == "sdxl"
    nlayers = min(int(t.encoder.config["num_hidden_layers"]) for t in encs.towers)
    skip = int(clip_skip or 0)
    if skip + (2 if sdxl else 1) > nlayers + 1:
        _err(_C.InvalidArgumentError, f"clip_skip={clip_skip} leaves no layer of a {nlayers}-layer text encoder")

    def spec_for(cs: int | None) -> _Spec:
        layer = -((cs or 0) + 2) if sdxl else -((cs or 0) + 1)
        return _Spec(layer, not sdxl, weighting, long_prompts, strict)

    pos_spec = spec_for(clip_skip)
    neg_spec = spec_for(clip_skip if negative_clip_skip else None)
    zero_neg = negative is None and sdxl and encs.force_zeros_for_empty_prompt
    negs: list[str] = []
    if not zero_neg:
        negs = [negative or ""] * len(texts) if negative is None or isinstance(negative, str) else \
            [str(x) if isinstance(x, str) else x for x in negative]
        if len(negs) != len(texts) or not all(isinstance(t, str) for t in negs):
            _err(_C.DimensionMismatchError, f"negative must be a str or {len(texts)} str, one per prompt")
    neg_rows: list[np.ndarray] | None = None
    pooled: np.ndarray | None = None
    neg_pooled: np.ndarray | None = None
    if negs and neg_spec == pos_spec:  # one pass for both
        both, both_pooled, empty = _batch(encs, texts + negs, pos_spec, cache)
        rows, neg_rows, neg_empty = both[:len(texts)], both[len(texts):], empty
        if both_pooled is not None:
            pooled, neg_pooled = both_pooled[:len(texts)], both_pooled[len(texts):]
    else:
        rows, pooled, empty = _batch(encs, texts, pos_spec, cache)
        if negs:
            neg_rows, neg_pooled, neg_empty = _batch(encs, negs, neg_spec, cache)
    n_tok = max(len(z) for z in rows + (neg_rows or []))
    out = PromptEmbeds(_pad_stack(rows, n_tok, empty),
                       token_windows=[len(z) // encs.towers[0].tokenizer.context for z in rows])
    if zero_neg:
        out.negative_prompt_embeds = np.zeros_like(out.prompt_embeds)
    else:
        out.negative_prompt_embeds = _pad_stack(neg_rows or [], n_tok, neg_empty)
    if sdxl:
        out.pooled_prompt_embeds = pooled
        out.negative_pooled_prompt_embeds = np.zeros_like(pooled) if zero_neg else neg_pooled
    return out


# -- cross-attention K/V ---------------------------------------------------------------------------------------------
def _unet_files(path: str) -> list[str]:
    p = os.path.expanduser(path)
    if os.path.isfile(p):
        return [p]
    if os.path.isdir(os.path.join(p, "unet")) and not os.path.exists(os.path.join(p, "config.json")):
        p = os.path.join(p, "unet")
    for base in ("diffusion_pytorch_model", "model"):
        f = os.path.join(p, base + ".safetensors")
        if os.path.exists(f):
            return [f]
        idx = os.path.join(p, base + ".safetensors.index.json")
        if os.path.exists(idx):
            try:
                with open(idx, encoding="utf-8") as fh:
                    shards = sorted(set(json.load(fh)["weight_map"].values()))
            except (OSError, ValueError, KeyError) as e:
                _err(_C.ModelFormatError, f"{idx}: {e}")
            return [os.path.join(p, s) for s in shards]
    _err(_C.FileAccessError, f"{path!r}: no UNet safetensors (diffusion_pytorch_model.safetensors or its index)")


class CrossAttentionKV:
    """The K and V projections of every cross-attention layer (``attn2``) of a UNet, for prompt embeddings.

    ``from_unet(path)`` maps the UNet's safetensors (a diffusers pipeline or ``unet/`` directory, a .safetensors
    file, or a sharded index) with clipprompt's C reader and reads only the ``attn2.to_k`` / ``attn2.to_v``
    weights. ``compute(embeds)`` -> {module name: (K, V)}, K/V [B, T, inner] (inner = to_k's output width);
    ``get_or_compute`` keeps results per prompt-embedding fingerprint in a byte-capped PromptCache.
    """

    def __init__(self, weights: dict[str, tuple[np.ndarray, np.ndarray]], fingerprint: str,
                 capacity_bytes: int = 1 << 30):
        if not weights:
            _err(_C.ModelFormatError, "no attn2.to_k / attn2.to_v weights found")
        self.layers = weights
        self.fingerprint = fingerprint
        dims = {w[0].shape[1] for w in weights.values()}
        if len(dims) != 1:
            _err(_C.ModelFormatError, f"cross-attention layers take different context widths: {sorted(dims)}")
        self.context_dim = dims.pop()
        self.cache = _C.PromptCache(capacity_bytes=int(capacity_bytes))
        self.file: Any = None  # from_unet: the SafetensorsFile whose mapping the weights view

    @classmethod
    def from_unet(cls, path: str | os.PathLike[str], *, capacity_bytes: int = 1 << 30) -> CrossAttentionKV:
        files = _unet_files(os.fspath(path))
        st = _C.SafetensorsFile(files)
        pat = re.compile(r"^(.*\.attn2)\.to_([kv])\.weight$")
        found: dict[str, dict[str, np.ndarray]] = {}
        h = hashlib.sha256()
        for name in st.names():
            m = pat.match(name)
            if not m:
                continue
            dt, shape = st.info(name)
            if len(shape) != 2:
                _err(_C.ModelFormatError, f"{name}: expected a 2-D weight, got shape {shape}")
            arr = st.array(name) if dt in ("F32", "F16") else st.to_float32(name)
            found.setdefault(m.group(1), {})[m.group(2)] = arr
            h.update(f"{name}:{dt}:{shape}".encode())
            flat = arr.reshape(-1)
            for at in (0, flat.size // 2, max(0, flat.size - 16)):
                h.update(flat[at:at + 16].tobytes())
        weights = {}
        for mod, kv in found.items():
            if set(kv) != {"k", "v"}:
                _err(_C.ModelFormatError, f"{mod}: has to_{''.join(kv)} but not both to_k and to_v")
            weights[mod] = (kv["k"], kv["v"])
        obj = cls(weights, "kv-" + h.hexdigest()[:16], capacity_bytes)
        obj.file = st  # the mapping the weight views live in
        return obj

    def __len__(self) -> int:
        return len(self.layers)

    def bytes_per_prompt(self, tokens: int = CONTEXT, dtype: str = "float32") -> int:
        """Bytes one cached prompt of ``tokens`` positions takes (K and V of every layer)."""
        item = 2 if dtype == "float16" else 4
        return sum(2 * tokens * k.shape[0] * item for k, _ in self.layers.values())

    def _check(self, embeds: Any, dtype: str) -> np.ndarray:
        if dtype not in ("float32", "float16"):
            _err(_C.InvalidArgumentError, f"dtype must be 'float32' or 'float16', not {dtype!r}")
        e = np.asarray(embeds)
        if e.ndim == 2:
            e = e[None]
        if e.ndim != 3 or e.dtype.kind != "f":
            _err(_C.InvalidArgumentError, f"prompt embeds must be a float array [B, T, {self.context_dim}], "
                                          f"got shape {e.shape} dtype {e.dtype}")
        if e.shape[-1] != self.context_dim:
            _err(_C.DimensionMismatchError, f"prompt embeds have width {e.shape[-1]}; this UNet's cross-attention "
                                            f"takes {self.context_dim}")
        if not np.all(np.isfinite(e)):
            _err(_C.InvalidArgumentError, "prompt embeds contain NaN or inf")
        return np.ascontiguousarray(e, np.float32)

    def compute(self, prompt_embeds: Any, dtype: str = "float32") -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{module name: (K, V)} with K = embeds @ to_k.weight.T (no bias, as diffusers' attn2), [B, T, inner]."""
        e = self._check(prompt_embeds, dtype)
        flat = e.reshape(-1, e.shape[-1])  # one GEMM per projection over all B·T rows
        out = {}
        for name, (wk, wv) in self.layers.items():
            k = (flat @ wk.T.astype(np.float32, copy=False)).reshape(e.shape[0], e.shape[1], -1)
            v = (flat @ wv.T.astype(np.float32, copy=False)).reshape(e.shape[0], e.shape[1], -1)
            out[name] = (k.astype(np.float16), v.astype(np.float16)) if dtype == "float16" else (k, v)
        return out

    @staticmethod
    def prompt_fingerprint(prompt_embeds: Any) -> str:
        e = np.ascontiguousarray(prompt_embeds, np.float32)
        return hashlib.sha256(repr(e.shape).encode() + e.tobytes()).hexdigest()[:32]

    def get_or_compute(self, prompt_embeds: Any, dtype: str = "float32") -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``compute`` through the byte-capped cache keyed by the embeddings' fingerprint. Entries are stored in
        ``dtype`` (float16 K/V are kept as raw 16-bit pairs, half the bytes of float32)."""
        e = self._check(prompt_embeds, dtype)
        fp = self.prompt_fingerprint(e)
        shape = e.shape[:2]
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        missing = False
        for name, (wk, _) in self.layers.items():
            got: list[np.ndarray] = []
            for which in "kv":
                v = self.cache.get(self.fingerprint, fp, kind=f"{name}:{which}:{dtype}")
                if v is None:
                    missing = True
                    break
                got.append(_unpack(np.asarray(v), dtype, (*shape, wk.shape[0])))
            if missing:
                break
            out[name] = (got[0], got[1])
        if not missing:
            return out
        out = self.compute(e, dtype)
        for name, (k, v) in out.items():
            self.cache.put(self.fingerprint, fp, _pack(k), kind=f"{name}:k:{dtype}")
            self.cache.put(self.fingerprint, fp, _pack(v), kind=f"{name}:v:{dtype}")
        return out

    def stats(self) -> dict[str, Any]:
        return dict(self.cache.stats())

    def __repr__(self) -> str:
        return (f"CrossAttentionKV(layers={len(self.layers)}, context_dim={self.context_dim}, "
                f"fingerprint={self.fingerprint!r})")


def _pack(a: np.ndarray) -> np.ndarray:
    """float16 -> the same bytes seen as float32 pairs (finite halves give finite float32 patterns)."""
    flat = np.ascontiguousarray(a).reshape(-1)
    if a.dtype == np.float16:
        if flat.size % 2:
            flat = np.concatenate([flat, np.zeros(1, np.float16)])
        return flat.view(np.float32)
    return flat


def _unpack(v: np.ndarray, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape))
    if dtype == "float16":
        return np.ascontiguousarray(v, np.float32).view(np.float16)[:n].reshape(shape)
    return np.asarray(v, np.float32).reshape(shape)


# -- window texts and (cond, uncond) pairs: the earlier helpers, over encode_prompt ---------------------------------
def chunk_prompt(text: str, tokenizer: Any = None, *, window: int = WINDOW, lookback: int = 20,
                 lang: str = "auto") -> list[str]:
    """The texts of ``text``'s windows as ``encode_prompt(long_prompts="chunk")`` cuts it (decoded from each window's
    token ids, so lower-cased and with CLIP's spacing); ``[""]`` for an empty prompt. ``tokenizer``: a ClipTokenizer
    or SDTokenizer (default: the bundled BPE). ``lang`` is accepted for compatibility (CJK runs are cut between
    ``cp.segment`` words whatever it says)."""
    del lang
    window = size_arg("chunk_prompt: window", window, 1, MAX_SEQ - 2)
    lookback = size_arg("chunk_prompt: lookback", lookback, 0)
    tok = tokenizer if isinstance(tokenizer, SDTokenizer) else SDTokenizer(bpe=tokenizer)
    frags = [(" ".join(text.split()), 1.0)]
    s = _stream(tok, frags, split_cjk=False)
    if len(s.ids) > window and _CJK_RUN.search(text):
        s = _stream(tok, frags, split_cjk=True)
    if not s.ids:
        return [""]
    wins = chunk_token_ids(s.ids, tok.vocab, window=window, lookback=lookback)
    return [str(tok.bpe.decode(s.ids[a:b])).strip() for a, b in wins]


def encode_pair(encoder: Any, prompt: str, negative: str | None = None, layer: int = -1, *, tokenizer: Any = None,
                cache: Any = None, lang: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """(cond, uncond) [1, 77·n, W] for one CLIP tower with SD 1.x conventions (pad <|endoftext|>), every window
    kept: ``encode_prompt(prompt, negative, family="sd15", encoders=encoder, long_prompts="chunk")`` with ``layer``
    as the hidden-state layer of both. ``negative=None`` uses ``negative_prompt(positive=prompt)``."""
    del tokenizer, lang
    if negative is None:
        negative = negative_prompt(positive=prompt)
    nl = int(encoder.config["num_hidden_layers"])
    if not -nl - 1 <= layer <= nl:
        _err(_C.InvalidArgumentError, f"layer {layer} out of range for a {nl}-layer tower")
    skip = -layer - 1 if layer < 0 else nl - layer
    r = encode_prompt(prompt, negative, family="sd15", encoders=encoder, clip_skip=skip or None,
                      long_prompts="chunk", cache=cache, negative_clip_skip=True)
    assert r.negative_prompt_embeds is not None
    return r.prompt_embeds, r.negative_prompt_embeds


# -- negative-prompt vocabularies -------------------------------------------------------------------------------------
# Common negative-prompt terms (what SD users put in the negative box), grouped so they compose.
NEGATIVE_PRESETS = {
    "quality": ["worst quality", "low quality", "normal quality", "lowres", "blurry", "jpeg artifacts", "noise",
                "out of focus"],
    "text": ["text", "watermark", "signature", "logo", "username", "caption"],
    "anatomy": ["bad anatomy", "bad hands", "extra fingers", "missing fingers", "extra limbs", "deformed",
                "disfigured", "mutated", "bad proportions"],
    "composition": ["cropped", "out of frame", "duplicate", "tiling", "cut off"],
    "photo": ["cartoon", "illustration", "3d render", "painting", "drawing", "anime", "cgi"],
    "art": ["photo", "photorealistic", "realistic"],
}
NEGATIVE_PRESETS["default"] = NEGATIVE_PRESETS["quality"] + NEGATIVE_PRESETS["text"] + NEGATIVE_PRESETS["composition"]
NEGATIVE_PRESETS["people"] = NEGATIVE_PRESETS["default"] + NEGATIVE_PRESETS["anatomy"]


def negative_prompt(preset: str | Sequence[str] = "default", *, extra: Sequence[str] = (),
                    positive: str | None = None, exclude: Sequence[str] = ()) -> str:
    """A negative prompt from presets (a name or list of names in NEGATIVE_PRESETS) plus ``extra`` terms,
    de-duplicated in order; terms that appear in the ``positive`` prompt or in ``exclude`` are left out (a prompt
    asking for "a watercolor painting" must not get "painting" as a negative)."""
    names = [preset] if isinstance(preset, str) else list(preset or [])
    terms = []
    for name in names:
        if name not in NEGATIVE_PRESETS:
            _err(_C.InvalidArgumentError, f"negative_prompt: unknown preset {name!r}; known: "
                                          f"{', '.join(sorted(NEGATIVE_PRESETS))}")
        terms += NEGATIVE_PRESETS[name]
    terms += [t.strip() for t in extra if t.strip()]
    pos = " ".join(_C.normalize(positive, lowercase=True).split()) if positive and positive.strip() else ""
    skip = {e.strip().lower() for e in exclude}
    out, seen = [], set()
    for t in terms:
        key = t.lower()
        if key in seen or key in skip or (pos and re.search(r"(?<!\w)" + re.escape(key) + r"(?!\w)", pos)):
            continue
        seen.add(key)
        out.append(t)
    return ", ".join(out)
