"""Prompt-weighting syntax: AUTOMATIC1111's attention syntax and compel's basic syntax, parsed into
``[(text, weight), ...]`` fragments.

A1111 (``parse_a1111``), as its ``parse_prompt_attention`` reads a prompt::

    (abc)        weight x 1.1          ((abc)) x 1.21, nesting multiplies
    (abc:1.3)    weight x 1.3
    [abc]        weight / 1.1
    \\( \\) \\[ \\] \\\\   literal characters
    BREAK        ends the current 75-token chunk: the fragment ("BREAK", -1)

Adjacent fragments with equal weights are merged, and the multiplications happen in the same order as A1111's, so
weights are equal to A1111's as floats (``(((house:1.3))`` -> 1.5730000000000004).

compel (``parse_compel``), the basic syntax of compel 2.x::

    word+  word++  word-        weight 1.1**n / 0.9**n on the word before the signs
    (a few words)++             the same on a group (groups nest and multiply)
    (a few words)1.3  word1.3?  an explicit weight after a group: ``(text)1.3``
    \\( \\)                     literal parentheses

``strict=True`` (the default) raises ``TokenizerError`` naming the character position of an unbalanced bracket or a
weight with nothing to apply to. ``strict=False`` is the lenient mode: A1111's own behaviour (an unclosed ``(`` /
``[`` weights everything after it, a stray ``)`` / ``]`` is plain text); for compel, stray brackets are plain text.
"""
from __future__ import annotations

import re
from typing import Any, NoReturn

from . import _C

__all__ = ["BREAK", "parse", "parse_a1111", "parse_compel"]

BREAK = ("BREAK", -1.0)

_ROUND, _SQUARE = 1.1, 1 / 1.1
_A1111_WEIGHT = re.compile(r":([+-]?[.\d]+)\)")
_BREAK_SPLIT = re.compile(r"\s*\bBREAK\b\s*", re.S)


def _syntax_error(msg: str) -> NoReturn:
    raise _C.TokenizerError(msg)


def _merge(res: list[list[Any]]) -> list[tuple[str, float]]:
    out: list[list[Any]] = []
    for text, w in res:
        if out and out[-1][1] == w:
            out[-1][0] += text
        else:
            out.append([text, w])
    return [(t, w) for t, w in out]


def parse_a1111(text: str, *, strict: bool = True) -> list[tuple[str, float]]:
    """A1111 attention syntax -> [(text, weight)]; ("BREAK", -1.0) marks a BREAK. See the module docstring."""
    if not isinstance(text, str):
        raise _C.InvalidArgumentError(f"parse_a1111: prompt must be str, not {type(text).__name__}")
    res: list[list[Any]] = []
    opened: list[tuple[str, int, int]] = []  # (bracket, index in res where it starts, position in text)

    def scale(start: int, factor: float) -> None:
        for k in range(start, len(res)):
            res[k][1] *= factor

    def plain(s: str) -> None:
        for k, part in enumerate(_BREAK_SPLIT.split(s)):
            if k:
                res.append(list(BREAK))
            res.append([part, 1.0])

    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            # an escape: the next character literally; a lone backslash (before anything else) is dropped, as A1111
            if i + 1 < n and text[i + 1] in "()[]\\":
                res.append([text[i + 1], 1.0])
                i += 2
            else:
                res.append(["", 1.0])
                i += 1
            continue
        if c in "([":
            opened.append((c, len(res), i))
            i += 1
            continue
        m = _A1111_WEIGHT.match(text, i) if c == ":" else None
        if m is not None or c in ")]":
            want = "(" if m is not None or c == ")" else "["
            idx = next((k for k in range(len(opened) - 1, -1, -1) if opened[k][0] == want), None)
            what = repr(m.group(0)) if m is not None else repr(c)
            if idx is not None and idx != len(opened) - 1 and strict:
                b, _, p = opened[-1]
                _syntax_error(f"{what} at position {i} closes {want!r} at position {opened[idx][2]} while {b!r} "
                              f"at position {p} is still open")
            if idx is None and strict:
                _syntax_error(f"unbalanced {what} at position {i}: no {want!r} open")
            if idx is not None:
                # A1111 keeps one stack per bracket kind: a closer pairs with the last opener of its kind
                if m is not None:
                    try:
                        factor = float(m.group(1))
                    except ValueError:
                        _syntax_error(f"weight {m.group(1)!r} at position {m.start(1)} is not a number")
                    i = m.end()
                else:
                    factor = _ROUND if c == ")" else _SQUARE
                    i += 1
                scale(opened.pop(idx)[1], factor)
                continue
            if m is None:  # lenient: a stray closer is text
                plain(c)
                i += 1
                continue
        # plain text up to the next special character (':' alone is text, as A1111)
        j = i + 1
        while j < n and text[j] not in "\\()[]:":
            j += 1
        plain(text[i:j])
        i = j
    if opened and strict:
        b, _, pos = opened[-1]
        _syntax_error(f"unbalanced {b!r} at position {pos}: never closed")
    for b, start, _ in opened:
        scale(start, _ROUND if b == "(" else _SQUARE)
    if not res:
        res = [["", 1.0]]
    return _merge(res)


