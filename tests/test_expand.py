"""PromptExpander: guards (token budget, dedup, score floor, MMR, empty input), scores, batch == single, pool input."""
import functools

import _prompt_helpers as helpers
import numpy as np
import pytest
from conftest import read_lines

import clipprompt as cp


@pytest.fixture(scope="module")
def enc():
    return helpers.minilm()


@pytest.fixture(scope="module")
def pool():
    return helpers.small_pool()


@pytest.fixture(scope="module")
def exp(enc, pool):
    return helpers.small_expander()


@pytest.fixture(scope="module")
def captions():
    return read_lines("captions/f30k_dev_caps.txt")[:60:3]


@functools.lru_cache(maxsize=1)
def _oracle():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def _oracle_tokens(text):
    # open_clip's tokenizer (the reference) counts the same CLIP tokens, SOT/EOT included.
    return len(_oracle().encode(text)) + 2


def test_pool_embedded_once_through_cache(enc, pool):
    pool = pool[:60]
    cache = cp.PromptCache()
    e1 = cp.PromptExpander(pool, enc, cache=cache)
    s1 = cache.stats()
    assert s1["misses"] == len(e1.pool) and len(e1) == len(pool)
    e2 = cp.PromptExpander(pool, enc, cache=cache)  # same cache: the pool is not encoded again
    s2 = cache.stats()
    assert s2["misses"] == s1["misses"] and s2["hits"] - s1["hits"] == len(pool)
    np.testing.assert_array_equal(e1.vectors, e2.vectors)
    np.testing.assert_allclose(e1.vectors[:20], enc.encode(e1.pool[:20]), atol=1e-5)


def test_scores_are_cosines_and_sorted(exp, enc):
    e = exp.expand("summer dress for a beach party", top_k=5)
    assert 1 <= len(e.added) <= 5
    scores = [s for _, s in e.added]
    assert scores == sorted(scores, reverse=True)
    q = enc.encode([e.prompt])[0]
    for phrase, s in e.added:
        assert s == pytest.approx(float(enc.encode([phrase])[0] @ q), abs=1e-4)
    assert e.text == e.prompt + ", " + ", ".join(p for p, _ in e.added)
    assert str(e) == e.text


def test_empty_prompt(exp):
    for bad in ["", "   ", "\u3000\n"]:
        with pytest.raises(cp.EmptyPromptError):
            exp.expand(bad)
    assert exp.expand_batch([]) == []
    with pytest.raises(cp.InvalidArgumentError):
        exp.expand_batch("a str is not a batch")


@pytest.mark.parametrize("budget", [77, 32, 20, 12])
def test_token_budget(exp, captions, budget):
    outs = exp.expand_batch(captions, top_k=8, max_tokens=budget)
    for e in outs:
        n = _oracle_tokens(e.text)
        assert e.tokens == n
        if e.added:
            assert n <= budget, (budget, e.text)
        else:
            assert e.text == e.prompt
        over = [s for _, s, why in e.dropped if why == "budget"]
        kept = [s for _, s in e.added]
        # lowest-scored phrases go first
        if over and kept:
            assert min(kept) >= max(over)
    # with a tight budget something must actually have been dropped
    if budget <= 20:
        assert any(why == "budget" for e in outs for _, _, why in e.dropped)


def test_prompt_longer_than_budget_adds_nothing(exp):
    long = "red dress " * 40
    e = exp.expand(long, max_tokens=77)
    assert e.added == [] and e.text == cp.normalize(long)


def test_dedup_exact_normalised_and_all_words(exp):
    target = "Cat Apparel"
    assert target in exp.pool
    base = exp.expand("clothes for my cat", top_k=10)
    assert target in [p for p, _ in base.added]
    # exact
    e = exp.expand("Cat Apparel for winter", top_k=10)
    assert target not in [p for p, _ in e.added]
    assert (target, "present") in [(p, why) for p, _, why in e.dropped]
    # normalised (full-width letters, other case)
    e = exp.expand("ｃａｔ ａｐｐａｒｅｌ for winter", top_k=10)
    assert target not in [p for p, _ in e.added]
    # all words present, other order, with other words between
    e = exp.expand("apparel and coats for a cat", top_k=10)
    assert target not in [p for p, _ in e.added]
    # nothing added twice, and no added phrase's words all already covered by the prompt
    for p, _ in e.added:
        assert p.lower() not in e.prompt.lower()


def test_score_floor(exp, captions):
    for e in exp.expand_batch(captions, top_k=5, min_score=0.35):
        assert all(s >= 0.35 for _, s in e.added)
        assert all(s < 0.35 for _, s, why in e.dropped if why == "score")
    nothing = exp.expand("a dog running in the park", min_score=1.01)
    assert nothing.added == [] and nothing.text == nothing.prompt
    assert nothing.dropped and all(why in ("score",) for _, _, why in nothing.dropped)


def test_top_k(exp):
    for k in (0, 1, 3):
        e = exp.expand("women's summer dress", top_k=k)
        assert len(e.added) == k
    assert exp.expand("women's summer dress", top_k=0).text == "women's summer dress"


def test_mmr_diversifies(exp, captions):
    def max_pair(e):
        if len(e.added) < 2:
            return None
        idx = [exp.pool.index(p) for p, _ in e.added]
        v = exp.vectors[idx]
        s = v @ v.T
        np.fill_diagonal(s, -1)
        return s.max()

    plain = exp.expand_batch(captions, top_k=5)
    div = exp.expand_batch(captions, top_k=5, mmr=0.3)
    pairs = [(max_pair(a), max_pair(b)) for a, b in zip(plain, div) if max_pair(a) is not None and max_pair(b)]
    assert np.mean([b for _, b in pairs]) < np.mean([a for a, _ in pairs])
    # mmr=1 is pure relevance: the same phrases as without MMR
    same = exp.expand_batch(captions, top_k=5, mmr=1.0)
    assert [e.added for e in same] == [e.added for e in plain]
    with pytest.raises(cp.InvalidArgumentError):
        exp.expand("x", mmr=1.5)


def test_batch_equals_single(exp, captions):
    batch = exp.expand_batch(captions[:6], top_k=4, mmr=0.5, max_tokens=40)
    for c, b in zip(captions[:6], batch):
        one = exp.expand(c, top_k=4, mmr=0.5, max_tokens=40)
        assert one.text == b.text
        assert [p for p, _ in one.added] == [p for p, _ in b.added]


def test_pool_from_file(tmp_path, enc):
    f = tmp_path / "pool.txt"
    f.write_text("Rain Boots\n\nUmbrellas\nRain Boots\nＲａｉｎ　Ｃｏａｔｓ\n", encoding="utf-8")
    e = cp.PromptExpander(str(f), enc)
    assert e.pool == ["Rain Boots", "Umbrellas", "Rain Coats"]
    out = e.expand("walking in the rain", top_k=2)
    assert len(out.added) == 2
    with pytest.raises(cp.FileAccessError):
        cp.PromptExpander(str(tmp_path / "missing.txt"), enc)
    with pytest.raises(cp.InvalidArgumentError):
        cp.PromptExpander(["", "  "], enc)


def test_default_pool_is_the_shipped_taxonomy():
    from clipprompt.expand import read_pool

    pool = read_pool(None)
    assert len(pool) == len(set(pool)) >= 5500
    raw = read_lines("pool/google_product_taxonomy_en.txt")
    assert pool[:50] == raw[:50]
    assert not any("Ã" in p for p in pool)  # the Latin-1 mojibake is repaired in the shipped copy
