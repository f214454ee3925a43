"""PromptPipeline: normalise -> segment -> strategy -> cache -> encode -> index add/search, batch-first.

Each stage is one batched call into the C core (which releases the GIL); this file only orders them, keeps the
per-stage wall times, and turns a strategy's "texts per prompt" into one vector per prompt (mean of normalised
embeddings, renormalised — template ensembling; a no-op for one text).
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

import clipprompt as cp

from .strategies import Strategy, get_strategy, pool_vectors
from .words import CJK_CHAR

if TYPE_CHECKING:
    from .expand import PromptExpander
    from .protocols import TextEncoder

__all__ = ["STAGES", "PromptPipeline"]

STAGES = ("normalize", "segment", "strategy", "encode", "index")


class PromptPipeline:
    """Prompts in, vectors (or neighbours) out.

    encoder     a ``cp.ClipTextEncoder`` or ``cp.MiniLMEncoder`` (anything with encode/dim/fingerprint)
    expander    a ``cp.PromptExpander`` for strategy="expand" (default: the shipped pool, embedded with MiniLM)
    cache       a ``cp.PromptCache`` (default: a new one; pass ``False`` to encode without caching)
    index       a ``cp.FlatIPIndex`` of ``encoder.dim`` (default: created on first ``add``)
    strategy    "expand" | "keywords" | "templates" | "raw", or a Strategy object
    template    template set for strategy="templates" (``cp.templates`` name or a list)
    lang        segmentation language for ``cp.segment`` ("auto")
    batch_size  prompts per batch (one progress step each)
    expand_kwargs  forwarded to ``expander.expand_batch`` (top_k, min_score, max_tokens, mmr)
    """

    def __init__(self, encoder: TextEncoder, expander: PromptExpander | None = None,
                 cache: cp.PromptCache | Literal[False] | None = None, index: cp.FlatIPIndex | None = None,
                 strategy: str | Strategy = "expand", *, template: str | list[str] = "imagenet", lang: str = "auto",
                 batch_size: int = 256, **expand_kwargs: Any) -> None:
        self.encoder = encoder
        if cache is None:
            cache = cp.PromptCache()
        self.cache: cp.PromptCache | None = None if cache is False else cache
        self.index = index
        self.lang = lang
        self.batch_size = int(batch_size)
        if self.batch_size <= 0:
            raise cp.InvalidArgumentError(f"PromptPipeline: batch_size must be > 0, got {batch_size}")
        if strategy == "expand" and expander is None:
            from .expand import PromptExpander

            expander = PromptExpander(None, cache=self.cache)
        self.expander = expander
        self.strategy: Strategy = get_strategy(strategy, expander=expander, template=template, **expand_kwargs)
        self.reset_stats()

    def __repr__(self) -> str:
        return (f"PromptPipeline(strategy={self.strategy.name!r}, encoder={getattr(self.encoder, 'fingerprint', '?')!r}"
                f", cache={'on' if self.cache is not None else 'off'}, index={len(self.index) if self.index else 0})")

    # -- stats ---------------------------------------------------------------------------------------------------
    def reset_stats(self) -> None:
        """Zero the per-stage timers and counters (the cache's own counters are left alone)."""
        self._times = dict.fromkeys(STAGES, 0.0)
        self._counts = {"prompts": 0, "texts": 0, "batches": 0}
        self._cache0 = self._cache_counts()

    def _cache_counts(self) -> tuple[int, int]:
        if self.cache is None:
            return (0, 0)
        s = self.cache.stats()
        return (s["hits"], s["misses"])

    @contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._times[stage] += time.perf_counter() - t0

    def stats(self) -> dict[str, Any]:
        """Counters since construction / ``reset_stats``: prompts, texts encoded or looked up, batches, cache hits,
        misses, hit_rate, per-stage seconds (``times``) and microseconds per prompt (``us_per_prompt``)."""
        h0, m0 = self._cache0
        h1, m1 = self._cache_counts()
        hits, misses = h1 - h0, m1 - m0
        n = max(self._counts["prompts"], 1)
        out: dict[str, Any] = dict(self._counts)
        out.update(
            strategy=self.strategy.name,
            cache_hits=hits,
            cache_misses=misses,
            hit_rate=hits / (hits + misses) if hits + misses else 0.0,
            times=dict(self._times),
            us_per_prompt={k: v / n * 1e6 for k, v in self._times.items()},
        )
        if self.cache is not None:
            out["cache"] = self.cache.stats()
        return out

    # -- stages --------------------------------------------------------------------------------------------------
    def _normalize(self, prompts: list[str]) -> list[str]:
        return cp.normalize_batch(prompts)

    def _segment(self, prompts: list[str]) -> list[list[str]]:
        # Segmentation matters for CJK (word boundaries for the keyword / presence guards); elsewhere whitespace.
        return [cp.segment(p, lang=self.lang) if CJK_CHAR.search(p) else p.split() for p in prompts]

    def prepare(self, prompts: str | Iterable[str]) -> list[list[str]]:
        """Run normalise -> segment -> strategy; per prompt, the texts that will be encoded."""
        batch = [prompts] if isinstance(prompts, str) else list(prompts)
        with self._timed("normalize"):
            normed = self._normalize(batch)
        words: list[list[str]] | None = None
        if self.strategy.needs_words or self.strategy.name == "expand":
            with self._timed("segment"):
                words = self._segment(normed)
        with self._timed("strategy"):
            texts = self.strategy.texts(normed, words)
        return texts

    def _encode_batch(self, prompts: list[str]) -> NDArray[np.float32]:
        groups = self.prepare(prompts)
        flat = [t for g in groups for t in g]
        with self._timed("encode"):
            if self.cache is not None:
                vecs = self.cache.get_or_encode(self.encoder, flat)
            else:
                vecs = self.encoder.encode(flat, normalize=True)
            out = pool_vectors(np.asarray(vecs, np.float32), [len(g) for g in groups])
        self._counts["prompts"] += len(groups)
        self._counts["texts"] += len(flat)
        self._counts["batches"] += 1
        return out

    def encode(self, prompts: str | Iterable[str], *, progress: bool = False) -> NDArray[np.float32]:
        """One L2-normalised float32 vector per prompt, [B, encoder.dim]. ``progress=True``: a tqdm bar by batch."""
        batch = [prompts] if isinstance(prompts, str) else list(prompts)
        if not batch:
            return np.zeros((0, self.encoder.dim), np.float32)
        starts: Iterable[int] = range(0, len(batch), self.batch_size)
        if progress:
            from tqdm.auto import tqdm

            n = len(range(0, len(batch), self.batch_size))
            starts = tqdm(starts, total=n, unit="batch", desc=f"encode ({self.strategy.name})")
        parts = [self._encode_batch(batch[s:s + self.batch_size]) for s in starts]
        return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)

    def add(self, prompts: str | Iterable[str], ids: ArrayLike | None = None, *,
            progress: bool = False) -> NDArray[np.float32]:
        """Encode prompts and add them to the index (created on first use); returns the vectors added."""
        vecs = self.encode(prompts, progress=progress)
        self.add_vectors(vecs, ids)
        return vecs

    def add_vectors(self, vectors: ArrayLike, ids: ArrayLike | None = None) -> None:
        """Add precomputed vectors (e.g. image embeddings) to the index."""
        rows = np.ascontiguousarray(vectors, dtype=np.float32)
        with self._timed("index"):
            if self.index is None:
                self.index = cp.FlatIPIndex(rows.shape[1])
            if ids is None:
                self.index.add(rows)
            else:
                self.index.add(rows, np.asarray(ids, np.int64))

    def search(self, prompts: str | Iterable[str], k: int = 10, *,
               progress: bool = False) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Encode prompts with the strategy and search the index: (D float32 [B, k], I int64 [B, k])."""
        if self.index is None or len(self.index) == 0:
            raise cp.IndexStateError("PromptPipeline.search: the index is empty (add() something first)")
        q = self.encode(prompts, progress=progress)
        with self._timed("index"):
            return self.index.search(q, int(k))
