"""Prompt-weighting syntax: A1111's parse_prompt_attention examples (each a case), strict errors naming positions,
and compel's basic syntax against compel 2.5's own parser."""
import pytest
from compel.prompt_parser import PromptParser

import clipprompt as cp
from clipprompt.weighting import parse, parse_a1111, parse_compel

# The examples of AUTOMATIC1111's modules/prompt_parser.py parse_prompt_attention docstring, with its outputs.
A1111_DOC = [
    ("normal text", [("normal text", 1.0)], True),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)], True),
    ("(unbalanced", [("unbalanced", 1.1)], False),
    ("\\(literal\\]", [("(literal]", 1.0)], True),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)], True),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [("a ", 1.0), ("house", 1.5730000000000004), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55),
      (", sun, ", 1.1), ("sky", 1.4641000000000006), (".", 1.1)], False),
]


@pytest.mark.parametrize("text,want,balanced", A1111_DOC)
def test_a1111_docstring_examples(text, want, balanced):
    assert parse_a1111(text, strict=False) == want   # exact floats, A1111's multiplication order
    if balanced:
        assert parse_a1111(text) == want
    else:
        with pytest.raises(cp.TokenizerError, match="position"):
            parse_a1111(text)


def test_a1111_more():
    assert parse_a1111("a BREAK b") == [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]
    assert parse_a1111("[[x]]") == [("x", 1 / 1.1 / 1.1)]
    assert parse_a1111("(x:0.5) \\\\ y") == [("x", 0.5), (" \\ y", 1.0)]
    assert parse_a1111("a:b (c:d)") == [("a:b ", 1.0), ("c:d", 1.1)]
    assert parse_a1111("") == [("", 1.0)]
    assert parse_a1111("(a [b) c]", strict=False) == [("a ", 1.1), ("b", 1.0), (" c", 1 / 1.1)]
    assert parse_a1111("a ) b", strict=False) == [("a ) b", 1.0)]


@pytest.mark.parametrize("text,pos", [("(unbalanced", 0), ("a ) b", 2), ("x [y:1.2)", 4), ("(a [b) c]", 5),
                                      ("ok ((x)", 3), ("w:2)", 1)])
def test_a1111_strict_errors_name_the_position(text, pos):
    with pytest.raises(cp.TokenizerError, match=f"position {pos}"):
        parse_a1111(text)


COMPEL_CASES = ["a cat++ on a mat", "a (red cat)1.3 on a mat--", "(a (b c)++ d)0.5 e",
                "photo of a dog-, (sunset)0.8, cat+ +", "a \\(literal\\) cat", "cat1.3 dog", "(a b)- c",
                "a cat++ on a mat, (blue)++ sky", "ab+c", "(x)+1.2", "dog-.", "dog--x", "dog+, cat", "a-b c",
                "dog+(cat)", "(dog) (cat)1.5", "a, (b)1.5, c", "dog!+ x", "x (y)", "(y) z", "( y )", "a  b   c",
                "dog++.", "1girl++", "(a)(b)", "a (b)0.0 c", "(dog)-1", "dog-- (cat)", "masterpiece, (best quality)1.2,"
                " 1girl, ((long hair)1.1)--, (blue eyes)+++"]


@pytest.mark.parametrize("text", COMPEL_CASES)
def test_compel_parser_equals_compel(text):
    ref = PromptParser().parse_conjunction(text).prompts[0]
    want = [(f.text, pytest.approx(f.weight, rel=1e-12)) for f in ref.children]
    assert parse_compel(text) == want


def test_compel_strict_and_dispatch():
    with pytest.raises(cp.TokenizerError, match="position 2"):
        parse_compel("a (b c")
    with pytest.raises(cp.TokenizerError, match="position 1"):
        parse_compel("a) b")
    assert parse_compel("a (b c", strict=False) == [("a b c", 1.0)]
    assert parse("x (y)", None) == [("x (y)", 1.0)]
    with pytest.raises(cp.InvalidArgumentError, match="weighting"):
        parse("x", "midjourney")
    with pytest.raises(cp.InvalidArgumentError):
        parse_a1111(b"bytes")
