"""SD prompts: chunking at word/punctuation/CJK-word boundaries, chunked hidden states [B, 77·n, W] equal to manual
per-chunk encodes, padding, the hidden-state cache entries, negative prompts. CLIP = a small random-init
CLIPTextModel saved with save_pretrained into a tmp dir."""


import _prompt_helpers as helpers
import numpy as np
import pytest
from conftest import read_lines

import clipprompt as cp
from clipprompt import sd

TAGS = ", ".join(["masterpiece", "best quality", "a portrait of an old sailor with a grey beard",
                  "wearing a blue knitted hat", "dramatic rim lighting", "oil painting on canvas",
                  "highly detailed face", "stormy sea in the background", "seagulls flying overhead",
                  "by a famous painter", "golden hour", "rich colours", "sharp focus", "film grain"] * 3)
ZH = "一位穿着红色连衣裙的女孩站在海边的岩石上看着日落时分金色的天空和远处的帆船" * 4


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return helpers.save_tiny_clip(tmp_path_factory.mktemp("tinyclip"))


@pytest.fixture(scope="module")
def clip(clip_dir):
    return cp.ClipTextEncoder.from_pretrained(clip_dir)


@pytest.fixture(scope="module")
def tok():
    return helpers.clip_tokenizer()


def test_short_prompt_is_one_chunk(tok):
    assert sd.chunk_prompt("a red dress", tok) == ["a red dress"]
    assert sd.chunk_prompt("   ", tok) == [""]
    ids = sd.chunk_ids("a red dress", tok)
    np.testing.assert_array_equal(ids, tok(["a red dress"]))


@pytest.mark.parametrize("text", [TAGS, ZH, TAGS + " " + ZH, " ".join(read_lines("captions/coco_dev_caps.txt")[:12])])
def test_chunks_fit_and_lose_nothing(tok, text):
    chunks = sd.chunk_prompt(text, tok)
    assert len(chunks) >= 2
    for c in chunks:
        assert 0 < len(tok.encode(c)) <= 75, c
    # the chunks are the text, cut: nothing lost, reordered or added (spaces aside)
    assert "".join(chunks).replace(" ", "") == text.replace(" ", "")
    ids = sd.chunk_ids(text, tok)
    assert ids.shape == (len(chunks), 77) and ids.dtype == np.int32
    for row, c in zip(ids, chunks):
        np.testing.assert_array_equal(row, tok([c])[0])


def test_cuts_at_word_and_punctuation_boundaries(tok):
    chunks = sd.chunk_prompt(TAGS, tok)
    words = TAGS.split()
    # every chunk is a run of whole words of the prompt (no word cut in two)
    pos = 0
    for c in chunks:
        cw = c.split()
        assert words[pos:pos + len(cw)] == cw
        pos += len(cw)
    assert pos == len(words)
    # every chunk but the last ends at a comma (the tags are short: there is always one within 20 tokens)
    assert all(c.endswith(",") for c in chunks[:-1])


def test_cjk_cut_at_segmenter_boundaries(tok):
    chunks = sd.chunk_prompt(ZH, tok)
    bounds, pos = {0}, 0
    for w in cp.segment(ZH):
        pos += len(w)
        bounds.add(pos)
    pos = 0
    for c in chunks[:-1]:
        pos += len(c)
        assert pos in bounds, (pos, c[-4:])


def test_one_huge_word_falls_back_to_characters(tok):
    word = "x" * 400
    chunks = sd.chunk_prompt(word, tok)
    assert "".join(chunks) == word and all(len(tok.encode(c)) <= 75 for c in chunks)


