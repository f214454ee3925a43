"""Stable Diffusion parity: cp.sd.encode_prompt against diffusers 0.42's own encode_prompt and compel 2.5, and
cp.sd.CrossAttentionKV against the UNet's attn2.to_k / to_v, on random-initialised SD 1.5, SD 2.1 and SDXL
pipelines with the real text-encoder configurations, saved by diffusers (tests/_sd_models.py; the first build takes
~2.5 min and ~5 GB of disk, once per session, or once for good with CLIPPROMPT_SD_MODELS=dir)."""
import functools

import _sd_models as M
import numpy as np
import pytest
import torch
from compel import Compel, DownweightMode, ReturnedEmbeddingsType

import clipprompt as cp

TOL = 1e-5
LONG = ". ".join(["a small boat floats on a calm lake under the morning sun"] * 12)


def rel(ours, ref):
    ref = ref.detach().float().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    scale = float(np.abs(ref).max())
    assert scale > 0
    return float(np.abs(ours - ref).max()) / scale


@functools.cache
def pipeline(family):
    return M.load_pipeline(M.session_models()[family])


@pytest.fixture(scope="module")
def models():
    return M.session_models()


def diffusers_embeds(pipe, prompt, negative, clip_skip):
    with torch.no_grad():
        return pipe.encode_prompt(prompt, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True,
                                  negative_prompt=negative, clip_skip=clip_skip)


@pytest.mark.parametrize("family", M.FAMILIES)
def test_encode_prompt_equals_diffusers(models, family):
    pipe = pipeline(family)
    prompts, negs = ["a red dress, summer", "a cat on a mat next to a window"], ["blurry, lowres", ""]
    ref = diffusers_embeds(pipe, prompts, negs, None)
    r = cp.sd.encode_prompt(prompts, negs, family=family, encoders=models[family])
    ours = [r.prompt_embeds, r.negative_prompt_embeds]
    if family == "sdxl":
        ours += [r.pooled_prompt_embeds, r.negative_pooled_prompt_embeds]
        assert r.prompt_embeds.shape == (2, 77, 2048) and r.pooled_prompt_embeds.shape == (2, 1280)
    for o, e in zip(ours, ref):
        assert rel(o, e) <= TOL
    # clip_skip and no negative prompt (SDXL base: zeros, as force_zeros_for_empty_prompt says)
    ref = diffusers_embeds(pipe, "a red dress, summer", None, 1)
    r = cp.sd.encode_prompt("a red dress, summer", family=family, encoders=models[family], clip_skip=1)
    assert rel(r.prompt_embeds, ref[0]) <= TOL
    if family == "sdxl":
        assert not np.any(r.negative_prompt_embeds) and not np.any(r.negative_pooled_prompt_embeds)
        assert torch.count_nonzero(ref[1]) == 0 and rel(r.pooled_prompt_embeds, ref[2]) <= TOL
    else:
        assert rel(r.negative_prompt_embeds, ref[1]) <= TOL


def test_pad_ids_regression(models):
    """SD 1.x and SDXL's first tokenizer pad with <|endoftext|> (49407), SD 2.x and SDXL's second with "!" (0):
    zero padding everywhere (the old behaviour) changes every position after EOT."""
    want = {("sd15", 0): 49407, ("sd2", 0): 0, ("sdxl", 0): 49407, ("sdxl", 1): 0}
    for (fam, i), pad in want.items():
        encs = cp.sd.load_encoders(models[fam])
        tok = encs.towers[i].tokenizer
        assert tok.pad_id == pad
        hf = pipeline(fam).tokenizer if i == 0 else pipeline(fam).tokenizer_2
        text = ["a red dress, summer", "", "word " * 90]
        ref = hf(text, padding="max_length", max_length=77, truncation=True).input_ids
        np.testing.assert_array_equal(tok(text), np.asarray(ref))
    encs = cp.sd.load_encoders(models["sd15"])
    enc, tok = encs.towers[0].encoder, encs.towers[0].tokenizer
    ids = tok(["a red dress, summer"])
    zero = ids.copy()
    zero[0, 7:] = 0
    good, bad = enc.hidden_states(ids), enc.hidden_states(zero)
    np.testing.assert_allclose(good[0, :7], bad[0, :7], rtol=1e-5, atol=1e-5)   # causal: before EOT equal
    assert np.abs(good[0, 7:] - bad[0, 7:]).max() > 0.1                          # after EOT: the bug
    ref = diffusers_embeds(pipeline("sd15"), "a red dress, summer", None, None)[0][0].numpy()
    assert np.abs(bad[0] - ref).max() > 0.1 and rel(good[0], ref) <= TOL