# -- compel --------------------------------------------------------------------------------------------------
_NUM = re.compile(r"(?:\d+\.?\d*|\.\d+)")
_SIGNS = re.compile(r"\++|-+")


def parse_compel(text: str, *, strict: bool = True) -> list[tuple[str, float]]:
    """compel's basic syntax -> [(text, weight)]: whitespace-separated words and parenthesised groups, each
    optionally followed by a ``+``/``-`` run (1.1**n / 0.9**n) or, after a group, a number. A sign run after a word
    is a weight when it has two or more signs or is not followed by a letter or digit (``a-b`` stays text). Words
    are joined with single spaces and runs of equal weight merged, as compel flattens a prompt."""
    if not isinstance(text, str):
        raise _C.InvalidArgumentError(f"parse_compel: prompt must be str, not {type(text).__name__}")
    pos, n = 0, len(text)

    def signs_weight(m: re.Match[str]) -> float:
        k = len(m.group(0))
        return 1.1 ** k if m.group(0)[0] == "+" else 0.9 ** k

    def parse_seq(depth_open: int | None) -> list[list[Any]]:
        nonlocal pos
        items: list[list[Any]] = []
        word: list[str] = []

        def flush(weight: float = 1.0) -> None:
            if word:
                items.append(["".join(word), weight])
                word.clear()

        while pos < n:
            c = text[pos]
            if c == "\\" and pos + 1 < n and text[pos + 1] in "()":
                word.append(text[pos + 1])
                pos += 2
            elif c.isspace():
                flush()
                pos += 1
            elif c == "(":
                flush()
                open_pos = pos
                pos += 1
                inner = parse_seq(open_pos)
                if pos >= n:
                    if strict:
                        _syntax_error(f"unbalanced '(' at position {open_pos}: never closed")
                    items.extend(inner)
                    continue
                pos += 1  # the ')'
                w = 1.0
                m = _SIGNS.match(text, pos) or _NUM.match(text, pos)
                if m is not None:
                    w = signs_weight(m) if m.group(0)[0] in "+-" else float(m.group(0))
                    pos = m.end()
                for it in inner:
                    it[1] *= w
                items.extend(inner)
            elif c == ")":
                if depth_open is not None:
                    flush()
                    return items
                if strict:
                    _syntax_error(f"unbalanced ')' at position {pos}: no '(' open")
                word.append(c)
                pos += 1
            elif c in "+-" and word:
                sm = _SIGNS.match(text, pos)
                assert sm is not None  # text[pos] is a sign
                nxt = text[sm.end()] if sm.end() < n else ""
                if len(sm.group(0)) >= 2 or not nxt.isalnum():
                    pos = sm.end()
                    flush(signs_weight(sm))
                else:
                    word.append(sm.group(0))
                    pos = sm.end()
            else:
                word.append(c)
                pos += 1
        flush()
        return items

    items = parse_seq(None)
    out: list[list[Any]] = []
    for t, w in items:
        if out and out[-1][1] == w:
            out[-1][0] += " " + t
        else:
            out.append([t, w])
    return [(t, w) for t, w in out] or [("", 1.0)]


def parse(text: str, syntax: str | None, *, strict: bool = True) -> list[tuple[str, float]]:
    """Dispatch: syntax "a1111" | "compel" | None (the whole prompt at weight 1)."""
    if syntax is None:
        return [(text, 1.0)]
    if syntax == "a1111":
        return parse_a1111(text, strict=strict)
    if syntax == "compel":
        return parse_compel(text, strict=strict)
    raise _C.InvalidArgumentError(f"weighting must be 'a1111', 'compel' or None, not {syntax!r}")
