"""Stable Diffusion prompts: hidden states for prompts longer than CLIP's 77 tokens, and negative prompts.

SD conditions its UNet on the CLIP text tower's per-token hidden states [77, W]. Front ends (AUTOMATIC1111, ComfyUI)
handle longer prompts by cutting the token stream into 75-token windows, wrapping each in SOT ... EOT (padded to 77),
encoding every window separately and concatenating along the sequence: [B, 77·n, W]. This module does the same:

- windows break at word boundaries, never inside a word; when a window fills up, it breaks after the last
  punctuation mark (, . ; : ! ? and the CJK forms ，。、；：！？) if that leaves at most ``lookback`` tokens to carry
  over, as A1111 does with commas;
- CJK runs have no spaces, so they are cut at ``cp.segment`` word boundaries;
- a chunk's token ids are exactly ``ClipTokenizer()(chunk_text)`` (so a chunk encodes like a prompt on its own);
- prompts in a batch are padded to the same number of windows with the empty prompt's window (SOT EOT), which is
  SD's unconditional input;
- results go through a PromptCache as hidden-state entries: key (encoder fingerprint, prompt), kind
  ``hidden:<layer>:chunked``, value = the prompt's [77·n, W] array.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

import clipprompt as cp

from .words import CJK_CHAR

if TYPE_CHECKING:
    from .protocols import HiddenStateEncoder

__all__ = [
    "EOT",
    "NEGATIVE_PRESETS",
    "SOT",
    "chunk_ids",
    "chunk_prompt",
    "chunked_hidden_states",
    "encode_pair",
    "negative_prompt",
]

SOT, EOT = 49406, 49407
CONTEXT = 77
WINDOW = CONTEXT - 2

_PUNCT = ",.;:!?，。、；：！？"
_BREAK_AFTER = re.compile(r"[^" + re.escape(_PUNCT) + r"]*[" + re.escape(_PUNCT) + r"]+|[^" + re.escape(_PUNCT) + r"]+")
_CJK_RUN = re.compile(CJK_CHAR.pattern + "+")


def _units(text: str, lang: str) -> list[tuple[str, str]]:
    """(separator, unit) pieces whose concatenation is ``text`` with whitespace collapsed to single spaces."""
    out: list[tuple[str, str]] = []
    for wi, word in enumerate(text.split()):
        sep = " " if wi else ""
        for piece in _BREAK_AFTER.findall(word):
            # Within a piece, cut CJK runs at segmenter word boundaries (no spaces to cut at).
            pos = 0
            for m in _CJK_RUN.finditer(piece):
                if m.start() > pos:
                    out.append((sep, piece[pos:m.start()]))
                    sep = ""
                for seg in cp.segment(m.group(0), lang=lang):
                    out.append((sep, seg))
                    sep = ""
                pos = m.end()
            if pos < len(piece):
                out.append((sep, piece[pos:]))
            sep = ""
    return out


def _join(units: Iterable[tuple[str, str]]) -> str:
    return "".join(s + u for s, u in units).strip()


def chunk_prompt(text: str, tokenizer: cp.ClipTokenizer | None = None, *, window: int = WINDOW, lookback: int = 20,
                 lang: str = "auto") -> list[str]:
    """Split a prompt into chunk texts of at most ``window`` CLIP tokens each (see the module docstring).

    Returns ``[""]`` for an empty prompt (SD's unconditional input).
    """
    tok = tokenizer if tokenizer is not None else cp.ClipTokenizer()
    if window < 1:
        raise cp.InvalidArgumentError(f"chunk_prompt: window must be >= 1, got {window}")
    text = " ".join(text.split())
    if not text:
        return [""]

    def ntok(units: Sequence[tuple[str, str]]) -> int:
        return len(tok.encode(_join(units))) if units else 0

    if ntok([("", text)]) <= window:
        return [text]
    units: list[tuple[str, str]] = []
    for sep, u in _units(text, lang):
        if len(tok.encode(u)) > window:  # one unbreakable unit longer than a window: fall back to characters
            units += [(sep if i == 0 else "", ch) for i, ch in enumerate(u)]
        else:
            units.append((sep, u))
    chunks: list[str] = []
    cur: list[tuple[str, str]] = []
    for unit in units:
        if ntok([*cur, unit]) <= window:
            cur.append(unit)
            continue
        # Prefer to break after the last punctuation if that carries over at most `lookback` tokens.
        cut = len(cur)
        for j in range(len(cur) - 1, 0, -1):
            if cur[j - 1][1][-1] in _PUNCT:
                if ntok(cur[j:]) <= lookback:
                    cut = j
                break
        chunks.append(_join(cur[:cut]))
        cur = [*cur[cut:], unit]
        cur[0] = ("", cur[0][1])
        while ntok(cur) > window:  # the carried tail plus the unit may still overflow: flush the tail
            chunks.append(_join(cur[:-1]))
            cur = [("", unit[1])]
    if cur:
        chunks.append(_join(cur))
    return chunks


def chunk_ids(text: str, tokenizer: cp.ClipTokenizer | None = None, *, window: int = WINDOW, lookback: int = 20,
              lang: str = "auto") -> NDArray[np.int32]:
    """Token ids of each chunk, int32 [n, 77]: SOT, ≤75 ids, EOT, zero padding (ClipTokenizer's layout)."""
    tok = tokenizer if tokenizer is not None else cp.ClipTokenizer()
    chunks = chunk_prompt(text, tok, window=window, lookback=lookback, lang=lang)
    out = np.zeros((len(chunks), window + 2), np.int32)
    for r, c in enumerate(chunks):
        ids = [SOT] + (list(tok.encode(c)) if c else []) + [EOT]
        out[r, :len(ids)] = ids
    return out


def _kind(layer: int) -> str:
    return f"hidden:{layer}:chunked"


def chunked_hidden_states(encoder: HiddenStateEncoder, texts: str | Iterable[str], layer: int = -1, *,
                          tokenizer: cp.ClipTokenizer | None = None, cache: cp.PromptCache | None = None,
                          lang: str = "auto", window: int = WINDOW, pad_to: int | None = None) -> NDArray[np.float32]:
    """Hidden states of arbitrarily long prompts, float32 [B, 77·n, W] (n = most windows in the batch, or
    ``pad_to`` if larger). Window ``i`` of prompt ``b`` equals ``encoder.hidden_states([chunk_i], layer)[0]``.

    ``cache``: a PromptCache; each prompt's [77·n_b, W] array (before batch padding) is one entry.
    """
    batch = [texts] if isinstance(texts, str) else list(texts)
    tok = tokenizer if tokenizer is not None else cp.ClipTokenizer()
    ctx = window + 2
    fp, kind = encoder.fingerprint, _kind(layer)
    per_prompt: list[NDArray[np.float32] | None] = [None] * len(batch)
    if cache is not None:
        for b, t in enumerate(batch):
            v = cache.get(fp, t, kind=kind)
            if v is not None:
                per_prompt[b] = np.asarray(v, np.float32).reshape(-1, ctx, encoder.width)
    todo = [b for b, v in enumerate(per_prompt) if v is None]
    if todo:
        ids = [chunk_ids(batch[b], tok, window=window, lang=lang) for b in todo]
        hs = np.asarray(encoder.hidden_states(np.concatenate(ids), layer=layer), np.float32)  # [sum n, 77, W]
        pos = 0
        for b, row in zip(todo, ids):
            block = hs[pos:pos + len(row)]
            per_prompt[b] = block
            pos += len(row)
            if cache is not None:
                cache.put(fp, batch[b], block.reshape(-1, block.shape[-1]), kind=kind)
    done = [v for v in per_prompt if v is not None]  # every prompt now (cached or just computed)
    n = max([len(v) for v in done] + [pad_to or 0])
    width = done[0].shape[-1] if done else encoder.width
    out = np.empty((len(batch), n * ctx, width), np.float32)
    pad = None
    for b, v in enumerate(done):
        out[b, :len(v) * ctx] = v.reshape(-1, width)
        if len(v) < n:
            if pad is None:
                empty = np.zeros((1, ctx), np.int32)
                empty[0, :2] = (SOT, EOT)
                pad = np.asarray(encoder.hidden_states(empty, layer=layer), np.float32)[0]
            out[b, len(v) * ctx:] = np.tile(pad, (n - len(v), 1))
    return out


# Common negative-prompt vocabularies (the terms SD users put in the negative box), grouped so they compose.
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


def negative_prompt(preset: str | Iterable[str] | None = "default", *, extra: Iterable[str] = (),
                    positive: str | None = None, exclude: Iterable[str] = ()) -> str:
    """A negative prompt from presets (a name or list of names in NEGATIVE_PRESETS) plus ``extra`` terms,
    de-duplicated in order; terms that appear in the ``positive`` prompt or in ``exclude`` are left out (a prompt
    asking for "a watercolor painting" must not get "painting" as a negative)."""
    names = [preset] if isinstance(preset, str) else list(preset or [])
    terms: list[str] = []
    for name in names:
        if name not in NEGATIVE_PRESETS:
            raise cp.InvalidArgumentError(f"negative_prompt: unknown preset {name!r}; known: "
                                          f"{', '.join(sorted(NEGATIVE_PRESETS))}")
        terms += NEGATIVE_PRESETS[name]
    terms += [t.strip() for t in extra if t.strip()]
    pos = " ".join(cp.normalize(positive, lowercase=True).split()) if positive and positive.strip() else ""
    skip = {e.strip().lower() for e in exclude}
    out: list[str] = []
    seen: set[str] = set()
    for t in terms:
        key = t.lower()
        if key in seen or key in skip or (pos and re.search(r"(?<!\w)" + re.escape(key) + r"(?!\w)", pos)):
            continue
        seen.add(key)
        out.append(t)
    return ", ".join(out)


def encode_pair(encoder: HiddenStateEncoder, prompt: str, negative: str | None = None, layer: int = -1, *,
                tokenizer: cp.ClipTokenizer | None = None, cache: cp.PromptCache | None = None,
                lang: str = "auto") -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """(cond, uncond) hidden states for classifier-free guidance, each [1, 77·n, W] with the same n (the shorter is
    padded with empty windows). ``negative=None`` uses ``negative_prompt(positive=prompt)``; "" is SD's plain
    unconditional input."""
    if negative is None:
        negative = negative_prompt(positive=prompt)
    tok = tokenizer if tokenizer is not None else cp.ClipTokenizer()
    n = max(len(chunk_prompt(prompt, tok, lang=lang)), len(chunk_prompt(negative, tok, lang=lang)))
    cond = chunked_hidden_states(encoder, [prompt], layer, tokenizer=tok, cache=cache, lang=lang, pad_to=n)
    uncond = chunked_hidden_states(encoder, [negative], layer, tokenizer=tok, cache=cache, lang=lang, pad_to=n)
    return cond, uncond
