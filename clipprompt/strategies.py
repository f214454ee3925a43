"""Prompt strategies: what text a user's prompt becomes before it is encoded.

Every strategy maps a batch of (already normalised) prompts to, per prompt, a list of texts to encode; the prompt's
vector is the mean of those texts' L2-normalised embeddings, renormalised (for one text that is just its embedding).
That single rule covers the four strategies the pipeline and the evaluation compare:

- ``raw``        the prompt as given (after normalisation);
- ``keywords``   content words only, what people type into a search box (stopwords from ``data/stopwords_*.txt``);
- ``templates``  CLIP's zero-shot templates ("a photo of a {}.") with template ensembling, as in the CLIP paper;
- ``expand``     the prompt plus related phrases from a pool (:class:`clipprompt.expand.PromptExpander`).

Text helpers here (``content_words``, ``keywords``, ``templates``) are also used by the expander's guards.
"""
from __future__ import annotations

import functools
import json
import re
from importlib import resources

import numpy as np

import clipprompt as cp

__all__ = [
    "content_words", "keywords", "stopwords", "templates", "template_names", "fill_templates", "pool_vectors",
    "encode_texts", "Strategy", "RawStrategy", "KeywordStrategy", "TemplateStrategy", "ExpandStrategy",
    "get_strategy", "STRATEGIES", "EXPAND_DEFAULTS",
]

STRATEGIES = ("raw", "keywords", "templates", "expand")

# The pipeline's expand settings, chosen by benchmarks/eval_strategies.py on COCO and Flickr30K dev (MiniLM, shipped
# taxonomy pool; benchmarks/RESULTS.md, "Expansion that does not hurt"): at most 3 phrases, each with cosine >= 0.55
# to the prompt, blended in embedding space with the prompt at weight 0.9. R@1 = keywords on both (56.7 / 74.3 vs
# 56.7 / 74.2); string concatenation and lower floors lost 1-12 points.
EXPAND_DEFAULTS = {"top_k": 3, "min_score": 0.55, "blend": 0.9}

# A word: letters/digits, with inner apostrophes or hyphens ("t-shirt", "men's"). Applied to each segment.
_WORD = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def _data_text(name: str) -> str:
    return resources.files("clipprompt").joinpath("data", name).read_text(encoding="utf-8")


@functools.lru_cache(maxsize=None)
def stopwords() -> frozenset:
    """The shipped stopword set (English + Chinese function words), lower case."""
    words = set()
    for name in ("stopwords_en.txt", "stopwords_zh.txt"):
        for line in _data_text(name).splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                words.add(line)
    return frozenset(words)


def _segments(text: str, lang: str) -> list[str]:
    # Whitespace split is exact for space-delimited scripts; CJK runs need the segmenter (C, cp.segment).
    if _CJK.search(text) is None:
        return text.split()
    return cp.segment(text, lang=lang)


def content_words(text: str, *, lang: str = "auto", normalized: bool = False, words=None) -> list[str]:
    """Lower-cased content words of ``text`` in order, first occurrence only (stopwords and punctuation dropped).

    ``words``: the prompt's segmentation if already computed (``cp.segment`` output); ``normalized``: ``text`` is
    already ``cp.normalize``-d (skips the call). Raises EmptyPromptError for empty / whitespace-only text.
    """
    if not normalized:
        text = cp.normalize(text, lowercase=True)
    else:
        text = text.lower()
    segs = words if words is not None else _segments(text, lang)
    stop = stopwords()
    out, seen = [], set()
    for seg in segs:
        for w in _WORD.findall(seg.lower()):
            if w in stop or w in seen:
                continue
            seen.add(w)
            out.append(w)
    return out


def keywords(text: str, *, lang: str = "auto", normalized: bool = False, words=None) -> str:
    """The keyword prompt: content words joined by spaces ("A child holding a flowered umbrella." ->
    "child holding flowered umbrella"). Falls back to the (normalised) text when every word is a stopword."""
    ws = content_words(text, lang=lang, normalized=normalized, words=words)
    if ws:
        return " ".join(ws)
    return text if normalized else cp.normalize(text)


@functools.lru_cache(maxsize=1)
def _template_data() -> dict:
    return json.loads(_data_text("clip_templates.json"))


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


def fill_templates(prompt: str, tmpl) -> list[str]:
    """``[t.replace("{}", prompt) for t in tmpl]`` (``replace``, so braces inside the prompt are safe)."""
    return [t.replace("{}", prompt) for t in tmpl]


def encode_texts(encoder, texts: list[str], cache=None, *, batch_size=None, progress=False) -> np.ndarray:
    """L2-normalised float32 embeddings [len(texts), D], through ``cache`` when given (misses encoded in one batch)."""
    if not texts:
        return np.zeros((0, encoder.dim), np.float32)
    if cache is not None:
        vecs = cache.get_or_encode(encoder, list(texts))
    else:
        kw = {"normalize": True, "progress": progress}
        if batch_size:
            kw["batch_size"] = batch_size
        vecs = encoder.encode(list(texts), **kw)
    return np.ascontiguousarray(vecs, dtype=np.float32)


