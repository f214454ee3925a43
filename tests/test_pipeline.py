"""PromptPipeline: the same vectors as calling the parts by hand, cache hits on repeats, index search, stats."""
import _prompt_helpers as helpers
import numpy as np
import pytest
from conftest import read_lines

import clipprompt as cp
from clipprompt import strategies as st

PROMPTS = [
    "A child holding a flowered umbrella and petting a yak .",
    "“Red” summer dress &amp; straw hat,   beach  ",
    "ＵＮＩＱＬＯ　ｓｈｉｒｔ　白色短袖",
    "红色连衣裙 女 夏季",
    "ﬁne art photo of a café at night",
]


@pytest.fixture(scope="module")
def enc():
    return helpers.minilm()


@pytest.fixture(scope="module")
def exp(enc):
    return helpers.small_expander()


def _unit(v):
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_raw_same_as_parts_by_hand(enc):
    pipe = cp.PromptPipeline(enc, strategy="raw")
    got = pipe.encode(PROMPTS)
    want = enc.encode([cp.normalize(p) for p in PROMPTS], normalize=True)
    assert got.dtype == np.float32 and got.shape == (len(PROMPTS), enc.dim)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_keywords_same_as_parts_by_hand(enc):
    got = cp.PromptPipeline(enc, strategy="keywords").encode(PROMPTS)
    want = enc.encode([cp.keywords(p) for p in PROMPTS])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_templates_same_as_parts_by_hand(enc):
    tmpl = cp.templates("gtsrb")
    assert len(tmpl) == 3
    got = cp.PromptPipeline(enc, strategy="templates", template="gtsrb").encode(PROMPTS[:3])
    for g, p in zip(got, PROMPTS[:3]):
        e = enc.encode([t.replace("{}", cp.normalize(p)) for t in tmpl])
        m = _unit(e).mean(0)
        np.testing.assert_allclose(g, m / np.linalg.norm(m), atol=1e-5)


def test_expand_same_as_parts_by_hand(enc, exp):
    pipe = cp.PromptPipeline(enc, expander=exp, strategy="expand", top_k=3, mmr=0.5)
    got = pipe.encode(PROMPTS)
    texts = [exp.expand(p, top_k=3, mmr=0.5).text for p in PROMPTS]
    assert [e.text for e in pipe.strategy.last] == texts
    np.testing.assert_allclose(got, enc.encode(texts), atol=1e-5)


def test_cache_hits_on_repeats(enc):
    cache = cp.PromptCache()
    pipe = cp.PromptPipeline(enc, cache=cache, strategy="raw")
    first = pipe.encode(PROMPTS)
    s = pipe.stats()
    assert s["cache_hits"] == 0 and s["cache_misses"] == len(PROMPTS) and s["hit_rate"] == 0.0
    pipe.reset_stats()
    again = pipe.encode(PROMPTS + PROMPTS[:2])
    s = pipe.stats()
    assert s["cache_hits"] == len(PROMPTS) + 2 and s["cache_misses"] == 0 and s["hit_rate"] == 1.0
    np.testing.assert_array_equal(again[: len(PROMPTS)], first)
    # without a cache nothing is counted
    nc = cp.PromptPipeline(enc, cache=False, strategy="raw")
    np.testing.assert_allclose(nc.encode(PROMPTS), first, atol=1e-6)
    assert nc.stats()["cache_hits"] == 0 and nc.cache is None


def test_search_matches_index_by_hand(enc):
    corpus = read_lines("captions/coco_dev_caps.txt")[:100]
    pipe = cp.PromptPipeline(enc, strategy="raw")
    vecs = pipe.add(corpus)
    assert len(pipe.index) == len(corpus)
    D, I = pipe.search(corpus[::10], 5)
    assert D.shape == (10, 5) and I.shape == (10, 5) and I.dtype == np.int64
    np.testing.assert_array_equal(I[:, 0], np.arange(0, 100, 10))  # each caption finds itself first
    idx = cp.FlatIPIndex(enc.dim)
    idx.add(vecs)
    D2, I2 = idx.search(vecs[::10], 5)
    np.testing.assert_array_equal(I, I2)
    np.testing.assert_allclose(D, D2, atol=1e-5)
    # ids pass through
    p2 = cp.PromptPipeline(enc, strategy="raw")
    p2.add(corpus[:5], ids=[100, 101, 102, 103, 104])
    assert p2.search(corpus[2:3], 1)[1][0, 0] == 102


def test_batches_progress_and_stats(enc, capsys):
    prompts = read_lines("captions/coco_dev_caps.txt")[:23]
    one = cp.PromptPipeline(enc, strategy="keywords").encode(prompts)
    pipe = cp.PromptPipeline(enc, strategy="keywords", batch_size=5)
    got = pipe.encode(prompts, progress=True)
    np.testing.assert_allclose(got, one, atol=1e-5)
    s = pipe.stats()
    assert s["batches"] == 5 and s["prompts"] == 23 and s["texts"] == 23 and s["strategy"] == "keywords"
    assert set(s["times"]) == {"normalize", "segment", "strategy", "encode", "index"}
    assert all(v >= 0 for v in s["times"].values()) and s["times"]["encode"] > 0
    assert "encode (keywords)" in capsys.readouterr().err  # tqdm bar
    assert "PromptPipeline(strategy='keywords'" in repr(pipe)


def test_errors(enc):
    pipe = cp.PromptPipeline(enc, strategy="raw")
    with pytest.raises(cp.IndexStateError):
        pipe.search(["x"], 3)
    with pytest.raises(cp.EmptyPromptError):
        pipe.encode(["ok", "   "])
    with pytest.raises(cp.InvalidArgumentError):
        cp.PromptPipeline(enc, strategy="nope")
    assert pipe.encode([]).shape == (0, enc.dim)
    assert pipe.encode("single prompt").shape == (1, enc.dim)
    assert isinstance(cp.PromptPipeline(enc, strategy=st.TemplateStrategy("stl10")).strategy, st.TemplateStrategy)
