"""The one-of-each primitives of csrc/base: the hash (XXH64), the UTF-8 decoder, the string -> id map and the batch
status every `*_batch` function reports with. Oracles: python-xxhash, Python's own UTF-8 codec, a dict."""
import itertools
import os

import numpy as np
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

import clipprompt as cp
from clipprompt import _C

# ---- the hash ---------------------------------------------------------------------------------------------------

# Published XXH64 values (the xxHash reference and python-xxhash's documentation).
KNOWN_XXH64 = [
    (b"", 0, 0xEF46DB3751D8E999),
    (b"a", 0, 0xD24EC4F1A98C6E5B),
    (b"abc", 0, 0x44BC2CF5AD770999),
    (b"Nobody inspects the spammish repetition", 0, 0xFBCEA83C8A378BF1),
    (b"xxhash", 20141025, 0xB559B98D844E0635),
]


@pytest.mark.parametrize("data,seed,want", KNOWN_XXH64)
def test_hash_known_vectors(data, seed, want):
    assert _C._hash64(data, seed) == want
    assert _C._hash64_stream([data], seed) == want


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), seed=st.integers(0, 2**64 - 1), cuts=st.lists(st.integers(0, 300), max_size=6))
def test_hash_matches_xxhash_one_shot_and_streaming(data, seed, cuts):
    want = xxhash.xxh64_intdigest(data, seed)
    assert _C._hash64(data, seed) == want
    edges = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    chunks = [data[a:b] for a, b in itertools.pairwise(edges)]
    assert _C._hash64_stream(chunks, seed) == want


@settings(max_examples=200, deadline=None)
@given(key=st.integers(0, 2**64 - 1), seed=st.integers(0, 2**64 - 1))
def test_hash_u64_is_the_hash_of_its_8_bytes(key, seed):
    assert _C._hash64_u64(key, seed) == xxhash.xxh64_intdigest(key.to_bytes(8, "little"), seed)


def test_hash_every_length_around_the_stripe_edges():
    data = bytes(range(256)) * 2
    for n in range(130):
        assert _C._hash64(data[:n], 5) == xxhash.xxh64_intdigest(data[:n], 5), n


# ---- the UTF-8 decoder --------------------------------------------------------------------------------------------

OK, TRUNCATED, BAD_LEAD, BAD_CONT, OVERLONG, SURROGATE, TOO_LARGE = 0, -1, -2, -3, -4, -5, -6

# Every malformed-sequence class, each in a few forms: (bytes, the class of the first error).
MALFORMED = [
    (b"\xe2\x82", TRUNCATED), (b"\xf0\x9f\x98", TRUNCATED), (b"\xc3", TRUNCATED), (b"\xe0\xa0", TRUNCATED),
    (b"\x80", BAD_LEAD), (b"\xbf\x80", BAD_LEAD), (b"\xf8\x88\x80\x80\x80", BAD_LEAD), (b"\xff", BAD_LEAD),
    (b"\xc3\x28", BAD_CONT), (b"\xe2\x28\xa1", BAD_CONT), (b"\xe2\x82\x28", BAD_CONT), (b"\xf0\x90\x28\xbc", BAD_CONT),
    (b"\xf0\x90\x80\x28", BAD_CONT), (b"\xc3\xc3\xa9", BAD_CONT),
    (b"\xc0\xaf", OVERLONG), (b"\xc1\xbf", OVERLONG), (b"\xe0\x80\xaf", OVERLONG), (b"\xe0\x9f\xbf", OVERLONG),
    (b"\xf0\x80\x80\xaf", OVERLONG), (b"\xf0\x8f\xbf\xbf", OVERLONG),
    (b"\xed\xa0\x80", SURROGATE), (b"\xed\xbf\xbf", SURROGATE), (b"\xed\xa0\x80\xed\xb0\x80", SURROGATE),
    (b"\xf4\x90\x80\x80", TOO_LARGE), (b"\xf5\x80\x80\x80", TOO_LARGE), (b"\xf7\xbf\xbf\xbf", TOO_LARGE),
]


def python_reason(data, i, cls, length):
    """The reason CPython's codec gives for our class at data[i]."""
    if cls == TRUNCATED:
        return "unexpected end of data"
    if cls == BAD_LEAD or data[i] in (0xC0, 0xC1) or data[i] >= 0xF5:
        return "invalid start byte"
    return "invalid continuation byte"


