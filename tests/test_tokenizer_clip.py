"""cp.ClipTokenizer against OpenAI's SimpleTokenizer (with ftfy) and transformers' CLIPTokenizer, id for id.

References:
  openai   open_clip's copy of OpenAI's SimpleTokenizer (open_clip.tokenizer.SimpleTokenizer, ftfy installed), with
           OpenAI's own special-token strings and pattern (<|startoftext|>/<|endoftext|>, `regex` IGNORECASE) and
           OpenAI's whitespace_clean (`regex` \\s); open_clip renamed the specials (<start_of_text>) and cleans
           whitespace with str.split — both checked separately below.
  hf       transformers 5's CLIPTokenizer built offline from vocab.json/merges.txt written from the bundled .gz.
           transformers 5 has no slow (Python, ftfy) CLIP tokenizer any more: CLIPTokenizer is the `tokenizers`
           one, which cleans with NFC + \\s+ -> " " + lowercase instead of ftfy + html.unescape. Where the two
           references disagree we match OpenAI (test_reference_disagreements_are_cleaning_only pins that).
"""
import gzip
import html
import json
import random
import sys
import threading
from pathlib import Path

import ftfy
import numpy as np
import pytest
import regex
from conftest import ROOT, all_text_lines
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import clipprompt as cp

BPE = ROOT / "clipprompt" / "data" / "bpe_simple_vocab_16e6.txt.gz"
OPENAI_PAT = r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
SOT, EOT = 49406, 49407

# Lines of tests/data on which ftfy's mojibake repair (fix_encoding) fires. cp_clip_clean reproduces it
# (csrc/cp_mojibake.c), so on these lines too we equal OpenAI's tokenizer with ftfy.fix_text's defaults.
MOJIBAKE_LINES = {
    "Matt Smith quits BBC‚Äôs Doctor Who",
    "Obama to meet with China‚Äôs Xi in California June 7-8",
    "Corsage & BoutonniÃ¨re Pins",
    "Corsages & BoutonniÃ¨res",
    "PiÃ±atas",
    "MadroÃ±o",
    "Prepared Meals & EntrÃ©es",
    "Nutritional Food PurÃ©es",
    "CrÃªpe & Blini Pans",
    "SautÃ© Pans",
    "Fencing Jackets & LamÃ©s",
}


def openai_clean(text, fix_encoding=True):
    """OpenAI simple_tokenizer.py: whitespace_clean(basic_clean(text)).lower(), `regex` module's \\s."""
    t = ftfy.fix_text(text, fix_encoding=fix_encoding)
    t = html.unescape(html.unescape(t)).strip()
    return regex.sub(r"\s+", " ", t).strip().lower()


def make_openai(fix_encoding=True):
    from open_clip.tokenizer import SimpleTokenizer

    ref = SimpleTokenizer(bpe_path=str(BPE))
    for name, i in (("<|startoftext|>", SOT), ("<|endoftext|>", EOT)):
        ref.encoder[name] = i
        ref.decoder[i] = name
        ref.cache[name] = name
    ref.pat = regex.compile(OPENAI_PAT, regex.IGNORECASE)
    ref.clean_fn = lambda t: openai_clean(t, fix_encoding)
    return ref


@pytest.fixture(scope="module")
def openai():
    return make_openai()


