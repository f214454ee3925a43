"""cp.normalize(..., segment=...): normalisation followed by CJK word segmentation (issue 7 wiring)."""
import jieba
import pytest
from conftest import read_stsb

import clipprompt as cp


def test_segment_auto_mixed():
    assert cp.normalize("shirt白色短袖", segment="auto") == " ".join(cp.segment("shirt 白色短袖"))
    out = cp.normalize("ＵＮＩＱＬＯ　ｓｈｉｒｔ　白色短袖", segment="auto")
    assert out.startswith("UNIQLO shirt ")
    assert out.split()[2:] == cp.segment("白色短袖", lang="zh")


def test_segment_none_is_plain_normalize():
    s = "“Red” summer dress &amp;amp; straw hat"
    assert cp.normalize(s, segment=None) == cp.normalize(s)
    assert cp.normalize(s, segment="auto") == cp.normalize(s)  # no CJK: words unchanged


def test_segment_matches_jieba_on_stsb_zh():
    sents = [a for a, _, _ in read_stsb("zh")[:300]]
    got = cp.normalize_batch(sents, segment="zh")
    for s, g in zip(sents, got):
        normed = cp.normalize(s)
        assert g == " ".join(w for w in jieba.lcut(normed, HMM=True) if not w.isspace())


def test_segment_errors():
    with pytest.raises(cp.InvalidArgumentError, match="klingon"):
        cp.normalize("白色", segment="klingon")
    with pytest.raises(TypeError):
        cp.normalize("白色", segment=3)
    with pytest.raises(cp.EmptyPromptError):
        cp.normalize("   ", segment="auto")
    with pytest.raises(cp.InvalidArgumentError):
        cp.normalize_batch(["白色", "短袖"], segment="xx")
