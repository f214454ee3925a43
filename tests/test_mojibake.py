"""ftfy's mojibake repair (fix_encoding) in C (csrc/cp_mojibake.c) against ftfy 6.3.1 itself."""
import os
import time

import ftfy
import ftfy.bad_codecs  # registers the sloppy-windows-* and utf-8-variants codecs
import pytest
from ftfy import chardata
from ftfy.badness import BADNESS_RE, MOJIBAKE_CATEGORIES, is_bad
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from normalize_ref import clip_clean_reference

import clipprompt as cp

clip_clean = cp._C.clip_clean
ftfy_is_bad = cp._C._ftfy_is_bad

HSET = settings(max_examples=int(os.environ.get("CP_HYPOTHESIS_EXAMPLES", "400")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

# only ftfy.fix_text's steps: no html passes, no NFKC/width/collapse of cp.normalize's own
FTFY_ONLY = {"form": None, "html": 0, "fullwidth": False, "collapse_whitespace": False, "script_spaces": False}


def fix_text_ours(text):
    """cp.normalize restricted to ftfy.fix_text's steps; "" where it raises EmptyPromptError."""
    try:
        return cp.normalize(text, **FTFY_ONLY)
    except cp.EmptyPromptError:
        return ""


def fix_text_ref(text):
    r = ftfy.fix_text(text)
    return "" if not r or r.isspace() else r


def clip_ours(text):
    try:
        return clip_clean(text)
    except cp.EmptyPromptError:
        return ""


def check(text):
    assert fix_text_ours(text) == fix_text_ref(text)
    assert clip_ours(text) == clip_clean_reference(text)


# ---- the badness heuristic -------------------------------------------------------------------------------------

# every non-ASCII character BADNESS_RE names, the Latin-1/Greek/Cyrillic blocks around them, and the ASCII ones it uses
_BAD_ALPHABET = sorted(
    {c for c in BADNESS_RE.pattern if ord(c) >= 0x80}
    | {c for v in MOJIBAKE_CATEGORIES.values() for c in v if ord(c) >= 0x80}
    | {chr(c) for r in ((0x80, 0x180), (0x370, 0x3D0), (0x400, 0x460)) for c in range(*r)}
) + list("aZz .,?!_9\n\t-") + ["\u3000", "\u2003", "\u2028", "白", "\u0660"]


@HSET
@given(st.text(alphabet=st.sampled_from(_BAD_ALPHABET), max_size=8))
def test_is_bad_matches_ftfy(text):
    assert ftfy_is_bad(text) == is_bad(text)


def test_is_bad_every_pair_of_class_characters():
    # one representative per distinct class mask, all ordered pairs and a third character: exhaustive for the
    # two- and three-character alternatives of BADNESS_RE up to the choice of representatives
    reps = {}
    for c in _BAD_ALPHABET:
        key = tuple(bool(__import__("re").match("[" + v + "]", c)) for v in MOJIBAKE_CATEGORIES.values())
        reps.setdefault(key, []).append(c)
    chars = [v[0] for v in reps.values()] + [v[-1] for v in reps.values()] + list("aZ .")
    bad = []
    for a in chars:
        for b in chars:
            for t in (a + b, a + b + "x", "x" + a + b, a + b + " ", a + b + "é"):
                if ftfy_is_bad(t) != is_bad(t):
                    bad.append(t)
    assert bad == []


# ---- explicit cases ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "âœ” No problems",  # ftfy's docstring examples
    "&macr;\\_(ã\x83\x84)_/&macr;",
    "Broken text&hellip; it&#x2019;s ﬂubberiﬁc!",
    "sÃ³",
    "voilÃ le travail",  # restore_byte_a0 (A_GRAVE_WORD_RE)
    "Ã  la carte", "Ã quele", "Ã s ", "Ã  ", "Ã",  # its exceptions
    "â€œ like this â€\ufffd",  # replace_lossy_sequences
    "Ã\ufffd", "Ã?", "â€?", "ð\ufffd\ufffd€",
    "The Mona Lisa doesnÃ¢â‚¬â„¢t have eyebrows.",  # twice encoded
    "Ã¢â‚¬Å“mixedÃ¢â‚¬Â\x9d and “clean” quotes",
    "cafÃ© crÃ¨me and naïve",  # decode_inconsistent_utf8
    "naïve cafÃ©",
    "Ã©tÃ© Ã€\n",
    "Ã©tÃ© À\n",  # utf-8-variants: C0 + final "\n" decodes as U+0000 and eats the newline
    "Ã©tÃ© À\nsecond line",
    "null here: Ã€\x80.",  # Java's modified UTF-8 null (C0 80)
    "\u00ed\u00a0\u00bd\u00ed\u00b8\u0080 smile",  # CESU-8 surrogate pair read as Latin-1
    "í\xa0½í¸\x80",
    "í\xa0½í¸\n",  # CESU-8 whose last byte is a final "\n"
    "í\xa0½",  # lone surrogate half: not decodable, left alone
    "\x80\x81\x8d\x8f\x90\x9d\x9f text",  # C1: latin-1 -> windows-1252 fails, fix_c1_controls
    "\x93quoted\x94 \x85",  # latin-1 -> windows-1252
    "Ð¿Ñ€Ð¸Ð²ÐµÑ‚",  # Cyrillic UTF-8 read as Windows-1252
    "РїСЂРёРІРµС‚",  # ... as Windows-1251
    "ÎºÎ±Î»Î·Î¼Î­ÏÎ±",  # Greek
    "Îșαλημέρα", "Ä\x8d", "Å¾luÅ¥ouÄ\x8dkÃ½",
    "BBC‚Äôs", "‚Äú hi ‚Äù",  # MacRoman
    "â”œâ”€â”€ tree",
    "ðŸ˜€ emoji", "ðŸ‘ðŸ½",
    "Ã ", " Ã ", "Â ", "a Â b", "x\xa0Ã ",
    "ÃƒÂ©ÃƒÂ©ÃƒÂ©",  # nested twice
    "ÃƒÆ’Ã‚Â©",  # nested three times
    "Ã˜Â§Ã™â€žÃ˜Â¹Ã˜Â±Ã˜Â¨Ã™Å ", "Ø§Ù„Ø¹Ø±Ø¨ÙŠØ©",  # Arabic
    "à²•", "Ã ²", "×²", "Œx", "œ1", "ГўВЂВљa", "вЂ™", "β€™", "ā€", "√±", "≈°",
    "\x1a", "a\x1ab Ã©",
])
def test_cases_match_ftfy(text):
    check(text)
    for sep in ("\n", "\r\n", " "):
        check(text + sep + text)


