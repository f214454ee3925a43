"""8 Python threads hammer shared clipprompt objects; every result must equal the serial run's, and every run must
finish within a bounded time (a deadlock fails the test instead of hanging it: see hardening_util.run_threads).

Text: normalize / normalize_batch / clip_clean / segment / segment_batch / ClipTokenizer / WordPieceTokenizer.
Models: ClipTextEncoder (tiny random tower, real vocabulary) and MiniLMEncoder (the bundled all-MiniLM-L6-v2; few
calls: it is the slow one on a 2-core machine).
Memory: PromptCache.get / put / get_or_encode / save and FlatIPIndex.add / search / reconstruct / save, with one
object shared by all threads; saved files must load back as consistent snapshots."""
import random

import numpy as np
import pytest
from conftest import read_lines, read_stsb
from hardening_util import minilm_vocab, requires, run_threads, write_tiny_clip

import clipprompt as cp

N_THREADS = 8


@pytest.fixture(scope="module")
def texts():
    rng = random.Random(8)
    en = rng.sample(read_lines("captions/coco_dev_caps.txt"), 40)
    zh = [a for a, _, _ in rng.sample(read_stsb("zh"), 20)]
    ja = [a for a, _, _ in rng.sample(read_stsb("ja"), 20)]
    extra = ["ＦＵＬＬ　ＷＩＤＴＨ &amp; ﬁne", "shirt白色 size L", "a " + "very " * 120 + "long prompt"]
    return en + zh + ja + extra


def test_normalize_segment_from_8_threads_equal_serial(texts):
    exp_norm = [cp.normalize(t) for t in texts]
    exp_low = [cp.normalize(t, lowercase=True) for t in texts]
    exp_clean = [cp.clip_clean(t) for t in texts]
    exp_seg = [cp.segment(t) for t in texts]
    exp_join = [cp.normalize(t, segment="auto") for t in texts]

    def hammer(i):
        rng = random.Random(i)
        for _ in range(6):
            order = list(range(len(texts)))
            rng.shuffle(order)
            for k in order[:25]:
                t = texts[k]
                assert cp.normalize(t) == exp_norm[k]
                assert cp.normalize(t, lowercase=True) == exp_low[k]
                assert cp.clip_clean(t) == exp_clean[k]
                assert cp.segment(t) == exp_seg[k]
                assert cp.normalize(t, segment="auto") == exp_join[k]
            assert cp.normalize_batch(texts) == exp_norm
            assert cp.segment_batch(texts) == exp_seg

    run_threads(hammer, N_THREADS)


@requires("ClipTokenizer", "WordPieceTokenizer")
def test_tokenizers_from_8_threads_equal_serial(texts):
    tok = cp.ClipTokenizer()
    wp = cp.WordPieceTokenizer(minilm_vocab())
    exp_tok = tok(texts)
    exp_wp = wp(texts, max_length=64)
    exp_single_tok = [tok.encode(t) for t in texts]
    exp_single_wp = [wp([t], max_length=64)[0] for t in texts]

    def hammer(i):
        rng = random.Random(i)
        for _ in range(6):
            for k in rng.sample(range(len(texts)), 25):
                assert tok.encode(texts[k]) == exp_single_tok[k]
                assert np.array_equal(wp([texts[k]], max_length=64)[0], exp_single_wp[k])
            assert np.array_equal(tok(texts), exp_tok)
            ids, mask = wp(texts, max_length=64)
            assert np.array_equal(ids, exp_wp[0]) and np.array_equal(mask, exp_wp[1])

    run_threads(hammer, N_THREADS)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return cp.ClipTextEncoder.from_pretrained(write_tiny_clip(str(tmp_path_factory.mktemp("tinyclip"))))


@pytest.fixture(scope="module")
def mini():
    return cp.MiniLMEncoder.from_pretrained()


@requires("ClipTextEncoder", "MiniLMEncoder", "ClipTokenizer", "WordPieceTokenizer")
def test_encoders_from_8_threads_equal_serial(texts, clip, mini):
    sub = texts[:24]
    exp_clip = clip.encode(sub)
    exp_clip_single = [clip.encode([t]) for t in sub[:8]]
    exp_hidden = clip.hidden_states(sub[:4], layer=-2)
    exp_mini = mini.encode(sub[:8])
    exp_mini_single = [mini.encode([t]) for t in sub[:8]]

    def hammer(i):
        for rep in range(2):
            k = (i + rep) % 8
            np.testing.assert_array_equal(clip.encode(sub), exp_clip)
            np.testing.assert_array_equal(clip.hidden_states(sub[:4], layer=-2), exp_hidden)
            np.testing.assert_array_equal(clip.encode([sub[k]]), exp_clip_single[k])
        np.testing.assert_array_equal(mini.encode(sub[:8]), exp_mini)
        np.testing.assert_array_equal(mini.encode([sub[i]]), exp_mini_single[i])

    run_threads(hammer, N_THREADS)