def test_hidden_states_equal_manual_chunk_encodes(clip, tok):
    texts = [TAGS, "a cat on a mat", ZH]
    hs = sd.chunked_hidden_states(clip, texts, tokenizer=tok)
    n = max(len(sd.chunk_prompt(t, tok)) for t in texts)
    assert hs.shape == (3, 77 * n, clip.width) and hs.dtype == np.float32
    empty = np.zeros((1, 77), np.int32)
    empty[0, :2] = (sd.SOT, sd.EOT)
    pad = clip.hidden_states(empty)[0]
    for b, t in enumerate(texts):
        chunks = sd.chunk_prompt(t, tok)
        for i, c in enumerate(chunks):
            np.testing.assert_allclose(hs[b, 77 * i:77 * (i + 1)], clip.hidden_states([c])[0], atol=1e-5, rtol=1e-5)
        for i in range(len(chunks), n):  # padded with SD's unconditional window
            np.testing.assert_allclose(hs[b, 77 * i:77 * (i + 1)], pad, atol=1e-5, rtol=1e-5)
    # a short prompt is exactly the plain hidden states
    np.testing.assert_allclose(sd.chunked_hidden_states(clip, ["a cat on a mat"], tokenizer=tok)[0],
                               clip.hidden_states(["a cat on a mat"])[0], atol=1e-6)


def test_hidden_states_layer(clip, tok):
    hs = sd.chunked_hidden_states(clip, [TAGS], layer=-2, tokenizer=tok)
    c0 = sd.chunk_prompt(TAGS, tok)[0]
    np.testing.assert_allclose(hs[0, :77], clip.hidden_states([c0], layer=-2)[0], atol=1e-5, rtol=1e-5)
    assert not np.allclose(hs[0, :77], clip.hidden_states([c0], layer=-1)[0])


def test_hidden_states_cached(clip, tok):
    cache = cp.PromptCache()
    a = sd.chunked_hidden_states(clip, [TAGS, "a dog"], tokenizer=tok, cache=cache)
    s1 = cache.stats()
    assert s1["misses"] == 2 and s1["entries"] == 2
    b = sd.chunked_hidden_states(clip, [TAGS, "a dog"], tokenizer=tok, cache=cache)
    s2 = cache.stats()
    assert s2["hits"] - s1["hits"] == 2 and s2["misses"] == s1["misses"]
    np.testing.assert_array_equal(a, b)
    # the entry is a hidden-state entry of kind hidden:<layer>:chunked, separate from the pooled vectors
    v = cache.get(clip.fingerprint, "a dog", kind="hidden:-1:chunked")
    assert v is not None and v.size == 77 * clip.width
    assert cache.get(clip.fingerprint, "a dog") is None


def test_negative_prompt_helper():
    neg = sd.negative_prompt()
    terms = neg.split(", ")
    assert "watermark" in terms and "lowres" in terms and len(terms) == len(set(terms))
    assert "bad hands" in sd.negative_prompt("people")
    both = sd.negative_prompt(["quality", "quality", "photo"], extra=["nsfw", "NSFW "])
    assert both.split(", ").count("nsfw") == 1 and "cartoon" in both
    # a term the positive prompt asks for is never negated
    neg = sd.negative_prompt(["quality", "photo"], positive="a blurry watercolor painting of a cat")
    assert "blurry" not in neg.split(", ") and "painting" not in neg.split(", ") and "cartoon" in neg
    assert "text" not in sd.negative_prompt(exclude=["TEXT"]).split(", ")
    with pytest.raises(cp.InvalidArgumentError, match="unknown preset"):
        sd.negative_prompt("nope")


def test_encode_pair(clip, tok):
    cache = cp.PromptCache()
    cond, uncond = sd.encode_pair(clip, TAGS, "", tokenizer=tok, cache=cache)
    n = len(sd.chunk_prompt(TAGS, tok))
    assert cond.shape == uncond.shape == (1, 77 * n, clip.width)
    cond2, uncond2 = sd.encode_pair(clip, "a cat", tokenizer=tok, cache=cache)  # default negative prompt
    assert cond2.shape == uncond2.shape
    assert cache.stats()["entries"] >= 4
