"""Prompt strategies: what text a user's prompt becomes before it is encoded.

Every strategy maps a batch of (already normalised) prompts to, per prompt, a list of texts to encode; the prompt's
vector is the mean of those texts' L2-normalised embeddings, renormalised (for one text that is just its embedding).
That single rule covers the four strategies the pipeline and the evaluation compare:

- ``raw``        the prompt as given (after normalisation);
- ``keywords``   content words only, what people type into a search box (stopwords from ``data/stopwords_*.txt``);
- ``templates``  CLIP's zero-shot templates ("a photo of a {}.") with template ensembling, as in the CLIP paper;
- ``expand``     the prompt plus related phrases from a pool (:class:`clipprompt.expand.PromptExpander`).

The word helpers (``content_words``, ``keywords``, ``stopwords``) live in :mod:`clipprompt.words`, below both this
module and the expander; they are re-exported here.
"""
from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

import clipprompt as cp

from .words import content_words, data_text, keywords, stopwords

if TYPE_CHECKING:
    from .expand import Expansion, PromptExpander
    from .protocols import TextEncoder

Words = Sequence[Sequence[str] | None]  # per prompt: its segmentation (cp.segment output), or None

__all__ = [
    "STRATEGIES",
    "ExpandStrategy",
    "KeywordStrategy",
    "RawStrategy",
    "Strategy",
    "TemplateStrategy",
    "content_words",
    "encode_texts",
    "fill_templates",
    "get_strategy",
    "keywords",
    "pool_vectors",
    "stopwords",
    "template_names",
    "templates",
]

STRATEGIES = ("raw", "keywords", "templates", "expand")


@functools.cache
def _template_data() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(data_text("clip_templates.json"))
    return data


def template_names() -> list[str]:
    """Names accepted by :func:`templates`: CLIP's 26 prompts.md datasets plus "imagenet" (80) and "imagenet7"."""
    return sorted(_template_data()["templates"])


def templates(name: str = "imagenet") -> list[str]:
    """CLIP's published zero-shot templates for a dataset, each with one ``{}`` ("a photo of a {}.").

    Names are case-insensitive and ignore non-alphanumerics ("Food-101" == "food101"). "imagenet" is the 80-template
    list from CLIP's ImageNet notebook, "imagenet7" its 7-template subset.
    """
    key = re.sub(r"[^0-9a-z]", "", str(name).lower())
    data = _template_data()["templates"]
    if key not in data:
        raise cp.InvalidArgumentError(f"templates: unknown template set {name!r}; known: {', '.join(sorted(data))}")
    return list(data[key])


def fill_templates(prompt: str, tmpl: Iterable[str]) -> list[str]:
    """``[t.replace("{}", prompt) for t in tmpl]`` (``replace``, so braces inside the prompt are safe)."""
    return [t.replace("{}", prompt) for t in tmpl]


def encode_texts(encoder: TextEncoder, texts: list[str], cache: cp.PromptCache | None = None, *,
                 batch_size: int | None = None, progress: bool = False) -> NDArray[np.float32]:
    """L2-normalised float32 embeddings [len(texts), D], through ``cache`` when given (misses encoded in one batch)."""
    if not texts:
        return np.zeros((0, encoder.dim), np.float32)
    if cache is not None:
        vecs = cache.get_or_encode(encoder, list(texts))
    else:
        if batch_size:
            vecs = encoder.encode(list(texts), normalize=True, progress=progress, batch_size=batch_size)
        else:
            vecs = encoder.encode(list(texts), normalize=True, progress=progress)
    return np.ascontiguousarray(vecs, dtype=np.float32)