class CountingEncoder:
    """Wraps an encoder: counts the texts it is asked to encode (get_or_encode must only send misses)."""

    def __init__(self, enc):
        self.enc, self.fingerprint, self.calls, self.texts = enc, enc.fingerprint, 0, 0

    def encode(self, texts, **kw):
        self.calls += 1
        self.texts += len(texts)
        return self.enc.encode(texts, **kw)


@requires("ClipTextEncoder", "PromptCache", "ClipTokenizer")
def test_cache_from_8_threads_equal_serial(texts, clip, tmp_path):
    sub = texts[:48]
    expected = {t: clip.encode([t])[0] for t in sub}
    # room for about half the entries: get_or_encode runs with evictions happening under it
    cost = max(cp.PromptCache.entry_cost(clip.fingerprint, t, (clip.dim,)) for t in sub)
    cache = cp.PromptCache(capacity_bytes=int(cost * 24))
    enc = CountingEncoder(clip)

    def hammer(i):
        rng = random.Random(100 + i)
        for rep in range(12):
            batch = rng.sample(sub, 6)
            out = cache.get_or_encode(enc, batch)
            for t, row in zip(batch, out):
                np.testing.assert_allclose(row, expected[t], rtol=0, atol=2e-6)
            t = rng.choice(sub)
            got = cache.get(clip.fingerprint, t)
            if got is not None:
                np.testing.assert_allclose(got, expected[t], rtol=0, atol=2e-6)
            cache.put("other-fp", t, expected[t])
            if rep % 4 == i % 4:
                p = str(tmp_path / f"cache_{i}_{rep}.cpc")
                cache.save(p)
                snap = cp.PromptCache.load(p)
                for fp, text, *_ in snap.keys():  # noqa: SIM118 (a PromptCache is not iterable)
                    np.testing.assert_allclose(snap.get(fp, text), expected[text], rtol=0, atol=2e-6)

    run_threads(hammer, N_THREADS)
    st = cache.stats()
    assert st["bytes"] <= cache.capacity_bytes and st["entries"] == len(cache)
    assert st["hits"] > 0 and st["evictions"] > 0


@requires("FlatIPIndex")
def test_index_from_8_threads_equal_serial(tmp_path):
    d, per_thread, chunk = 64, 400, 50
    rng = np.random.default_rng(7)
    data = rng.standard_normal((N_THREADS, per_thread, d)).astype(np.float32)
    ids = (np.arange(N_THREADS)[:, None] * 10_000 + np.arange(per_thread)[None, :]).astype(np.int64)
    queries = rng.standard_normal((16, d)).astype(np.float32)
    index = cp.FlatIPIndex(d)

    def hammer(i):
        r = np.random.default_rng(i)
        for s in range(0, per_thread, chunk):
            index.add(data[i, s:s + chunk], ids=ids[i, s:s + chunk])
            q = queries[r.integers(0, len(queries), 3)]
            D, I = index.search(q, 5)
            assert (I >= 0).all()  # at least this thread's rows are in
            assert (np.diff(D, axis=1) <= 1e-6).all()
            # each returned id is a stored row: its score equals q . row
            rows = np.stack([index.reconstruct(int(x)) for x in I[0]])
            np.testing.assert_allclose(rows @ q[0], D[0], rtol=1e-5, atol=1e-4)
            if s % 200 == 0:
                p = str(tmp_path / f"ix_{i}_{s}.cpi")
                index.save(p)
                snap = cp.FlatIPIndex.load(p)
                got = snap.ids
                flat = {int(k): (a, b) for a in range(N_THREADS) for b, k in enumerate(ids[a])}
                for k in got[:: max(1, len(got) // 20)]:
                    a, b = flat[int(k)]
                    np.testing.assert_array_equal(snap.reconstruct(int(k)), data[a, b])

    run_threads(hammer, N_THREADS)
    assert len(index) == N_THREADS * per_thread
    allx, allid = data.reshape(-1, d), ids.reshape(-1)
    D, I = index.search(queries, 10)
    ref = queries @ allx.T
    order = np.argsort(-ref, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(I, allid[order])
    np.testing.assert_allclose(D, np.take_along_axis(ref, order, 1), rtol=1e-5, atol=1e-4)
    serial = cp.FlatIPIndex(d)
    serial.add(allx, ids=allid)
    Ds, Is = serial.search(queries, 10)
    np.testing.assert_array_equal(I, Is)
    np.testing.assert_allclose(D, Ds, rtol=1e-6, atol=1e-6)
