"""Semantic prompt expansion: grow a short prompt with related phrases from a pool, under guards.

The pool (a list of phrases, a one-per-line file, or None for the shipped product taxonomy) is embedded once with
MiniLM through a PromptCache into a FlatIPIndex. ``expand`` embeds the prompt, takes the nearest pool phrases and
keeps the best ``top_k`` that pass every guard:

1. score floor  — cosine similarity >= ``min_score``;
2. present      — the phrase is already in the prompt: exactly, after normalisation (NFKC + lower case), or all of
                  its content words already appear in the prompt (or in phrases already added);
3. MMR          — with ``mmr=λ``, greedy maximal marginal relevance ``λ·sim(q, p) − (1−λ)·max sim(p, chosen)``;
4. budget       — the expanded text never exceeds ``max_tokens`` CLIP tokens (SOT/EOT included, counted with
                  ClipTokenizer); the lowest-scored phrases are dropped first until it fits.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray

import clipprompt as cp

from .words import content_words

if TYPE_CHECKING:
    from .protocols import TextEncoder

Pool = Iterable[str] | str | os.PathLike[str] | None  # phrases, a one-per-line file, or None (the shipped pool)

__all__ = ["Expansion", "PromptExpander", "default_pool_path", "read_pool"]

DEFAULT_POOL = "pool_google_product_taxonomy_en.txt"


def default_pool_path() -> str:
    """Path of the shipped default pool (Google product taxonomy, en-US; see data/SOURCES-strategies.md)."""
    return str(resources.files("clipprompt").joinpath("data").joinpath(DEFAULT_POOL))


def read_pool(pool: Pool) -> list[str]:
    """Phrases from a list/tuple or a one-phrase-per-line file (blank lines skipped), normalised, duplicates dropped
    (first kept). None: the shipped default pool."""
    if pool is None:
        pool = default_pool_path()
    if isinstance(pool, (str, os.PathLike)):
        try:
            with open(pool, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as e:
            raise cp.FileAccessError(f"PromptExpander: cannot read pool file {os.fspath(pool)!r}: {e}") from e
    else:
        lines = list(pool)
    out: list[str] = []
    seen: set[str] = set()
    for line in lines:
        if not isinstance(line, str):
            raise cp.InvalidArgumentError(f"PromptExpander: pool entries must be str, got {type(line).__name__}")
        if not line.strip():
            continue
        phrase = cp.normalize(line)
        if phrase not in seen:
            seen.add(phrase)
            out.append(phrase)
    if not out:
        raise cp.InvalidArgumentError("PromptExpander: the pool is empty")
    return out


def _stem(w: str) -> str:
    # Crude plural folding so that "dresses" is present in "dress": enough for the presence guard.
    if len(w) > 4 and w.endswith("es") and w[-3] in "sxz":
        return w[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        return w[:-1]
    return w


@dataclass
class Expansion:
    """Result of :meth:`PromptExpander.expand`.

    text     the expanded prompt: the normalised prompt, then ", " and the added phrases, best first
    added    [(phrase, score)] in the order they appear in ``text``
    prompt   the normalised input prompt
    dropped  [(phrase, score, reason)] candidates the guards removed; reason in
             {"score", "present", "redundant", "budget"}
    tokens   CLIP token count of ``text`` including SOT/EOT
    """

    text: str
    added: list[tuple[str, float]] = field(default_factory=list)
    prompt: str = ""
    dropped: list[tuple[str, float, str]] = field(default_factory=list)
    tokens: int = 0

    def __str__(self) -> str:
        return self.text


class PromptExpander:
    """Expand prompts with related phrases from a pool.

    pool       list of phrases, a file path (one per line), or None for the shipped default pool
    encoder    anything with ``encode(texts, normalize=True)``, ``dim`` and ``fingerprint``; default: the bundled
               MiniLM (``cp.MiniLMEncoder.from_pretrained()``)
    cache      a ``cp.PromptCache`` to embed through (pool phrases and queries); a private one by default
    tokenizer  a ``cp.ClipTokenizer`` for the token budget; the bundled one by default
    """

    def __init__(self, pool: Pool = None, encoder: TextEncoder | None = None, *, cache: cp.PromptCache | None = None,
                 tokenizer: cp.ClipTokenizer | None = None, index_dtype: Literal["float32", "float16"] = "float32",
                 progress: bool = False) -> None:
        self.pool = read_pool(pool)
        self.encoder: TextEncoder = encoder if encoder is not None else cp.MiniLMEncoder.from_pretrained()
        self.cache = cache if cache is not None else cp.PromptCache()
        self.tokenizer = tokenizer if tokenizer is not None else cp.ClipTokenizer()
        vecs = self.cache.get_or_encode(self.encoder, self.pool)
        self.vectors = np.ascontiguousarray(vecs, dtype=np.float32)  # [P, D], rows L2-normalised
        self.index = cp.FlatIPIndex(self.vectors.shape[1], dtype=index_dtype)
        self.index.add(self.vectors)
        self._words = [frozenset(_stem(w) for w in content_words(p, normalized=True)) for p in self.pool]
        self._lower = [p.lower() for p in self.pool]

    def __len__(self) -> int:
        return len(self.pool)

    def __repr__(self) -> str:
        return f"PromptExpander({len(self.pool)} phrases, encoder={getattr(self.encoder, 'fingerprint', '?')!r})"

    # -- token budget -------------------------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        """CLIP tokens of ``text`` including SOT and EOT."""
        return len(self.tokenizer.encode(text)) + 2

    @staticmethod
    def compose(prompt: str, phrases: Iterable[str]) -> str:
        phrases = list(phrases)
        return prompt if not phrases else prompt + ", " + ", ".join(phrases)

    # -- expansion ----------------------------------------------------------------------------------------------
    def expand(self, raw: str, top_k: int = 5, min_score: float | None = None, max_tokens: int = 77,
               mmr: float | None = None, *, words: Sequence[str] | None = None) -> Expansion:
        """Expand one prompt (see the module docstring for the guards). Raises EmptyPromptError on empty input."""
        return self.expand_batch([raw], top_k=top_k, min_score=min_score, max_tokens=max_tokens, mmr=mmr,
                                 words=None if words is None else [words])[0]

    def expand_batch(self, raws: Iterable[str], top_k: int = 5, min_score: float | None = None, max_tokens: int = 77,
                     mmr: float | None = None, *, words: Sequence[Sequence[str] | None] | None = None,
                     candidates: int | None = None) -> list[Expansion]:
        """Expand a batch: one normalise call, one encode (through the cache), one index search.

        ``words``: per-prompt segmentations if the caller has them; ``candidates``: how many neighbours to consider
        per prompt (default ``max(8·top_k + 16, 32)``).
        """
        if isinstance(raws, str):
            raise cp.InvalidArgumentError("expand_batch: expected a list of prompts, got a str")
        raw_list = list(raws)
        if top_k < 0 or max_tokens < 2:
            raise cp.InvalidArgumentError(f"expand: need top_k >= 0 and max_tokens >= 2 (got {top_k}, {max_tokens})")
        if mmr is not None and not (0.0 <= float(mmr) <= 1.0):
            raise cp.InvalidArgumentError(f"expand: mmr must be in [0, 1], got {mmr}")
        if not raw_list:
            return []
        prompts = [cp.normalize(r) for r in raw_list]
        if top_k == 0:
            return [Expansion(p, [], p, [], self.count_tokens(p)) for p in prompts]
        q = np.ascontiguousarray(self.cache.get_or_encode(self.encoder, prompts), dtype=np.float32)
        k = min(len(self.pool), candidates or max(8 * top_k + 16, 32))
        D, I = self.index.search(q, k)
        per: Sequence[Sequence[str] | None] = words or [None] * len(prompts)
        return [self._select(p, w, d, i, top_k, min_score, max_tokens, mmr)
                for p, w, d, i in zip(prompts, per, D, I)]

    def _select(self, prompt: str, words: Sequence[str] | None, scores: NDArray[np.float32],
                ids: NDArray[np.int64], top_k: int, min_score: float | None, max_tokens: int,
                mmr: float | None) -> Expansion:
        lower = prompt.lower()
        prompt_words = {_stem(w) for w in content_words(prompt, normalized=True, words=words)}
        dropped: list[tuple[str, float, str]] = []
        cand: list[tuple[float, int]] = []  # (score, id)
        for s, i in zip(scores.tolist(), ids.tolist()):
            if i < 0:
                continue
            phrase = self.pool[i]
            if min_score is not None and s < min_score:
                dropped.append((phrase, s, "score"))
                continue
            pw = self._words[i]
            if phrase in prompt or self._lower[i] in lower or (pw and pw <= prompt_words):
                dropped.append((phrase, s, "present"))
                continue
            cand.append((s, i))

        chosen: list[tuple[float, int]] = []  # (score, id) in selection order
        covered = set(prompt_words)
        if mmr is not None and cand:
            cvec = self.vectors[[i for _, i in cand]]  # [C, D]
            rel = np.array([s for s, _ in cand], np.float32)
            max_sim = np.full(len(cand), -np.inf, np.float32)
            alive = np.ones(len(cand), bool)
            lam = float(mmr)
            while alive.any() and len(chosen) < top_k:
                red = np.where(np.isfinite(max_sim), max_sim, 0.0)
                obj = np.where(alive, lam * rel - (1.0 - lam) * red, -np.inf)
                j = int(np.argmax(obj))
                alive[j] = False
                s, i = cand[j]
                if self._words[i] and self._words[i] <= covered:
                    dropped.append((self.pool[i], s, "redundant"))
                    continue
                chosen.append((s, i))
                covered |= self._words[i]
                max_sim = np.maximum(max_sim, cvec @ cvec[j])
        else:
            for s, i in cand:
                if len(chosen) >= top_k:
                    break
                if self._words[i] and self._words[i] <= covered:
                    dropped.append((self.pool[i], s, "redundant"))
                    continue
                chosen.append((s, i))
                covered |= self._words[i]

        # Budget: best first in the text; drop the lowest-scored until the text fits max_tokens.
        chosen.sort(key=lambda t: -t[0])
        text = self.compose(prompt, (self.pool[i] for _, i in chosen))
        ntok = self.count_tokens(text)
        while chosen and ntok > max_tokens:
            s, i = chosen.pop()
            dropped.append((self.pool[i], s, "budget"))
            text = self.compose(prompt, (self.pool[i] for _, i in chosen))
            ntok = self.count_tokens(text)
        return Expansion(text, [(self.pool[i], float(s)) for s, i in chosen], prompt, dropped, ntok)