@pytest.fixture(scope="module")
def openai_nofix():
    return make_openai(fix_encoding=False)


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    from open_clip.tokenizer import bytes_to_unicode
    from transformers import CLIPTokenizer

    d = tmp_path_factory.mktemp("clip_hf")
    merges = gzip.decompress(Path(BPE).read_bytes()).decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (d / "vocab.json").write_text(json.dumps({v: i for i, v in enumerate(vocab)}), encoding="utf-8")
    (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    tok = CLIPTokenizer(vocab=str(d / "vocab.json"), merges=str(d / "merges.txt"))
    assert tok("a photo of a cat")["input_ids"] == [SOT, 320, 1125, 539, 320, 2368, EOT]
    return tok


@pytest.fixture(scope="module")
def tok():
    return cp.ClipTokenizer()


@pytest.fixture(scope="module")
def lines():
    return all_text_lines()


@pytest.fixture(scope="module")
def openai_data(openai, openai_nofix, lines):
    """OpenAI's ids for every data line (computed once): list of (ids, mojibake_repair_fired)."""
    return [ref_ids(openai, openai_nofix, t) for t in lines]


def ref_ids(ref, ref_nofix, text):
    """OpenAI's ids (ftfy.fix_text with its defaults, mojibake repair included), and whether that repair fired."""
    return ref.encode(text), ftfy.fix_text(text) != ftfy.fix_text(text, fix_encoding=False)


def ref_row(ids, ctx=77):
    tokens = [SOT, *list(ids), EOT]
    if len(tokens) > ctx:
        tokens = tokens[:ctx]
        tokens[-1] = EOT
    return tokens + [0] * (ctx - len(tokens))


# ---- the pre-tokenizer: every code point, as the `regex` module classifies it --------------------------------------


def test_pretokenizer_matches_regex_on_every_code_point():
    pat = regex.compile(OPENAI_PAT, regex.IGNORECASE)
    cps = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    bad = []
    for k in range(0, len(cps), 40000):
        # each character alone, doubled, after a letter, after a digit, after an apostrophe, after punctuation
        text = "".join(f" a{ch}{ch}b1{ch}'{ch}?{ch} " for ch in map(chr, cps[k : k + 40000]))
        ours, want = cp._C._clip_pretokenize(text), pat.findall(text)
        if ours != want:
            i = next(i for i, (a, b) in enumerate(zip(ours, want)) if a != b)
            bad.append((hex(cps[k]), ours[i - 2 : i + 3], want[i - 2 : i + 3]))
    assert bad == []


@pytest.mark.parametrize(
    "text",
    [
        "it's IT'S it'S we're WE'RE i've I'M you'll she'd 'd'll''s ''",
        "'ſ 'ſt <|ſtartoftext|> <|STARTOFTEXT|> <|startoftext|><|endoftext|>x <|endoftext <|<|endoftext|>",
        "?<|startoftext|> a\u0345b \u0345 ̅x 12a3 ٣٤ ⅷ ½ 𝟘 中文 😀🏽 👨\u200d👩\u200d👧",
        "\x1c\x1d a\x85b\u2028c\u3000d\xa0e\u180ef\u200bg",
    ],
)
def test_pretokenizer_edge_cases(text):
    assert cp._C._clip_pretokenize(text) == regex.findall(OPENAI_PAT, text, regex.IGNORECASE)


# ---- every line of tests/data ------------------------------------------------------------------------------------


def test_every_data_line_matches_openai(tok, openai_data, lines):
    ids, lens = tok(lines, return_lengths=True)
    assert ids.dtype == np.int32 and ids.shape == (len(lines), 77) and lens.shape == (len(lines),)
    mismatches, repaired = [], set()
    for i, text in enumerate(lines):
        want, fired = openai_data[i]
        if fired:
            repaired.add(text)
        row = ref_row(want)
        if ids[i].tolist() != row or lens[i] != min(len(want) + 2, 77):
            mismatches.append((i, text, ids[i].tolist()[:12], row[:12]))
    assert mismatches == [], mismatches[:5]
    assert repaired == MOJIBAKE_LINES  # the lines where the repair fires (and we match it)
    # open_clip.tokenize itself (torch, open_clip's specials and whitespace_clean) agrees on the data too
    import open_clip

    sample = lines[::7] + sorted(MOJIBAKE_LINES)
    assert np.array_equal(open_clip.tokenize(sample).numpy(), tok(sample))


def test_single_encode_equals_batch_and_bytes(tok, lines):
    sample = lines[::53]
    batch = tok(sample)
    for i, t in enumerate(sample):
        ids = tok.encode(t)
        assert batch[i].tolist() == ref_row(ids)
        assert tok.encode(t.encode("utf-8")) == ids
    assert np.array_equal(tok([t.encode() for t in sample]), batch)
    assert tok("a photo of a cat").shape == (1, 77)


def test_reference_disagreements_are_cleaning_only(tok, openai_data, hf, lines):
    """Where transformers' CLIPTokenizer and OpenAI's disagree on the data, it is always OpenAI's cleaning (ftfy +
    html.unescape) that HF lacks: HF on OpenAI-cleaned text gives OpenAI's ids. We give OpenAI's."""
    disagree = 0
    hf_all = hf(lines, add_special_tokens=False)["input_ids"]
    for text, h, (o, _fired) in zip(lines, hf_all, openai_data):
        if h != o:
            disagree += 1
            assert hf(openai_clean(text), add_special_tokens=False)["input_ids"] == o, text
            assert tok.encode(text) == o, text
    assert disagree > 1000  # curly quotes (ftfy uncurls them) and HTML entities are common in the captions


@pytest.mark.parametrize(
    "text,why",
    [
        ("two men on they’re truck", "ftfy uncurls quotes: 're becomes a contraction"),
        ("Fish &amp; Chips &amp;amp; more", "html.unescape twice"),
        ("ﬁsh ﬂy", "ftfy fixes Latin ligatures"),
        ("Ｆｕｌｌ ｗｉｄｔｈ　ｔｅｘｔ", "ftfy fixes character width"),
        ("“quoted” ‘single’", "ftfy uncurls double and single quotes"),
        ("ΟΔΟΣ", "Python's str.lower applies Final_Sigma (ς); tokenizers' Lowercase gives σ"),
        ("a\u0345b", "IGNORECASE: U+0345 folds to a letter, so OpenAI's pattern skips it; HF's keeps it"),
        ("it'ſ", "IGNORECASE: 'ſ matches the contraction 's in OpenAI's pattern only"),
    ],
)
def test_pinned_reference_disagreement(tok, openai, hf, text, why):
    o = openai.encode(text)
    assert hf(text, add_special_tokens=False)["input_ids"] != o, why
    assert tok.encode(text) == o, why


def test_specials_written_in_text_follow_openai(tok, openai):
    """OpenAI maps <|startoftext|>/<|endoftext|> in the text to SOT/EOT; open_clip renamed them (<start_of_text>), so
    its tokenizer splits them into pieces. We follow OpenAI."""
    from open_clip.tokenizer import SimpleTokenizer

    oc = SimpleTokenizer(bpe_path=str(BPE))
    for text in ["a <|endoftext|> b", "<|startoftext|>x", "<start_of_text> y"]:
        assert tok.encode(text) == openai.encode(text)
    assert tok.encode("a <|endoftext|> b") == [320, EOT, 321]
    assert oc.encode("a <|endoftext|> b") != tok.encode("a <|endoftext|> b")
    assert tok.encode("<|ſtartoftext|>") == openai.encode("<|ſtartoftext|>")  # IGNORECASE match, not the special


# ---- Hypothesis -------------------------------------------------------------------------------------------------

WORDS = ["it's", "IT'S", "we'RE", "I'M", "they'll", "she'd", "you've", "don't", "'s", "''", "<|startoftext|>",
         "<|endoftext|>", "a", "photo", "of", "the", "CAT", "Σίσυφος", "ΟΔΟΣ", "İstanbul", "straße", "naïve", "café",
         "e\u0301", "中文字", "日本語のテキスト", "한국어", "مرحبا", "שלום", "हिन्दी", "ไทย", "😀", "👍🏽",
         "👨\u200d👩\u200d👧",
         "🇯🇵", "12345", "3.14", "٣٤", "½", "Ⅻ", "&amp;", "&lt;b&gt;", "’", "“x”", "ﬁ", "Ｆｕｌｌ", "x" * 130,
         "supercalifragilisticexpialidocious" * 4, "--", "!!!", "...", "#hashtag", "@user", "a\u0345b", "ſ"]
SPACES = [" ", "  ", "\t", "\n", " \n\t ", "\u3000", "\xa0", "\u2028", "\r\n", ""]

mixed_text = st.lists(
    st.one_of(
        st.sampled_from(WORDS),
        st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8),
        st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), min_size=1, max_size=12),
        st.integers(0, 10**12).map(str),
    ),
    min_size=1,
    max_size=60,
).flatmap(lambda ws: st.lists(st.sampled_from(SPACES), min_size=len(ws), max_size=len(ws)).map(
    lambda sp: "".join(w + s for w, s in zip(ws, sp))))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=mixed_text)