def python_steps(data):
    """CPython's decoder, one sequence or maximal invalid subpart at a time: (offset, length, code point | reason)."""
    out, i = [], 0
    while i < len(data):
        for k in range(1, 5):
            try:
                s = data[i:i + k].decode("utf-8")
            except UnicodeDecodeError:
                continue
            if len(s) == 1:
                out.append((i, k, ord(s)))
                i += k
                break
        else:
            try:
                data[i:].decode("utf-8")
                raise AssertionError("no error where no sequence decodes")
            except UnicodeDecodeError as e:
                assert e.start == 0
                out.append((i, e.end, e.reason))
                i += e.end
    return out


def ours_as_python(data):
    return [(i, n, v if v >= 0 else python_reason(data, i, v, n)) for i, n, v in _C._utf8_decode(data)]


@pytest.mark.parametrize("bad,cls", MALFORMED)
def test_decoder_classes_against_python(bad, cls):
    data = b"a\xc3\xa9" + bad + (b"" if cls == TRUNCATED else b"z\xf0\x9f\x98\x80")  # truncation: at the end only
    steps = _C._utf8_decode(data)
    first_bad = next(s for s in steps if s[2] < 0)
    assert first_bad[0] == 3 and first_bad[2] == cls
    assert ours_as_python(data) == python_steps(data)
    assert _C._utf8_replace(data) == data.decode("utf-8", "replace").encode("utf-8")
    with pytest.raises(cp.TokenizerError, match="byte offset 3 "):
        _C._utf8_validate(data)


def test_decoder_every_code_point_round_trips():
    cps = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    text = "".join(map(chr, cps))
    data = text.encode("utf-8")
    _C._utf8_validate(data)
    steps = _C._utf8_decode(data)
    assert [v for _, _, v in steps] == cps
    assert [n for _, n, _ in steps] == [len(chr(c).encode("utf-8")) for c in cps]


INTERESTING = [0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1, 0xEC, 0xED,
               0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xF7, 0xF8, 0xFF]


@settings(max_examples=1500, deadline=None)
@given(st.one_of(st.binary(max_size=24), st.lists(st.sampled_from(INTERESTING), max_size=16).map(bytes),
                 st.text(max_size=12).map(lambda s: s.encode("utf-8", "surrogatepass"))))
def test_decoder_matches_python_on_any_bytes(data):
    assert ours_as_python(data) == python_steps(data)
    assert _C._utf8_replace(data) == data.decode("utf-8", "replace").encode("utf-8")
    try:
        data.decode("utf-8")
        _C._utf8_validate(data)
    except UnicodeDecodeError as e:
        with pytest.raises(cp.TokenizerError, match=f"byte offset {e.start} "):
            _C._utf8_validate(data)


# ---- the string map -----------------------------------------------------------------------------------------------

ops_bytes = st.lists(st.one_of(
    st.tuples(st.just("put"), st.binary(max_size=6), st.integers(-2**63, 2**63 - 1)),
    st.tuples(st.just("get"), st.binary(max_size=6)),
    st.tuples(st.just("remove"), st.binary(max_size=6)),
    st.tuples(st.just("size")),
    st.tuples(st.just("clear")),
), max_size=200)
ops_int = st.lists(st.one_of(
    st.tuples(st.just("put"), st.integers(-40, 40) | st.integers(-2**63, 2**63 - 1), st.integers(-2**63, 2**63 - 1)),
    st.tuples(st.just("get"), st.integers(-40, 40)),
    st.tuples(st.just("remove"), st.integers(-40, 40)),
    st.tuples(st.just("size")),
    st.tuples(st.just("clear")),
), max_size=200)


def dict_model(ops):
    d, out = {}, []
    for op in ops:
        if op[0] == "put":
            d[op[1]] = op[2]
            out.append(None)
        elif op[0] == "get":
            out.append(d.get(op[1]))
        elif op[0] == "remove":
            out.append(op[1] in d)
            d.pop(op[1], None)
        elif op[0] == "size":
            out.append(len(d))
        else:
            d.clear()
            out.append(None)
    return out


@settings(max_examples=300, deadline=None)
@given(ops=ops_bytes)
def test_strmap_bytes_matches_a_dict(ops):
    assert _C._strmap_run("bytes", ops) == dict_model(ops)


@settings(max_examples=300, deadline=None)
@given(ops=ops_int)
def test_strmap_int64_matches_a_dict(ops):
    assert _C._strmap_run("int64", ops) == dict_model(ops)