def compel_for(family, **kw):
    pipe = pipeline(family)
    if family == "sdxl":
        return Compel(tokenizer=[pipe.tokenizer, pipe.tokenizer_2],
                      text_encoder=[pipe.text_encoder, pipe.text_encoder_2],
                      returned_embeddings_type=ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED,
                      requires_pooled=[False, True], **kw)
    return Compel(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, **kw)


@pytest.mark.parametrize("prompt", ["a cat++ on a mat--", "a (red dress)1.3, (summer)0.5 beach", LONG,
                                    "a (tiny)-- house, " + LONG])
def test_compel_weighting_and_long_prompts_equal_compel(models, prompt):
    """compel syntax with compel's weights (downweighting as DownweightMode.REMOVE), and long prompts in
    77-token windows laid out as compel's truncate_long_prompts=False (the sentence splits coincide here)."""
    comp = compel_for("sd15", downweight_mode=DownweightMode.REMOVE, truncate_long_prompts=False)
    with torch.no_grad():
        ref = comp(prompt)
    r = cp.sd.encode_prompt(prompt, family="sd15", encoders=models["sd15"], weighting="compel", long_prompts="chunk")
    assert rel(r.prompt_embeds, ref) <= TOL
    if len(prompt) > 300:
        assert r.prompt_embeds.shape[1] == 77 * 3 and r.token_windows == [3]
        # the negative ("" here) is padded with empty windows to the same length, as compel pads conditionings
        [_, neg] = comp.pad_conditioning_tensors_to_same_length([ref, comp("")])
        assert rel(r.negative_prompt_embeds, neg) <= TOL


def test_compel_sdxl_pooled(models):
    """compel's pooled vector is that of the prompt as written (syntax included): so is ours for "compel"."""
    comp = compel_for("sdxl", downweight_mode=DownweightMode.REMOVE)
    prompt = "a (red dress)1.3, (summer)0.6 beach++"
    with torch.no_grad():
        ref, ref_pooled = comp(prompt)
    r = cp.sd.encode_prompt(prompt, family="sdxl", encoders=models["sdxl"], weighting="compel")
    assert rel(r.prompt_embeds, ref) <= TOL and rel(r.pooled_prompt_embeds, ref_pooled) <= TOL


def test_a1111_weighting_is_emphasis_on_the_right_tokens(models):
    encs = cp.sd.load_encoders(models["sd15"])
    enc, tok = encs.towers[0].encoder, encs.towers[0].tokenizer
    r = cp.sd.encode_prompt("a (red:1.5) [dress] BREAK summer", family="sd15", encoders=encs, weighting="a1111",
                            long_prompts="chunk", negative="")
    assert r.prompt_embeds.shape == (1, 154, 768) and r.token_windows == [2]
    ids = np.asarray([tok.window(tok.encode("a red dress")), tok.window(tok.encode("summer"))], np.int32)
    z = enc.hidden_states(ids)
    w = np.ones((77, 1), np.float32)
    w[2], w[3] = 1.5, 1 / 1.1
    # A1111 rescales the window to its original mean; a random-init tower's final LayerNorm (gain 1, bias 0) makes
    # that mean ~0, so the scale factor is noise-sensitive: check the shape (weights on the right tokens) exactly
    # and the factor as a finite scalar
    first = z[0] * w
    got = r.prompt_embeds[0, :77]
    c = float((got * first).sum(dtype=np.float64) / (first * first).sum(dtype=np.float64))
    assert np.isfinite(c) and c != 0
    np.testing.assert_allclose(got, c * first, rtol=1e-4, atol=1e-5 * abs(c))
    np.testing.assert_allclose(r.prompt_embeds[0, 77:], z[1], rtol=1e-5, atol=1e-5)  # batch order: ~1e-6