def test_hypothesis_matches_openai(tok, openai, openai_nofix, text):
    want, _ = ref_ids(openai, openai_nofix, text)
    if not want:
        with pytest.raises(cp.EmptyPromptError):
            tok.encode(text)
        return
    assert tok.encode(text) == want
    ids, lens = tok([text, "a photo"], return_lengths=True)
    assert ids[0].tolist() == ref_row(want)
    assert lens[0] == min(len(want) + 2, 77)
    if len(want) + 2 > 77:
        assert tok.last_truncated[0] == tok.decode(want[75:]).rstrip(" ")
    else:
        assert tok.last_truncated[0] is None
    assert tok.decode(want) == openai.decode(want)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=mixed_text)
def test_hypothesis_hf_agrees_where_cleaning_is_equal(tok, hf, text):
    """On text that OpenAI's cleaning leaves as HF's cleaning leaves it, the two references and we all agree."""
    try:
        ours = tok.encode(text)
    except cp.EmptyPromptError:
        return
    hf_clean = regex.sub(r"\s+", " ", hf.backend_tokenizer.normalizer.normalize_str(text))
    hf_clean = regex.sub(r"^ | $", "", hf_clean)  # not str.strip(): that also strips \x1c-\x1f
    # OpenAI's pattern is IGNORECASE (U+0345 then matches no alternative; 'ſ is a contraction), HF's is not
    if openai_clean(text) == hf_clean and "\u0345" not in text and "ſ" not in text:
        assert hf(text, add_special_tokens=False)["input_ids"] == ours