def pool_vectors(vecs: np.ndarray, counts, weights=None) -> np.ndarray:
    """Mean of normalised rows per group (``counts[i]`` consecutive rows each), renormalised: template ensembling.

    ``weights``: one weight per row (flat, aligned with ``vecs``) for a weighted mean instead (embedding blending)."""
    vecs = np.asarray(vecs, np.float32)
    counts = np.asarray(counts, np.int64)
    if np.all(counts == 1):
        return vecs
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    unit = vecs / np.maximum(norms, 1e-12)
    if weights is not None:
        unit = unit * np.asarray(weights, np.float32).reshape(-1, 1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sums = np.add.reduceat(unit, starts, axis=0) if len(unit) else unit
    out = sums / counts[:, None]
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out.astype(np.float32)


class Strategy:
    """Maps normalised prompts to the texts to encode (one list per prompt). ``needs_words``: wants segmentation."""

    name = "base"
    needs_words = False

    def texts(self, prompts: list[str], words=None) -> list[list[str]]:  # pragma: no cover - interface
        raise NotImplementedError

    def weights(self, groups: list[list[str]]):
        """Per text of the last ``texts`` call, its weight in the prompt's vector (flat); None: a plain mean."""
        return None

    def __repr__(self):
        return f"{type(self).__name__}()"


class RawStrategy(Strategy):
    """The prompt as given: the upper bound when the prompt is a full caption."""

    name = "raw"

    def texts(self, prompts, words=None):
        return [[p] for p in prompts]


class KeywordStrategy(Strategy):
    """Content words only, joined by spaces (what users type)."""

    name = "keywords"
    needs_words = True

    def texts(self, prompts, words=None):
        words = words or [None] * len(prompts)
        return [[keywords(p, normalized=True, words=w)] for p, w in zip(prompts, words)]


class TemplateStrategy(Strategy):
    """Each prompt placed in every template of a CLIP set, ensembled (mean of normalised embeddings, renormalised).

    ``keywords=True`` fills the templates with the keyword form of the prompt instead of the prompt itself.
    """

    name = "templates"

    def __init__(self, template: str | list = "imagenet7", keywords: bool = False):
        self.template = template
        self.tmpl = templates(template) if isinstance(template, str) else list(template)
        if not self.tmpl or any("{}" not in t for t in self.tmpl):
            raise cp.InvalidArgumentError("TemplateStrategy: every template needs one '{}'")
        self.keywords = keywords
        self.needs_words = keywords

    def texts(self, prompts, words=None):
        words = words or [None] * len(prompts)
        out = []
        for p, w in zip(prompts, words):
            fill = keywords(p, normalized=True, words=w) if self.keywords else p
            out.append(fill_templates(fill, self.tmpl))
        return out

    def __repr__(self):
        name = self.template if isinstance(self.template, str) else f"{len(self.tmpl)} templates"
        return f"TemplateStrategy({name!r}, keywords={self.keywords})"


class ExpandStrategy(Strategy):
    """The prompt grown with related pool phrases by a :class:`~clipprompt.expand.PromptExpander`.

    ``blend=None``: the prompt and its phrases concatenated into one text ("prompt, phrase, phrase").
    ``blend=w`` (0 < w <= 1): embedding-space blending — the prompt and each accepted phrase are encoded separately
    and the prompt's vector is ``w·prompt + (1−w)·mean(phrases)`` (normalised vectors, renormalised), the way CLIP's
    prompt ensembles average templates. A prompt with no accepted phrase is just its own embedding.
    Other keyword arguments (top_k, min_score, max_tokens, mmr) go to ``expander.expand_batch``.
    """

    name = "expand"

    def __init__(self, expander, *, blend=None, **expand_kwargs):
        if blend is not None and not (isinstance(blend, (int, float)) and 0.0 < float(blend) <= 1.0):
            raise cp.InvalidArgumentError(f"ExpandStrategy: blend must be None or in (0, 1], got {blend!r}")
        self.expander = expander
        self.blend = None if blend is None else float(blend)
        self.expand_kwargs = expand_kwargs
        self.last = []  # the Expansion objects of the last batch (for inspection)

    def texts(self, prompts, words=None):
        self.last = self.expander.expand_batch(prompts, words=words, **self.expand_kwargs)
        if self.blend is None:
            return [[e.text] for e in self.last]
        return [[e.prompt] + [p for p, _ in e.added] for e in self.last]

    def weights(self, groups):
        if self.blend is None:
            return None
        w = []
        for g in groups:
            n = len(g) - 1
            # pool_vectors divides each group's sum by its size: scale so the group's weights sum to its size.
            w += [float(len(g))] if n == 0 else [self.blend * len(g)] + [(1.0 - self.blend) * len(g) / n] * n
        return w

    def __repr__(self):
        return f"ExpandStrategy({self.expander!r}, blend={self.blend}, {self.expand_kwargs})"


def get_strategy(strategy, *, expander=None, template="imagenet7", **expand_kwargs) -> Strategy:
    """A Strategy from a name in STRATEGIES (or a Strategy, returned as is). "expand" takes EXPAND_DEFAULTS for any
    of top_k / min_score / blend not given (``blend=None``: string concatenation instead of blending)."""
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
        return ExpandStrategy(expander, **{**EXPAND_DEFAULTS, **expand_kwargs})
    raise cp.InvalidArgumentError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