def test_strmap_growth_and_removal_at_scale():
    rng = np.random.default_rng(0)
    keys = [bytes(rng.integers(0, 256, int(rng.integers(0, 12)), dtype=np.uint8)) for _ in range(20000)]
    ops = [("put", k, i) for i, k in enumerate(keys)]
    ops += [("remove", k) for k in keys[::3]] + [("get", k) for k in keys] + [("size",)]
    ops += [("put", k, -i) for i, k in enumerate(keys[::3])] + [("get", k) for k in keys[::3]] + [("size",)]
    assert _C._strmap_run("bytes", ops) == dict_model(ops)
    ints = [int(x) for x in rng.integers(-2**63, 2**63 - 1, 20000, dtype=np.int64)] + list(range(-50, 5000))
    ops = [("reserve", 100)] + [("put", k, i) for i, k in enumerate(ints)] + [("remove", k) for k in ints[1::2]]
    ops += [("get", k) for k in ints] + [("size",)]
    want = [None, *dict_model(ops[1:])]
    assert _C._strmap_run("int64", ops) == want


def test_strmap_rejects_the_wrong_key_kind():
    with pytest.raises(cp.InvalidArgumentError):
        _C._strmap_run("int64", [("put", 1, 1), ("reserve", -1)])
    with pytest.raises(cp.InvalidArgumentError):
        _C._strmap_run("dict", [])


# ---- the batch status ---------------------------------------------------------------------------------------------

@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    old = cp.get_num_threads()
    cp.set_num_threads(request.param)
    yield request.param
    cp.set_num_threads(old if old != os.cpu_count() else 0)


def spoil(good, bad, at):
    out = list(good)
    for i in at:
        out[i] = bad
    return out


def raises_at(exc, index, fn, *a, **kw):
    with pytest.raises(exc) as ei:
        fn(*a, **kw)
    assert ei.value.index == index, (ei.value.index, str(ei.value))
    return str(ei.value)


# a batch big enough that every batch function runs it on worker threads (normalize needs >= 1 MB of text)
CAPTION = "a photo of a cat sitting on a red sofa next to a window " * 40


def test_batch_status_normalize_and_clip_clean(threads):
    texts = spoil([CAPTION] * 600, "   ", [431, 97, 598])
    msg = raises_at(cp.EmptyPromptError, 97, cp.normalize_batch, texts)
    assert "texts[97]" in msg
    raises_at(cp.EmptyPromptError, 97, cp.clip_clean_batch, texts)
    assert cp.normalize_batch(texts[:97]) == [cp.normalize(t) for t in texts[:97]]


def test_batch_status_segment(threads):
    texts = spoil(["我爱北京天安门，天安门上太阳升"] * 400, "  ", [350, 201])
    msg = raises_at(cp.EmptyPromptError, 201, cp.segment_batch, texts, lang="zh")
    assert "text 201" in msg


def test_batch_status_clip_tokenizer(threads):
    tok = cp.ClipTokenizer()
    texts = spoil(["a photo of a cat"] * 500, "word " * 100, [480, 333])
    msg = raises_at(cp.TokenizerError, 333, tok, texts, truncate=False)
    assert "prompt 333" in msg and "context_length 77" in msg
    raises_at(cp.EmptyPromptError, 7, tok, spoil(["a dog"] * 300, " ", [7, 299]))


def test_batch_status_wordpiece(threads):
    wp = cp.WordPieceTokenizer()
    texts = spoil(["a photo of a cat"] * 500, "\x00 \x01", [499, 64])
    msg = raises_at(cp.EmptyPromptError, 64, wp, texts)
    assert "prompt 64" in msg


def test_batch_status_index_add_and_search(threads):
    d = 16
    ix = cp.FlatIPIndex(d)
    x = np.random.default_rng(1).random((50, d), dtype=np.float32)
    x[[40, 12], 3] = np.nan
    msg = raises_at(cp.InvalidArgumentError, 12, ix.add, x)
    assert "row 12" in msg and ix.ntotal == 0
    raises_at(cp.InvalidArgumentError, 2, ix.add, x[:5], ids=np.array([0, 1, -4, 3, -1]))
    raises_at(cp.InvalidArgumentError, 3, ix.add, x[:5], ids=np.array([7, 8, 9, 8, 7]))
    assert ix.ntotal == 0
    ix.add(x[:10], ids=np.arange(10))
    raises_at(cp.InvalidArgumentError, 1, ix.add, x[:3], ids=np.array([20, 5, 21]))
    q = np.random.default_rng(2).random((30, d), dtype=np.float32)
    q[[25, 17], 0] = np.inf
    raises_at(cp.InvalidArgumentError, 17, ix.search, q, 3)
    with pytest.raises(cp.InvalidArgumentError) as ei:
        ix.search(q[:2], 0)
    assert getattr(ei.value, "index", None) is None
