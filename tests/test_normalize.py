"""cp.normalize / cp.clip_clean against their Python references (tests/normalize_ref.py: ftfy.fix_text,
html.unescape, unicodedata, re, str.lower), on every line of tests/data and on Hypothesis-generated Unicode."""
import itertools
import os
import threading
import time
import unicodedata

import ftfy
import pytest
from conftest import all_text_lines
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from normalize_ref import clip_clean_reference, normalize_reference

import clipprompt as cp

clip_clean = cp._C.clip_clean
clip_clean_batch = cp._C.clip_clean_batch

# Lines of tests/data on which ftfy's mojibake repair (fix_encoding) fires, with what ftfy.fix_text makes of them:
# the taxonomy's UTF-8-read-as-Latin-1 names and two STS-B headlines read as MacRoman.
MOJIBAKE_LINES = {
    "Matt Smith quits BBC‚Äôs Doctor Who": "Matt Smith quits BBC's Doctor Who",
    "Obama to meet with China‚Äôs Xi in California June 7-8": "Obama to meet with China's Xi in California June 7-8",
    "Corsage & BoutonniÃ¨re Pins": "Corsage & Boutonnière Pins",
    "Corsages & BoutonniÃ¨res": "Corsages & Boutonnières",
    "PiÃ±atas": "Piñatas",
    "MadroÃ±o": "Madroño",
    "Prepared Meals & EntrÃ©es": "Prepared Meals & Entrées",
    "Nutritional Food PurÃ©es": "Nutritional Food Purées",
    "CrÃªpe & Blini Pans": "Crêpe & Blini Pans",
    "SautÃ© Pans": "Sauté Pans",
    "Fencing Jackets & LamÃ©s": "Fencing Jackets & Lamés",
}


def expect_clip(text, fix_encoding=True):
    """The reference result, or None where cp.clip_clean raises EmptyPromptError."""
    r = clip_clean_reference(text, fix_encoding=fix_encoding)
    return r or None


def ours_clip(text):
    try:
        return clip_clean(text)
    except cp.EmptyPromptError:
        return None


# ---- every line of the shared data -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lines():
    return all_text_lines()


def test_clip_clean_every_data_line(lines):
    ours = clip_clean_batch(lines)
    assert len(ours) == len(lines) > 27000
    # ftfy.fix_text with its defaults (mojibake repair included), exactly as CLIP calls it: no exceptions
    mismatches = [(t, o) for t, o in zip(lines, ours) if o != clip_clean_reference(t)]
    assert mismatches == [], mismatches[:5]
    repaired = {t for t in lines if ftfy.fix_text(t) != ftfy.fix_text(t, fix_encoding=False)}
    assert repaired == set(MOJIBAKE_LINES)  # the lines where the repair fires


def test_mojibake_lines_repaired():
    for text, fixed in MOJIBAKE_LINES.items():
        assert ftfy.fix_text(text) == fixed
        assert cp.normalize(text, form=None, fullwidth=False, html=0, collapse_whitespace=False,
                            script_spaces=False) == fixed
        assert clip_clean(text) == fixed.lower()
        # fix_encoding=False keeps the mojibake (ftfy.fix_text(text, fix_encoding=False))
        assert cp.normalize(text, fix_encoding=False, form=None) == ftfy.fix_text(text, fix_encoding=False)


def test_clip_clean_single_equals_batch_and_bytes(lines):
    sample = lines[::97]
    batch = clip_clean_batch(sample)
    assert [clip_clean(t) for t in sample] == batch
    assert [clip_clean(t.encode()) for t in sample] == batch
    assert clip_clean_batch([t.encode() for t in sample]) == batch


def test_normalize_every_data_line(lines):
    ours = cp.normalize_batch(lines)
    ref = [normalize_reference(t) for t in lines]
    bad = [(t, o, r) for t, o, r in zip(lines, ours, ref) if o != r]
    assert bad == [], bad[:5]
    low = cp.normalize_batch(lines[::7], lowercase=True, form="NFC")
    assert low == [normalize_reference(t, lowercase=True, form="NFC") for t in lines[::7]]
    moji = list(MOJIBAKE_LINES) + lines[::13]
    assert cp.normalize_batch(moji, fix_encoding=False) == [normalize_reference(t, fix_encoding=False) for t in moji]


# ---- every code point --------------------------------------------------------------------------------------------

ASSIGNED = [c for c in range(0x110000) if unicodedata.category(chr(c)) not in ("Cn", "Cs")]