def test_is_bad_hook_takes_str_only():
    with pytest.raises(TypeError):
        ftfy_is_bad(b"\xc3\xa9")
    assert ftfy_is_bad("") is False
    assert ftfy_is_bad("Ã©") is True


def test_fix_encoding_option():
    t = "SautÃ© Pans &amp; Ã©tÃ©"
    assert cp.normalize(t) == "Sauté Pans & été"
    assert cp.normalize(t, fix_encoding=False) == "SautÃ© Pans & Ã©tÃ©"
    assert cp.normalize(t, ftfy=False) == "SautÃ© Pans & Ã©tÃ©"  # fix_encoding belongs to the ftfy step
    assert cp.normalize_batch([t, t], fix_encoding=False) == ["SautÃ© Pans & Ã©tÃ©"] * 2
    assert cp.normalize_batch([t]) == ["Sauté Pans & été"]
    assert clip_clean(t) == "sauté pans & été"


def test_lines_are_fixed_independently():
    # fix_text works line by line: a clean line does not stop the repair of the next one, and "<" on one line
    # turns HTML unescaping off from there on
    for t in ("clean line\nSautÃ© Pans\nmore", "<b>\nSautÃ© &amp;\nPiÃ±atas &amp;", "é\n" * 3 + "Ã©" * 3):
        check(t)


