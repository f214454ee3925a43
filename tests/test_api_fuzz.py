"""Property-based fuzzing of the Python binding layer (csrc/py/*.c), which the libFuzzer targets do not reach:
random text, bytes, arrays of any dtype/shape/layout and random files go through the public API. The only allowed
outcomes are a result or a documented exception (a ClipPromptError subclass, or TypeError for a wrong Python type);
under tests/run_sanitized.sh every call also runs with ASan + UBSan on the extension."""
import os
import tempfile

import numpy as np
import pytest
from hardening_util import minilm_vocab, requires, write_tiny_clip
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import clipprompt as cp

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
OK_ERRORS = (cp.ClipPromptError, TypeError)

texts = st.one_of(st.text(max_size=200), st.binary(max_size=200),
                  st.text(alphabet=st.characters(codec="utf-8"), max_size=50).map(lambda s: s * 7))


def call(fn, *a, **kw):
    try:
        return fn(*a, **kw)
    except OK_ERRORS:
        return None


@SETTINGS
@given(texts, st.booleans(), st.sampled_from(["NFC", "NFKC", "none", None, "bogus"]),
       st.sampled_from([None, "auto", "zh", "ja", "none", "xx"]))
def test_normalize_and_segment_any_input(t, lower, form, seg):
    kw = {"lowercase": lower, "segment": seg}
    if form is not None:
        kw["form"] = form
    out = call(cp.normalize, t, **kw)
    assert out is None or isinstance(out, str)
    call(cp.clip_clean, t)
    call(cp.segment, t, lang=seg or "auto")
    call(cp.normalize_batch, [t, t])
    call(cp.segment_batch, [t, "a b"])


@requires("ClipTokenizer", "WordPieceTokenizer")
@SETTINGS
@given(st.lists(texts, min_size=1, max_size=4), st.integers(-3, 100), st.booleans(),
       st.lists(st.integers(-2**31, 2**31 - 1), max_size=20))
def test_tokenizers_any_input(batch, ctx, trunc, ids):
    tok = _tok()
    out = call(tok, batch, context_length=ctx, truncate=trunc)
    if out is not None:
        assert out.shape == (len(batch), ctx) and out.dtype == np.int32
    call(tok.encode, batch[0])
    call(tok.decode, ids)
    wp = _wp()
    r = call(wp, batch, max_length=ctx)
    if r is not None:
        assert r[0].shape == r[1].shape and r[0].shape[0] == len(batch)


_cache = {}


def _tok():
    if "tok" not in _cache:
        _cache["tok"] = cp.ClipTokenizer()
    return _cache["tok"]


def _wp():
    if "wp" not in _cache:
        _cache["wp"] = cp.WordPieceTokenizer(minilm_vocab())
    return _cache["wp"]


arrays = st.one_of(
    st.builds(lambda shape, dt, fill, transpose: _arr(shape, dt, fill, transpose),  # noqa: PLW0108 (_arr is defined below)
              st.lists(st.integers(0, 6), min_size=0, max_size=3), st.sampled_from(
                  [np.float32, np.float64, np.float16, np.int32, np.int64, np.uint8, np.bool_, np.complex64, object]),
              st.sampled_from([0.5, -1.0, 0.0, np.nan, np.inf, 1e30, 7.0]), st.booleans()),
    st.just([[1.0, 2.0, 3.0, 4.0]]), st.just("abcd"), st.none())


def _arr(shape, dt, fill, transpose):
    try:
        a = np.full(shape, fill).astype(dt)
    except (ValueError, OverflowError, TypeError):
        a = np.zeros(shape, dt)
    return a.T if transpose and a.ndim == 2 else a


@requires("FlatIPIndex", "PromptCache")
@SETTINGS
@given(arrays, arrays, st.integers(-2, 8), st.sampled_from(["float32", "float16"]))
def test_index_and_cache_any_arrays(x, q, k, dtype):
    ix = cp.FlatIPIndex(4, dtype=dtype)
    ix.add(np.eye(4, dtype=np.float32))
    before = len(ix)
    added = call(ix.add, x)
    r = call(ix.search, q, k)
    if r is not None:
        D, I = r
        assert D.shape == I.shape and D.dtype == np.float32 and I.dtype == np.int64
        assert ((I >= -1) & (len(ix) + 100 > I)).all()
    call(ix.add, x, ids=np.arange(100, 100 + (len(x) if hasattr(x, "__len__") and np.ndim(x) == 2 else 1)))
    call(ix.remove_ids, np.asarray([0, -5, 10**12], np.int64))
    assert len(ix) >= before - 1 or added is not None
    c = cp.PromptCache(capacity_bytes=4096)
    call(c.put, "fp", "t", x)
    got = c.get("fp", "t")
    assert got is None or np.isfinite(got).all()


@requires("FlatIPIndex", "PromptCache", "ClipTextEncoder")
@SETTINGS
@given(st.binary(max_size=300), st.sampled_from(["index", "cache", "weights"]))
def test_loaders_any_bytes(data, kind):
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "f")
        with open(p, "wb") as f:
            f.write(data)
        if kind == "index":
            call(cp.FlatIPIndex.load, p)
        elif kind == "cache":
            call(cp.PromptCache.load, p)
        else:
            call(cp.ClipTextEncoder.from_pretrained, p)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return cp.ClipTextEncoder.from_pretrained(write_tiny_clip(str(tmp_path_factory.mktemp("c"))))


@requires("ClipTextEncoder")
@SETTINGS
@given(st.one_of(st.lists(texts, max_size=3), arrays, st.lists(st.lists(st.integers(-5, 50000), max_size=80),
                                                              min_size=1, max_size=3)),
       st.integers(-4, 3))
def test_encoder_any_input(tiny_clip, x, layer):
    v = call(tiny_clip.encode, x)
    if v is not None:
        assert v.ndim == 2 and v.shape[1] == tiny_clip.dim
    call(tiny_clip.hidden_states, x, layer=layer)