@pytest.mark.parametrize("form", ["NFC", "NFKC"])
def test_every_assigned_code_point_normalizes_like_unicodedata(form):
    texts = ["a" + chr(c) + "b" for c in ASSIGNED]
    ours = cp.normalize_batch(texts, form=form, fullwidth=False, html=False, ftfy=False, collapse_whitespace=False,
                              script_spaces=False)
    bad = [(hex(c), o) for c, t, o in zip(ASSIGNED, texts, ours) if o != unicodedata.normalize(form, t)]
    assert bad == [], bad[:10]


def test_every_code_point_lowercases_like_str_lower():
    cps = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    texts = ["A" + chr(c) + "b" for c in cps]
    ours = cp.normalize_batch(texts, form=None, fullwidth=False, html=False, ftfy=False, collapse_whitespace=False,
                              script_spaces=False, lowercase=True)
    bad = [(hex(c), o) for c, t, o in zip(cps, texts, ours) if o != t.lower()]
    assert bad == [], bad[:10]


# ---- Hypothesis --------------------------------------------------------------------------------------------------

PIECES = [
    # entities (ftfy's strict rule, html.unescape's lenient rules, numeric replacements)
    "&amp;", "&amp;amp;", "&amp;amp;amp;", "&#x27;", "&#39;", "&copy", "&copy;", "&notit;", "&not", "&NTILDE;",
    "&nTILDE;", "&Eacute;", "&EACUTE;", "&lt;", "&lt;b&gt;", "<", ">", "&#0;", "&#x110000;", "&#xD800;", "&#128;",
    "&#x85;", "&#13;", "&#x0d;", "&#59;", "&#12a;", "&#65a;", "&#x41g;", "&ampx", "&AMP;", "&AMP",
    "&CounterClockwiseContourIntegral;", "&#", "&#x", "&#X4a;", "&;", "&&amp;", "&#99999999999999999999;", "&gt",
    "&LT", "&amp", "&ampé;", "&szlig;", "&SZLIG;", "&#xfffe;", "&#x1F600;", "&#1;", "&#x7f", "&nbsp;", "&NBSP;",
    "&ThickSpace;", "&bne;", "&fjlig;", "&", ";", "#",
    # emoji, ZWJ and tag sequences, flags, variation selectors
    "👍", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇯🇵", "❤️", "🏴󠁧󠁢󠁷󠁬󠁳󠁿", "\u200d", "\ufe0f",
    # combining marks, Hangul jamo, half-width kana with voicing marks
    "e\u0301", "\u0301", "a\u0323\u0302", "\u0302\u0323", "\u1100\u1161\u11a8", "ｶﾞ", "ﾊﾟ", "\u0345", "\u0344",
    # RTL and bidi controls
    "שלום", "مرحبا", "\u200f", "\u200e", "\u202b", "\u202e", "\u2066",
    # C0, ANSI escapes, DEL, C1
    "\x00", "\x07", "\x0b", "\x1b", "\x1b[31m", "\x1b[1;٣m", "\x1b[", "\x1b[0", "\x7f", "\x80", "\x85", "\x9d",
    "\x8d", "\x90", "\x92", "\x93",
    # full-width and half-width forms
    "ＡＢＣ", "１２３", "　", "￣", "ｱ", "ﾟ", "￦",
    # ligatures and digraphs
    "ﬁ", "ﬂ", "ﬃ", "ŉ", "Ǆ", "ǅ", "ĳ", "ﬅ", "Ĳ",
    # quotes
    "“", "”", "‘", "’", "‛", "‟", "ʼ", "„", "«", "»",
    # whitespace of all kinds (and look-alikes that are not whitespace)
    " ", "  ", "\t", "\n", "\r", "\r\n", "\n\r", "\x0c", "\x1c", "\x1f", "\xa0", "\u1680", "\u2000", "\u200a",
    "\u2028", "\u2029", "\u202f", "\u205f", "\u3000", "\u200b", "\ufeff", "\u180e",
    # case: final sigma, dotted I, sharp s, title-case digraphs
    "Σ", "ΑΣ", "ΟΔΟΣ.", "Σα", "ς", "İ", "ẞ", "ß", "ǅ", "ᾼ", "Ω", "K",
    # scripts and compatibility characters
    "白色短袖", "shirt", "T恤", "ひらがな", "カタカナ", "한국어", "™", "½", "①", "x²", "ｘ", "ǈ",
    "\ufffc", "\ufff9", "\u206a", "\ufffd",
    # mojibake-looking text
    "Ã©", "â€™", "Ã", "‚Äô", "Â ", "Ã ", "â€", "Ã¨", "Ãƒ", "Â", "Ð", "Ñ€", "Ø§", "Ã\xa0", "Ã¡", "Ã¢â‚¬â„¢", "\ufffd",
    "вЂ™", "â€\ufffd", "\xc3\x80", "Ã\x80", "ÃƒÂ©",
]