def test_encoder_objects_and_cache(models):
    enc = cp.ClipTextEncoder.from_pretrained(models["sd2"] + "/text_encoder")
    cache = cp.PromptCache(capacity_bytes=64 << 20)
    a = cp.sd.encode_prompt("a red dress, summer", family="sd2", encoders=enc, cache=cache)
    b = cp.sd.encode_prompt("a red dress, summer", family="sd2", encoders=models["sd2"], cache=cache)
    np.testing.assert_array_equal(a.prompt_embeds, b.prompt_embeds)
    assert cache.stats()["hits"] >= 2
    ref = diffusers_embeds(pipeline("sd2"), "a red dress, summer", None, None)
    assert rel(a.prompt_embeds, ref[0]) <= TOL and rel(a.negative_prompt_embeds, ref[1]) <= TOL


def test_bigG_text_config_loads(models):
    enc = cp.sd.load_encoders(models["sdxl"]).towers[1].encoder
    c = enc.config
    assert (c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"], c["hidden_act"],
            c["projection_dim"], c["intermediate_size"]) == (1280, 32, 20, "gelu", 1280, 5120)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_cross_attention_kv_equals_unet(models, family):
    pipe = pipeline(family)
    kv = cp.sd.CrossAttentionKV.from_unet(models[family])
    names = sorted(n for n, _ in pipe.unet.named_modules() if n.endswith("attn2"))
    assert sorted(kv.layers) == names
    width = 2048 if family == "sdxl" else 768
    emb = np.random.default_rng(0).standard_normal((2, 154, width)).astype(np.float32)
    out = kv.compute(emb)
    with torch.no_grad():
        for name in names:
            mod = pipe.unet.get_submodule(name)
            k, v = out[name]
            assert rel(k, mod.to_k(torch.from_numpy(emb))) <= TOL and rel(v, mod.to_v(torch.from_numpy(emb))) <= TOL
    half = kv.compute(emb, dtype="float16")
    assert all(k.dtype == np.float16 for k, _ in half.values())
    assert max(rel(half[n][0].astype(np.float32), out[n][0]) for n in names) < 2e-3


def test_kv_cache_hits_evicts_and_stays_exact(models):
    kv = cp.sd.CrossAttentionKV.from_unet(models["sd15"] + "/unet/diffusion_pytorch_model.safetensors")
    per = kv.bytes_per_prompt(77)
    assert per == sum(2 * 77 * k.shape[0] * 4 for k, _ in kv.layers.values())
    rng = np.random.default_rng(1)
    embs = [rng.standard_normal((1, 77, 768)).astype(np.float32) for _ in range(3)]
    first = kv.get_or_compute(embs[0])
    again = kv.get_or_compute(embs[0].copy())
    for n in first:
        np.testing.assert_array_equal(first[n][0], again[n][0])
        np.testing.assert_array_equal(first[n][1], again[n][1])
    assert kv.stats()["hits"] == 2 * len(kv)
    h16 = kv.get_or_compute(embs[1], dtype="float16")
    h16b = kv.get_or_compute(embs[1], dtype="float16")
    for n in h16:
        assert h16b[n][0].dtype == np.float16
        np.testing.assert_array_equal(h16[n][0], h16b[n][0])
    small = cp.sd.CrossAttentionKV.from_unet(models["sd15"], capacity_bytes=int(per * 1.5))
    for e in embs:
        small.get_or_compute(e)
    assert small.stats()["evictions"] > 0 and small.stats()["bytes"] <= int(per * 1.5)
    got = small.get_or_compute(embs[0])  # evicted: recomputed, still exact
    ref = small.compute(embs[0])
    for n in ref:
        np.testing.assert_array_equal(got[n][0], ref[n][0])
    with pytest.raises(cp.DimensionMismatchError, match="1024"):
        kv.compute(np.zeros((1, 77, 1024), np.float32))
    with pytest.raises(cp.FileAccessError):
        cp.sd.CrossAttentionKV.from_unet(models["sd15"] + "/text_encoder/nothing-here")
