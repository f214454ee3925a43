"""SD prompts without the big models: the SD tokenizer layout (pad ids), 75-token windows at punctuation / word /
CJK-word boundaries and BREAK, encode_prompt's layout and errors on a tiny random-init CLIP tower, the cache
entries, negative-prompt presets. (Parity with diffusers / compel: test_sd_diffusers.py.)"""
import itertools

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
def clip(tmp_path_factory):
    return cp.ClipTextEncoder.from_pretrained(helpers.save_tiny_clip(tmp_path_factory.mktemp("tinyclip")))


@pytest.fixture(scope="module")
def tok():
    return sd.SDTokenizer()


def test_sd_tokenizer_layout(tok):
    ids = tok(["a red dress, summer", ""])
    assert ids.shape == (2, 77) and ids.dtype == np.int32
    assert list(ids[0, :7]) == [sd.SOT, 320, 736, 2595, 267, 1673, sd.EOT] and set(ids[0, 7:]) == {sd.EOT}
    assert list(ids[1, :2]) == [sd.SOT, sd.EOT] and set(ids[1, 2:]) == {sd.EOT}
    bang = sd.SDTokenizer(pad_id=0)(["a red dress, summer"])
    assert set(bang[0, 7:]) == {0}
    long = tok(["word " * 100])[0]
    assert long[-1] == sd.EOT and len(long) == 77  # truncated to 75 + SOT/EOT
    with pytest.raises(cp.ModelFormatError, match="pad id"):
        sd.SDTokenizer(pad_id=10 ** 6)


def test_tokenizer_dir_is_read_and_checked(tmp_path, tok):
    import json

    vocab = {v: i for i, v in enumerate(tok.vocab)}
    d = tmp_path / "tok"
    d.mkdir()
    (d / "tokenizer.json").write_text(json.dumps({"model": {"vocab": vocab, "merges": []}}))
    with pytest.raises(cp.ModelFormatError, match="vocabulary"):
        sd.SDTokenizer.from_pretrained(d)
    with pytest.raises(cp.FileAccessError):
        sd.SDTokenizer.from_pretrained(tmp_path)


def windows(ids, vocab, **kw):
    return sd.chunk_token_ids(ids, vocab, **kw)


@pytest.mark.parametrize("text", [TAGS, " ".join(read_lines("captions/coco_dev_caps.txt")[:14])])
def test_windows_fit_lose_nothing_and_end_at_word_ends(tok, text):
    ids = tok.encode(text)
    wins = windows(ids, tok.vocab)
    assert len(wins) >= 2 and wins[0][0] == 0 and wins[-1][1] == len(ids)
    for (_, b), (c, _) in itertools.pairwise(wins):
        assert b == c  # contiguous: nothing lost or repeated
    for a, b in wins:
        assert 0 < b - a <= 75
        assert tok.vocab[ids[b - 1]].endswith("</w>")  # never inside a word


def test_windows_prefer_punctuation(tok):
    ids = tok.encode(TAGS)
    for _, b in windows(ids, tok.vocab)[:-1]:
        assert tok.vocab[ids[b - 1]] == ",</w>"  # the tags are short: a comma within 20 tokens


def test_windows_breaks_and_huge_word(tok):
    ids = tok.encode("a cat " * 10 + "on a mat")
    assert windows(ids, tok.vocab, breaks=[4]) == [(0, 4), (4, len(ids))]
    word = tok.encode("x" * 400)
    wins = windows(word, tok.vocab)
    assert all(b - a <= 75 for a, b in wins) and wins[-1][1] == len(word)
    assert windows([], tok.vocab) == [(0, 0)]
    with pytest.raises(cp.InvalidArgumentError):
        windows(ids, tok.vocab, window=0)