CHARS = st.characters(blacklist_categories=("Cs", "Cn"))  # Cn: see docs/text.md (utf8proc knows a newer Unicode)
TEXT = st.lists(st.one_of(st.sampled_from(PIECES), st.text(alphabet=CHARS, max_size=6)), max_size=12).map("".join)

# CP_HYPOTHESIS_EXAMPLES=20000 for a deeper run than the default 400.
HSET = settings(max_examples=int(os.environ.get("CP_HYPOTHESIS_EXAMPLES", "400")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@HSET
@given(TEXT)
def test_clip_clean_matches_reference_hypothesis(text):
    assert ours_clip(text) == expect_clip(text)  # CLIP's exact call, mojibake repair included


@HSET
@given(TEXT, st.booleans(), st.sampled_from(["NFC", "NFKC", "none"]), st.booleans(), st.integers(0, 3),
       st.booleans(), st.booleans(), st.booleans(), st.booleans())
def test_normalize_matches_reference_hypothesis(text, lowercase, form, fullwidth, html, ftfy_on, collapse, script,
                                                fix_encoding):
    kw = dict(lowercase=lowercase, form=form, fullwidth=fullwidth, html=html, ftfy=ftfy_on,
              collapse_whitespace=collapse, script_spaces=script, fix_encoding=fix_encoding)
    want = normalize_reference(text, lowercase=lowercase, form=form, fullwidth=fullwidth, html_passes=html,
                               ftfy_fixes=ftfy_on, collapse_whitespace=collapse, script_spaces=script,
                               fix_encoding=fix_encoding)
    if not want:
        with pytest.raises(cp.EmptyPromptError):
            cp.normalize(text, **kw)
    else:
        assert cp.normalize(text, **kw) == want
        assert cp.normalize(text.encode(), **kw) == want


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=24))
def test_arbitrary_bytes_valid_or_offset(data):
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        with pytest.raises(cp.TokenizerError, match=f"byte offset {e.start}"):
            cp.normalize(data)
        with pytest.raises(cp.TokenizerError, match=f"byte offset {e.start}"):
            clip_clean(data)
        return
    assert ours_clip(data) == expect_clip(text)


@settings(max_examples=100, deadline=None)
@given(TEXT, st.integers(0, 40), st.integers(0xD800, 0xDFFF))
def test_lone_surrogates_via_bytes_and_str(text, pos, sur):
    pos = min(pos, len(text))
    head, tail = text[:pos], text[pos:]
    raw = (head + chr(sur) + tail).encode("utf-8", "surrogatepass")
    offset = len(head.encode("utf-8"))
    for fn in (cp.normalize, clip_clean):
        with pytest.raises(cp.TokenizerError, match=f"byte offset {offset} "):
            fn(raw)
        with pytest.raises(cp.TokenizerError, match=f"U\\+{sur:04X} at character {pos}"):
            fn(head + chr(sur) + tail)
    with pytest.raises(cp.TokenizerError, match=rf"texts\[1\].*byte offset {offset} "):
        cp.normalize_batch(["fine", raw])


# ---- options -----------------------------------------------------------------------------------------------------


def test_readme_example():
    assert cp.normalize("ＡＢＣ  &amp;amp; “hi”") == 'ABC & "hi"'
    assert cp.normalize("ＡＢＣ  &amp;amp; “hi”", lowercase=True) == 'abc & "hi"'
    assert clip_clean("ＡＢＣ  &amp;amp; “hi”") == 'abc & "hi"'


def test_nfc_vs_nfkc():
    s = "½ ① ™ x² e\u0301"
    assert cp.normalize(s, form="NFC") == "½ ① ™ x² é"
    assert cp.normalize(s, form="NFKC") == "1⁄2 1 TM x2 é"
    assert cp.normalize(s, form="nfkc") == cp.normalize(s)  # NFKC is the default; case-insensitive
    assert cp.normalize(s, form="none", ftfy=False) == s
    assert cp.normalize(s, form=None, ftfy=False) == s
    assert cp.normalize("ﬁne", form="NFC", ftfy=False) == "ﬁne"
    assert cp.normalize("ﬁne", form="NFKC", ftfy=False) == "fine"
    assert cp.normalize("ﬁne", form="NFC") == "fine"  # ftfy's ligature fix