def pool_vectors(vecs: ArrayLike, counts: ArrayLike) -> NDArray[np.float32]:
    """Mean of normalised rows per group (``counts[i]`` consecutive rows each), renormalised: template ensembling."""
    rows = np.asarray(vecs, np.float32)
    n = np.asarray(counts, np.int64)
    if np.all(n == 1):
        return rows
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    unit = rows / np.maximum(norms, 1e-12)
    starts = np.concatenate([[0], np.cumsum(n)[:-1]])
    sums = np.add.reduceat(unit, starts, axis=0) if len(unit) else unit
    out: NDArray[np.float32] = (sums / n[:, None]).astype(np.float32)
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out


class Strategy:
    """Maps normalised prompts to the texts to encode (one list per prompt). ``needs_words``: wants segmentation."""

    name = "base"
    needs_words = False

    def texts(self, prompts: list[str], words: Words | None = None) -> list[list[str]]:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class RawStrategy(Strategy):
    """The prompt as given: the upper bound when the prompt is a full caption."""

    name = "raw"

    def texts(self, prompts: list[str], words: Words | None = None) -> list[list[str]]:
        return [[p] for p in prompts]


class KeywordStrategy(Strategy):
    """Content words only, joined by spaces (what users type)."""

    name = "keywords"
    needs_words = True

    def texts(self, prompts: list[str], words: Words | None = None) -> list[list[str]]:
        per = words or [None] * len(prompts)
        return [[keywords(p, normalized=True, words=w)] for p, w in zip(prompts, per)]


class TemplateStrategy(Strategy):
    """Each prompt placed in every template of a CLIP set, ensembled (mean of normalised embeddings, renormalised).

    ``keywords=True`` fills the templates with the keyword form of the prompt instead of the prompt itself.
    """

    name = "templates"

    def __init__(self, template: str | list[str] = "imagenet", keywords: bool = False) -> None:
        self.template = template
        self.tmpl = templates(template) if isinstance(template, str) else list(template)
        if not self.tmpl or any("{}" not in t for t in self.tmpl):
            raise cp.InvalidArgumentError("TemplateStrategy: every template needs one '{}'")
        self.keywords = keywords
        self.needs_words = keywords

    def texts(self, prompts: list[str], words: Words | None = None) -> list[list[str]]:
        per = words or [None] * len(prompts)
        out = []
        for p, w in zip(prompts, per):
            fill = keywords(p, normalized=True, words=w) if self.keywords else p
            out.append(fill_templates(fill, self.tmpl))
        return out

    def __repr__(self) -> str:
        name = self.template if isinstance(self.template, str) else f"{len(self.tmpl)} templates"
        return f"TemplateStrategy({name!r}, keywords={self.keywords})"


class ExpandStrategy(Strategy):
    """The prompt grown with related pool phrases by a :class:`~clipprompt.expand.PromptExpander`."""

    name = "expand"

    def __init__(self, expander: PromptExpander, **expand_kwargs: Any) -> None:
        self.expander = expander
        self.expand_kwargs = expand_kwargs
        self.last: list[Expansion] = []  # the Expansion objects of the last batch (for inspection)

    def texts(self, prompts: list[str], words: Words | None = None) -> list[list[str]]:
        self.last = self.expander.expand_batch(prompts, words=words, **self.expand_kwargs)
        return [[e.text] for e in self.last]

    def __repr__(self) -> str:
        return f"ExpandStrategy({self.expander!r}, {self.expand_kwargs})"


def get_strategy(strategy: str | Strategy, *, expander: PromptExpander | None = None,
                 template: str | list[str] = "imagenet", **expand_kwargs: Any) -> Strategy:
    """A Strategy from a name in STRATEGIES (or a Strategy, returned as is)."""
    if isinstance(strategy, Strategy):
        return strategy
    if strategy == "raw":
        return RawStrategy()
    if strategy == "keywords":
        return KeywordStrategy()
    if strategy == "templates":
        return TemplateStrategy(template)
    if strategy == "expand":
        if expander is None:
            from .expand import PromptExpander

            expander = PromptExpander(None)
        return ExpandStrategy(expander, **expand_kwargs)
    raise cp.InvalidArgumentError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