def test_encode_prompt_layout(clip):
    r = sd.encode_prompt("a cat on a mat", family="sd15", encoders=clip)
    ids = sd.SDTokenizer()(["a cat on a mat", ""])
    h = clip.hidden_states(ids)
    np.testing.assert_allclose(r.prompt_embeds[0], h[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(r.negative_prompt_embeds[0], h[1], rtol=1e-6, atol=1e-6)
    assert r.pooled_prompt_embeds is None and set(r.as_kwargs()) == {"prompt_embeds", "negative_prompt_embeds"}
    # long prompts: truncated as diffusers, or every window; the negative padded with empty windows
    t = sd.encode_prompt(TAGS, family="sd15", encoders=clip)
    c = sd.encode_prompt(TAGS, "ugly", family="sd15", encoders=clip, long_prompts="chunk")
    n = c.token_windows[0]
    assert t.prompt_embeds.shape == (1, 77, 32) and c.prompt_embeds.shape == (1, 77 * n, 32) and n >= 3
    np.testing.assert_allclose(c.negative_prompt_embeds[0, 77:154], h[1], rtol=1e-6, atol=1e-6)
    # CJK: windows end between segmenter words
    z = sd.encode_prompt(ZH, family="sd15", encoders=clip, long_prompts="chunk")
    assert z.token_windows[0] >= 2


def test_encode_prompt_cache(clip):
    cache = cp.PromptCache()
    a = sd.encode_prompt([TAGS, "a dog"], ["", "ugly"], family="sd15", encoders=clip, long_prompts="chunk",
                         cache=cache)
    s1 = cache.stats()
    b = sd.encode_prompt([TAGS, "a dog"], ["", "ugly"], family="sd15", encoders=clip, long_prompts="chunk",
                         cache=cache)
    s2 = cache.stats()
    assert s2["hits"] - s1["hits"] == 5 and s2["misses"] == s1["misses"]  # 4 prompts + the empty window
    np.testing.assert_array_equal(a.prompt_embeds, b.prompt_embeds)
    np.testing.assert_array_equal(a.negative_prompt_embeds, b.negative_prompt_embeds)


def test_encode_prompt_errors(clip):
    with pytest.raises(cp.InvalidArgumentError, match="family"):
        sd.encode_prompt("x", family="sd3", encoders=clip)
    with pytest.raises(cp.InvalidArgumentError, match="long_prompts"):
        sd.encode_prompt("x", encoders=clip, long_prompts="wrap")
    with pytest.raises(cp.InvalidArgumentError, match="clip_skip"):
        sd.encode_prompt("x", encoders=clip, clip_skip=-1)
    with pytest.raises(cp.InvalidArgumentError, match="clip_skip"):
        sd.encode_prompt("x", encoders=clip, clip_skip=5)  # a 2-layer tower
    with pytest.raises(cp.InvalidArgumentError, match="encoders"):
        sd.encode_prompt("x")
    with pytest.raises(cp.InvalidArgumentError, match="2 ClipTextEncoder"):
        sd.encode_prompt("x", family="sdxl", encoders=clip)
    with pytest.raises(cp.DimensionMismatchError):
        sd.encode_prompt(["a", "b"], ["c"], encoders=clip)
    with pytest.raises(cp.TokenizerError, match="position 2"):
        sd.encode_prompt("a (b", encoders=clip, weighting="a1111")
    with pytest.raises(cp.FileAccessError, match=r"model_index\.json"):
        sd.encode_prompt("x", encoders="/nonexistent/pipeline")


def test_kv_from_weights_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    w = {"mid_block.attentions.0.transformer_blocks.0.attn2": (rng.standard_normal((16, 8)).astype(np.float32),
                                                               rng.standard_normal((16, 8)).astype(np.float32))}
    kv = sd.CrossAttentionKV(w, "t")
    e = rng.standard_normal((1, 5, 8)).astype(np.float32)
    k, _ = kv.compute(e)["mid_block.attentions.0.transformer_blocks.0.attn2"]
    np.testing.assert_allclose(k, e @ w["mid_block.attentions.0.transformer_blocks.0.attn2"][0].T, rtol=1e-6)
    with pytest.raises(cp.InvalidArgumentError, match="NaN"):
        kv.compute(np.full((1, 5, 8), np.nan, np.float32))
    with pytest.raises(cp.InvalidArgumentError, match="dtype"):
        kv.compute(e, dtype="int8")
    with pytest.raises(cp.ModelFormatError):
        sd.CrossAttentionKV({}, "t")
    with pytest.raises(cp.FileAccessError):
        sd.CrossAttentionKV.from_unet(tmp_path)


def test_safetensors_views(tmp_path):
    import torch
    from safetensors.torch import save_file

    t = {"a": torch.arange(12, dtype=torch.float32).reshape(3, 4), "b": torch.ones(5, dtype=torch.bfloat16),
         "c": torch.arange(6, dtype=torch.float16)}
    save_file(t, str(tmp_path / "m.safetensors"))
    f = cp._C.SafetensorsFile(str(tmp_path / "m.safetensors"))
    a = f.array("a")
    assert a.shape == (3, 4) and not a.flags.writeable and a[2, 3] == 11
    with pytest.raises(ValueError):
        a[0, 0] = 1
    assert f.info("b") == ("BF16", (5,)) and "c" in f and len(f) == 3
    np.testing.assert_array_equal(f.to_float32("b"), np.ones(5, np.float32))
    np.testing.assert_array_equal(f.array("c"), np.arange(6, dtype=np.float16))
    with pytest.raises(cp.ModelFormatError, match="to_float32"):
        f.array("b")
    with pytest.raises(cp.ModelFormatError, match="'zz'"):
        f.array("zz")
    del f
    assert a.sum() == 66  # the view keeps the mapping alive
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(cp.ClipPromptError):
        cp._C.SafetensorsFile(str(tmp_path / "bad.safetensors"))


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


def test_chunk_prompt_and_encode_pair(clip, tok):
    chunks = sd.chunk_prompt(TAGS)
    assert len(chunks) >= 3 and all(0 < len(tok.encode(c)) <= 75 for c in chunks)
    assert all(c.endswith(",") for c in chunks[:-1])
    assert sd.chunk_prompt("  ") == [""] and sd.chunk_prompt("a cat on a mat") == ["a cat on a mat"]
    with pytest.raises(cp.InvalidArgumentError, match="window"):
        sd.chunk_prompt("a cat", window=0)
    cond, uncond = sd.encode_pair(clip, TAGS, "", layer=-2)
    r = sd.encode_prompt(TAGS, "", family="sd15", encoders=clip, clip_skip=1, long_prompts="chunk",
                         negative_clip_skip=True)
    np.testing.assert_array_equal(cond, r.prompt_embeds)
    np.testing.assert_array_equal(uncond, r.negative_prompt_embeds)
    c2, u2 = sd.encode_pair(clip, "a cat")  # the default negative prompt, padded to the same windows
    assert c2.shape == u2.shape and c2.shape[1] % 77 == 0
    with pytest.raises(cp.InvalidArgumentError, match="layer"):
        sd.encode_pair(clip, "a cat", layer=9)