def test_fullwidth():
    assert cp.normalize("ＡＢＣ　１２３", form="NFC", ftfy=False) == "ABC 123"
    kw = dict(form="NFC", ftfy=False, collapse_whitespace=False)
    assert cp.normalize("ＡＢＣ　１２３", fullwidth=False, **kw) == "ＡＢＣ　１２３"
    assert cp.normalize("ＡＢＣ　１２３", **kw) == "ABC 123"
    assert cp.normalize("ｶﾞｲﾄﾞ", form="NFC", ftfy=False) == "ガイド"


def test_lowercase():
    s = "ΟΔΟΣ İstanbul ΣΑΣ. ẞ"
    assert cp.normalize(s, lowercase=True, form="NFC") == s.lower()
    assert cp.normalize(s, form="NFC") == s
    assert cp.normalize("ΑΣ", lowercase=True) == "ας" and cp.normalize("ΑΣΑ", lowercase=True) == "ασα"


def test_script_spaces():
    assert cp.normalize("shirt白色短袖") == "shirt 白色短袖"
    assert cp.normalize("白色T恤2件") == "白色 T 恤 2 件"
    assert cp.normalize("Tシャツ") == "T シャツ"
    assert cp.normalize("shirt白色短袖", script_spaces=False) == "shirt白色短袖"
    assert cp.normalize("shirt 白色") == "shirt 白色"  # no double space
    assert cp.normalize("café白") == "café 白"


def test_html_passes_and_whitespace():
    s = "&amp;amp;lt;x"
    assert cp.normalize(s, ftfy=False, html=False) == s
    assert cp.normalize(s, ftfy=False, html=1) == "&amp;lt;x"
    assert cp.normalize(s, ftfy=False) == "&lt;x"  # html=True: two passes, like CLIP
    assert cp.normalize(s, ftfy=False, html=3) == "<x"
    assert cp.normalize(" a \u3000\t b\u2028c ", collapse_whitespace=False, form="NFC", fullwidth=False,
                        ftfy=False) == " a \u3000\t b\u2028c "
    assert cp.normalize(" a \u3000\t b\u2028c ") == "a b c"
    # ftfy's html rule is off in a line that contains '<' (and in every later line)
    assert clip_clean("&NTILDE;") == "ñ"
    assert clip_clean("<b> &NTILDE;") == "<b> &ntilde;"
    assert clip_clean("&NTILDE;\n<b>\n&NTILDE;") == "ñ <b> &ntilde;"


def test_ftfy_segment_limit_of_one_million_code_points():
    # ftfy.fix_text fixes a line in 1,000,000-code-point segments: an accent split from its letter by the
    # boundary stays uncomposed, an entity split by it stays escaped for ftfy (html.unescape gets it later).
    for text in ("a" * 999_999 + "e\u0301" + "b" * 5, "a" * 999_998 + "&NTILDE;" + "é" * 3 + "\r\n&lt;"):
        assert clip_clean(text) == clip_clean_reference(text)


def test_nested_entities_exact_up_to_the_pass_cap_and_fast_beyond():
    for k in (1, 2, 5, 40, 62):  # ftfy needs k passes, html.unescape x2 adds two more levels
        text = "&" + "amp;" * k + "lt;b"
        assert clip_clean(text) == clip_clean_reference(text), k
    text = "&" + "amp;" * 100_000 + "lt;"  # 400 kB: ftfy itself would need 100,000 passes (minutes)
    t0 = time.perf_counter()
    out = clip_clean(text)
    assert time.perf_counter() - t0 < 5.0
    assert out == "&" + "amp;" * (100_000 - 64 - 2) + "lt;"  # documented: 64 ftfy passes, then 2 html passes


def test_long_runs_of_combining_marks_exact_and_linear():
    import random

    rng = random.Random(7)
    marks = [c for c in range(0x300, 0x2000) if unicodedata.combining(chr(c))]
    for _ in range(20):  # runs longer and shorter than the insertion-sort cut-off, mixed with starters
        text = "x" + "".join(chr(rng.choice(marks)) if rng.random() < 0.9 else "a" for _ in range(rng.randint(1, 400)))
        for form in ("NFC", "NFKC"):
            assert cp.normalize(text, form=form, ftfy=False, html=False, collapse_whitespace=False,
                                script_spaces=False) == unicodedata.normalize(form, text)
    small = "a" + "\u0301\u0316" * 50
    assert unicodedata.normalize("NFC", small) == "\u00e1" + "\u0316" * 50 + "\u0301" * 49
    big = "a" + "\u0301\u0316" * 200_000  # unicodedata (and a swap sort) take minutes on this
    t0 = time.perf_counter()
    out = cp.normalize(big, form="NFC", ftfy=False)
    assert time.perf_counter() - t0 < 5.0
    assert out == "\u00e1" + "\u0316" * 200_000 + "\u0301" * 199_999