def test_segment_limit_applies_to_the_repair():
    # a line longer than max_decode_length is fixed in 1,000,000-code-point segments
    t = "Ã©" * 500_001 + "\nok"
    check(t)
    t = "a" * 999_999 + "Ã©" + "Ã©" * 3
    check(t)


def test_long_and_deep_mojibake_is_exact_and_bounded():
    s = "naïve café — “quoted” 😀 "
    for _ in range(4):  # 4 levels of UTF-8 read as Windows-1252
        s = s.encode("utf-8").decode("sloppy-windows-1252")
    text = (s + "\n") * 200 + s * 2000  # one 200-line part and one long line
    t0 = time.perf_counter()
    check(text)
    assert time.perf_counter() - t0 < 60  # ftfy itself takes most of this
    t0 = time.perf_counter()
    ours = fix_text_ours("Ã©" * 300_000 + "é" * 300_000)
    assert time.perf_counter() - t0 < 5
    assert ours == fix_text_ref("Ã©" * 300_000 + "é" * 300_000)


# ---- Hypothesis: generated mojibake ---------------------------------------------------------------------------

CODECS = ["latin-1", "cp1252", "cp1251", "cp1250", "cp1253", "cp1254", "cp1257", "iso-8859-2", "macroman", "cp437"]
CHARS = st.characters(blacklist_categories=("Cs", "Cn"))
WORDS = ["café", "naïve", "piñata", "“quoted”", "it’s", "€100", "Привет", "Ελληνικά", "Łódź", "çok güzel", "日本語",
         "😀", "👍🏽", "à la", "résumé", "—", "…", "•", "½", "™", "Ā", "ő", "\xa0", "Š", "ž", "Œuvre", "ß", "ﬁ",
         "Ø§", "x", " ", "\n", "&amp;", "ＡＢ"]
SOURCE = st.lists(st.one_of(st.sampled_from(WORDS), st.text(alphabet=CHARS, max_size=4)), min_size=1,
                  max_size=6).map(" ".join)


@st.composite
def mojibake(draw):
    text = draw(SOURCE)
    for _ in range(draw(st.integers(1, 2))):  # once or nested twice
        codec = draw(st.sampled_from(CODECS))
        b = text.encode("utf-8")
        if draw(st.integers(0, 4)) == 0:
            b = b.replace(b"\xa0", b" ")  # the NBSP byte turned into a space (restore_byte_a0)
        if codec.startswith("cp125") and draw(st.booleans()):
            codec = "sloppy-windows-" + codec[2:]
        text = b.decode(codec, errors="replace")  # undefined bytes -> U+FFFD (replace_lossy_sequences)
    clean = draw(st.sampled_from(["", " ", "\n", "x ", "naïve ", "“", "日本 ", "Ã", "\n<b>\n"]))
    return draw(st.sampled_from([text, clean + text, text + " " + clean, clean + text + "\n" + clean + text]))


@HSET
@given(mojibake())
def test_generated_mojibake_matches_ftfy(text):
    check(text)


@HSET
@given(st.lists(st.one_of(mojibake(), SOURCE, st.text(alphabet=CHARS, max_size=6)), max_size=4).map("".join))
def test_generated_mixtures_match_ftfy(text):
    check(text)


# characters of the single-byte codecs (what mojibake is made of), with the ASCII that ftfy's byte rules look at
_CODEC_ALPHABET = sorted({c for e in chardata.CHARMAP_ENCODINGS for c in bytes(range(0x80, 0x100)).decode(e)}) + \
    list(" ?\n\x1aa") + ["\ufffd"]


@HSET
@given(st.text(alphabet=st.sampled_from(_CODEC_ALPHABET), min_size=1, max_size=10))
def test_random_codec_characters_match_ftfy(text):
    check(text)