# ---- truncation, errors, decode ---------------------------------------------------------------------------------


def test_truncation_and_last_truncated(tok, openai):
    long = "a photo of a cat on a mat " * 12 + "zebra"  # 85 tokens
    short = "a photo of a cat"
    ids, lens = tok([short, long, short], return_lengths=True)
    full = openai.encode(long)
    assert len(full) + 2 > 77
    assert ids[1].tolist() == ref_row(full) and ids[1, 0] == SOT and ids[1, 76] == EOT
    assert lens.tolist() == [7, 77, 7]
    assert tok.last_truncated[0] is None and tok.last_truncated[2] is None
    dropped = tok.last_truncated[1]
    assert dropped == tok.decode(full[75:]).strip() and dropped.endswith("a mat zebra")
    assert (tok.decode(full[:75]) + dropped).split() == tok.decode(full).split()
    tok(short)
    assert tok.last_truncated == [None]
    # other context lengths
    assert tok([long], context_length=10)[0].tolist() == ref_row(full, 10)
    assert tok(["a"], context_length=2)[0].tolist() == [SOT, EOT]
    assert tok(["a b c"], context_length=200).shape == (1, 200)


def test_truncate_false_names_the_prompt(tok):
    long = "a photo of " * 40
    with pytest.raises(cp.TokenizerError, match=r"prompt 2 \(\"a photo of a photo.*\"\) is 122 tokens long.*77"):
        tok(["ok", "fine", long, long], truncate=False)
    assert tok(["ok"], truncate=False).shape == (1, 77)


def test_errors(tok, tmp_path):
    for empty in ["", "   ", "\t\n", "\u3000\xa0", "&nbsp;"]:
        with pytest.raises(cp.EmptyPromptError):
            tok.encode(empty)
    with pytest.raises(cp.EmptyPromptError, match="prompt 1"):
        tok(["a cat", "  ", "a dog"])
    with pytest.raises(cp.TokenizerError, match="byte offset 3"):
        tok.encode(b"abc\xff")
    with pytest.raises(cp.TokenizerError, match=r"texts\[1\]"):
        tok([b"ok", b"\xc3\x28"])
    with pytest.raises(cp.TokenizerError):
        tok.encode("lone \ud800 surrogate")
    with pytest.raises(TypeError):
        tok.encode(3)
    with pytest.raises(TypeError):
        tok([1, 2])
    with pytest.raises(cp.InvalidArgumentError):
        tok(["a"], context_length=1)
    with pytest.raises(cp.FileAccessError):
        cp.ClipTokenizer(tmp_path / "missing.txt.gz")
    bad = tmp_path / "bad.txt"
    bad.write_text("header\na b\n")
    with pytest.raises(cp.TokenizerError, match="merges"):
        cp.ClipTokenizer(bad)
    with pytest.raises(cp.InvalidArgumentError):
        cp.ClipTokenizer(cache_size=-1)
    assert tok(["a"], truncate=True).dtype == np.int32