# ---- errors ------------------------------------------------------------------------------------------------------


def test_invalid_utf8_names_offset():
    with pytest.raises(cp.TokenizerError, match="byte offset 2"):
        cp.normalize(b"ab\xffcd")
    with pytest.raises(cp.TokenizerError, match="byte offset 1"):
        cp.normalize(b"a\xed\xa0\x80")  # an encoded surrogate
    with pytest.raises(cp.TokenizerError, match="byte offset 3"):
        clip_clean(b"abc\xc3")
    with pytest.raises(ValueError):  # TokenizerError is a ValueError
        cp.normalize(b"\x80")


def test_lone_surrogate_str():
    with pytest.raises(cp.TokenizerError, match="surrogate"):
        cp.normalize("a\ud800b")
    with pytest.raises(cp.TokenizerError, match="surrogate"):
        clip_clean("\udc00")


@pytest.mark.parametrize("text", ["", "   ", " \t\n\u3000\u2028\xa0", b"", b"  \n", "\x00\x01", "\x1b[31m"])
def test_empty_and_whitespace(text):
    with pytest.raises(cp.EmptyPromptError):
        cp.normalize(text)
    with pytest.raises(cp.EmptyPromptError):
        clip_clean(text)


def test_bad_arguments():
    with pytest.raises(cp.InvalidArgumentError, match="unknown form"):
        cp.normalize("x", form="NFD")
    with pytest.raises(cp.InvalidArgumentError, match="html"):
        cp.normalize("x", html=-1)
    with pytest.raises(TypeError):
        cp.normalize(3)
    with pytest.raises(TypeError):
        cp.normalize("x", "NFC")  # options are keyword-only
    with pytest.raises(TypeError):
        cp.normalize_batch([1])


def test_batch_errors_name_the_index():
    with pytest.raises(cp.EmptyPromptError, match=r"texts\[1\]"):
        cp.normalize_batch(["ok", "  ", "x"])
    with pytest.raises(cp.TokenizerError, match=r"texts\[2\].*byte offset 1"):
        cp.normalize_batch(["ok", b"fine", b"a\xfe"])
    with pytest.raises(cp.TokenizerError, match=r"texts\[0\].*surrogate"):
        cp.normalize_batch(["\ud800"])
    big = ["a photo of a cat"] * 1000
    big[777] = "\t"
    with pytest.raises(cp.EmptyPromptError, match=r"texts\[777\]"):
        cp.normalize_batch(big)
    with pytest.raises(cp.EmptyPromptError, match=r"clip_clean_batch: texts\[777\]"):
        clip_clean_batch(big)
    assert cp.normalize_batch([]) == [] and clip_clean_batch([]) == []
    assert cp.normalize_batch(("a", b"b")) == ["a", "b"]


# ---- threads -----------------------------------------------------------------------------------------------------


def test_batch_releases_the_gil(lines):
    """While one thread runs a long batch, the main thread keeps running Python code: no long gap between its
    ticks. (With the GIL held, the whole C call would be one gap.)"""
    big = lines * 12
    done = threading.Event()
    took = []

    def work():
        t0 = time.perf_counter()
        clip_clean_batch(big)
        took.append(time.perf_counter() - t0)
        done.set()

    ticks = []
    th = threading.Thread(target=work)
    th.start()
    while not done.is_set():
        ticks.append(time.perf_counter())
        for _ in range(200):
            pass
    th.join()
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert took[0] > 0.05 and len(ticks) > 10
    assert max(gaps) < 0.6 * took[0], (max(gaps), took[0])


def test_threads_give_the_same_results(lines):
    sample = lines[::5]
    want_n = cp.normalize_batch(sample)
    want_c = clip_clean_batch(sample)
    got = {}

    def work(k):
        got[k] = (cp.normalize_batch(sample), clip_clean_batch(sample), [cp.normalize(t) for t in sample[:300]])

    ths = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    for k in range(4):
        assert got[k][0] == want_n and got[k][1] == want_c and got[k][2] == want_n[:300]