def test_plain_text_merges_file_and_path_types(tmp_path, tok):
    txt = tmp_path / "bpe.txt"
    txt.write_bytes(gzip.decompress(Path(BPE).read_bytes()))
    t2 = cp.ClipTokenizer(str(txt).encode(), cache_size=0)
    assert t2.encode("a photo of a cat") == tok.encode("a photo of a cat") == [320, 1125, 539, 320, 2368]
    assert t2.cache_info()["slots"] == 0
    assert "ClipTokenizer(" in repr(tok) and tok.vocab_size == 49408
    assert (tok.sot_token_id, tok.eot_token_id, tok.context_length) == (SOT, EOT, 77)


def test_decode_round_trip(tok, openai, lines):
    for text in lines[::41]:
        ids = tok.encode(text)
        assert tok.decode(ids) == openai.decode(ids)
        assert tok.decode(np.array(ids, dtype=np.int64)) == openai.decode(ids)
        # decode inverts encode up to the cleaning and the word-end spaces
        assert tok.decode(ids).split() == tok.decode(tok.encode(tok.decode(ids))).split()
        row = tok([text])[0]
        assert tok.decode(row, skip_special_tokens=True) == tok.decode(ids[:75])
    # arbitrary ids: invalid UTF-8 byte sequences decode with U+FFFD exactly as Python's errors="replace"
    rng = random.Random(0)
    for _ in range(300):
        ids = [rng.randrange(0, 49406) for _ in range(rng.randrange(0, 12))]
        ids += [rng.randrange(0, 256) for _ in range(rng.randrange(0, 6))]  # raw single bytes, often invalid
        rng.shuffle(ids)
        assert tok.decode(ids) == openai.decode(ids)
    assert tok.decode([SOT, 320, EOT]) == "<|startoftext|>a <|endoftext|>"
    with pytest.raises(cp.InvalidArgumentError):
        tok.decode([49408])
    with pytest.raises(cp.InvalidArgumentError):
        tok.decode([-1])
    with pytest.raises(cp.InvalidArgumentError):
        tok.decode(5)


# ---- cache, threads, GIL ----------------------------------------------------------------------------------------


def test_cache_is_bounded_and_transparent(lines):
    sample = lines[:3000]
    small = cp.ClipTokenizer(cache_size=64)
    none = cp.ClipTokenizer(cache_size=0)
    a = small(sample)
    b = none(sample)
    assert np.array_equal(a, b)
    info = small.cache_info()
    assert info["slots"] == 64 and info["hits"] > 0 and info["misses"] > 0
    assert none.cache_info() == {"hits": 0, "misses": 0, "slots": 0}
    assert np.array_equal(small(sample), b)  # after many evictions


def test_threads_share_one_tokenizer(lines):
    """Python threads (GIL released) and OpenMP threads on one tokenizer with a tiny cache (constant eviction)."""
    shared = cp.ClipTokenizer(cache_size=64)
    solo = cp.ClipTokenizer(cache_size=0)
    chunks = [lines[i::8][:1500] for i in range(8)]
    want = [solo(c) for c in chunks]
    want_enc = [[solo.encode(t) for t in c[:200]] for c in chunks]
    got, errors = [None] * 8, []

    def work(k):
        try:
            for _ in range(2):
                got[k] = shared(chunks[k])
                assert [shared.encode(t) for t in chunks[k][:200]] == want_enc[k]
        except Exception as e:
            errors.append(e)

    old = cp.get_num_threads()
    try:
        cp.set_num_threads(4)
        ths = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
    finally:
        cp.set_num_threads(old)
    assert errors == []
    for k in range(8):
        assert np.array_equal(got[k], want[k])


def test_num_threads_do_not_change_results(tok, lines):
    old = cp.get_num_threads()
    try:
        cp.set_num_threads(1)
        one = tok(lines[:5000])
        cp.set_num_threads(3)
        three = tok(lines[:5000])
    finally:
        cp.set_num_threads(old)
    assert np.array_equal(one, three)


def test_batch_releases_the_gil(tok, lines):
    big = lines * 2
    done = threading.Event()
    ticks = 0

    def run():
        tok(big)
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
