"""CLIP text tower in C vs transformers / open_clip (random-initialised models of the real shapes), and the
safetensors reader's error handling.

Parity bound (issue 4): |ours - ref| <= 1e-4 everywhere, and per row ||ours - ref|| / ||ref|| <= 1e-5.
"""
import json
import os
import random
import struct
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import transformers
from conftest import read_lines
from safetensors.torch import load_file, save_file

import clipprompt as cp

ATOL, RTOL_ROW = 1e-4, 1e-5


def assert_close(ours, ref, what):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
    diff = np.abs(ours - ref)
    bad = np.argwhere(diff > ATOL)
    assert bad.size == 0, f"{what}: max abs diff {diff.max():.3g} at {bad[:5].tolist()}"
    r = ours.reshape(ours.shape[0], -1)
    f = ref.reshape(ref.shape[0], -1)
    rel = np.linalg.norm(r - f, axis=1) / np.maximum(np.linalg.norm(f, axis=1), 1e-30)
    assert rel.max() <= RTOL_ROW, f"{what}: max row relative diff {rel.max():.3g} (row {int(rel.argmax())})"
    return diff.max(), rel.max()


@pytest.fixture(scope="module")
def prompts():
    caps = read_lines("captions/coco_dev_caps.txt")[:40] + read_lines("captions/f30k_dev_caps.txt")[:20]
    rng = random.Random(0)
    extra = ["a photo of a cat.", "x", "a " + "very " * 90 + "long prompt that gets truncated",
             "itap of a {}.".format("tench"), "  spaced   out  ", "émoji 🐱 and ünïcode"]
    out = caps + extra
    rng.shuffle(out)
    return out


@pytest.fixture(scope="module")
def ids(prompts):
    return open_clip.tokenize(prompts).numpy().astype(np.int32)


def hf_text_model(cls, tmp_path_factory, name, dtype=None, **cfg):
    torch.manual_seed(hash(name) % 1000)
    config = transformers.CLIPTextConfig(**cfg)
    model = cls(config).eval()
    d = tmp_path_factory.mktemp(name)
    if dtype is not None:
        model.to(dtype).save_pretrained(d)
        model.float()
    else:
        model.save_pretrained(d)
    return model, str(d)


def hf_reference(model, ids, layers=(-1,)):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids, dtype=torch.long), output_hidden_states=True)
    tm = getattr(model, "text_model", model)
    pooled = out.text_embeds if hasattr(out, "text_embeds") else out.pooler_output
    hs = {}
    for layer in layers:
        with torch.no_grad():
            hs[layer] = tm.final_layer_norm(out.hidden_states[layer]).numpy()
    return pooled.numpy(), hs


B32 = dict(hidden_size=512, intermediate_size=2048, num_attention_heads=8, num_hidden_layers=12, projection_dim=512)
L14 = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12, projection_dim=768)


def check_model(model, path, ids, layers=(-1, -2, 6)):
    enc = cp.ClipTextEncoder.from_pretrained(path)
    pooled_ref, hs_ref = hf_reference(model, ids, layers)
    assert_close(enc.encode(ids, normalize=False), pooled_ref, "pooled")
    normed = enc.encode(ids)
    assert_close(normed, pooled_ref / np.linalg.norm(pooled_ref, axis=1, keepdims=True), "normalized")
    for layer in layers:
        assert_close(enc.hidden_states(ids, layer=layer), hs_ref[layer], f"hidden_states layer {layer}")
    return enc


def test_b32_with_projection(tmp_path_factory, ids):
    model, path = hf_text_model(transformers.CLIPTextModelWithProjection, tmp_path_factory, "b32", **B32)
    enc = check_model(model, path, ids[:32])
    assert enc.dim == 512 and enc.width == 512
    assert enc.config["num_hidden_layers"] == 12 and enc.config["hidden_act"] == "quick_gelu"
    assert enc.config["pooling"] == "eos_token_id"
    assert enc.hidden_states(ids[:2]).shape == (2, 77, 512)
    # the fingerprint depends on the weights: same file -> same, reloaded -> same
    assert enc.fingerprint == cp.ClipTextEncoder.from_pretrained(path).fingerprint
    # packing prompts of different lengths gives the same vectors as encoding them one by one
    one = np.concatenate([enc.encode(ids[i:i + 1], normalize=False) for i in range(8)])
    assert_close(one, enc.encode(ids[:8], normalize=False), "packed vs single")
    # batch_size / progress only change the chunking
    assert_close(enc.encode(ids, batch_size=7, progress=True), enc.encode(ids), "batch_size=7")


def test_l14_sd1_text_encoder_no_projection(tmp_path_factory, ids):
    model, path = hf_text_model(transformers.CLIPTextModel, tmp_path_factory, "l14", **L14)
    enc = check_model(model, path, ids[:16], layers=(-1, -2, 0, 5))
    assert enc.dim == 768 and enc.config["projection_dim"] == 0
    # a diffusers pipeline directory: text_encoder/ is used
    root = os.path.dirname(path)
    os.symlink(path, os.path.join(root, "text_encoder"))
    assert cp.ClipTextEncoder.from_pretrained(root).fingerprint == enc.fingerprint


def test_l14_with_projection_gelu_fewer_layers(tmp_path_factory, ids):
    cfg = dict(L14, num_hidden_layers=3, hidden_act="gelu")
    model, path = hf_text_model(transformers.CLIPTextModelWithProjection, tmp_path_factory, "l14g", **cfg)
    enc = check_model(model, path, ids[:32], layers=(-1, -2, 1))
    assert enc.config["hidden_act"] == "gelu"


def test_full_clip_model_reads_text_tower_only(tmp_path_factory, ids):
    ids = ids[:32]
    torch.manual_seed(3)
    config = transformers.CLIPConfig(text_config=dict(B32, num_hidden_layers=4),
                                     vision_config=dict(hidden_size=64, intermediate_size=128, num_attention_heads=2,
                                                        num_hidden_layers=1, image_size=32, patch_size=16),
                                     projection_dim=256)
    model = transformers.CLIPModel(config).eval()
    d = tmp_path_factory.mktemp("clipmodel")
    model.save_pretrained(d)
    enc = cp.ClipTextEncoder.from_pretrained(d)
    assert enc.dim == 256
    t = torch.tensor(ids, dtype=torch.long)
    with torch.no_grad():
        ref = model.get_text_features(input_ids=t)
        ref = ref.pooler_output if hasattr(ref, "pooler_output") else ref
        out = model.text_model(input_ids=t, output_hidden_states=True)
        hs = model.text_model.final_layer_norm(out.hidden_states[-2]).numpy()
    assert_close(enc.encode(ids, normalize=False), ref.numpy(), "CLIPModel pooled")
    assert_close(enc.hidden_states(ids, layer=-2), hs, "CLIPModel layer -2")
    # the vision tensors are present in the file but never bound: corrupting their bytes changes nothing
    f = os.path.join(d, "model.safetensors")
    info = cp._C._safetensors_info(f)
    assert any(k.startswith("vision_model.") for k in info)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_checkpoints_load(tmp_path_factory, ids, dtype):
    cfg = dict(B32, num_hidden_layers=2)
    model, path = hf_text_model(transformers.CLIPTextModelWithProjection, tmp_path_factory, f"half{dtype}",
                                dtype=dtype, **cfg)
    info = cp._C._safetensors_info(os.path.join(path, "model.safetensors"))
    assert {v[0] for v in info.values()} == {"F16" if dtype == torch.float16 else "BF16"}
    # the reference: the same model with its weights rounded to the stored dtype, computed in fp32
    model.to(dtype).float()
    check_model(model, path, ids, layers=(-1, -2))


def test_eos_token_rules(tmp_path_factory):
    """HF: argmax(id) when config.eos_token_id == 2 (old configs), else the first eos_token_id position (0 if none)."""
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 1000, size=(6, 77)).astype(np.int32)
    ids[0, 5] = 49407                 # an EOT
    ids[1, 7] = 999 + 5000            # no EOT, a large id
    ids[2, 3] = 7
    ids[2, 9] = 7
    for eos in (2, 49407, 7):
        cfg = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=2,
                   projection_dim=32, eos_token_id=eos)
        model, path = hf_text_model(transformers.CLIPTextModelWithProjection, tmp_path_factory, f"eos{eos}", **cfg)
        enc = cp.ClipTextEncoder.from_pretrained(path)
        assert enc.config["pooling"] == ("argmax" if eos == 2 else "eos_token_id")
        pooled_ref, _ = hf_reference(model, ids)
        assert_close(enc.encode(ids, normalize=False), pooled_ref, f"eos_token_id={eos}")


def openclip_state_dict(model, with_visual=True):
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()
          if with_visual or not k.startswith("visual.")}
    return sd


@pytest.fixture(scope="module")
def openclip_b32():
    torch.manual_seed(5)
    model = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    # open_clip initialises some text weights with tiny std; give every tensor visible random values
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("visual.") and p.dim() >= 1 and "ln" not in name:
                p.add_(torch.randn_like(p) * (0.02 if p.dim() > 1 else 0.01))
    return model


def test_openclip_layout_file(tmp_path, openclip_b32, ids):
    model = openclip_b32
    ids = ids[:24]
    f = str(tmp_path / "open_clip_b32.safetensors")
    save_file(openclip_state_dict(model), f)
    t = torch.tensor(ids, dtype=torch.long)
    with torch.no_grad():
        ref = model.encode_text(t).numpy()
    # ViT-B-32 (not -quickgelu) is trained with nn.GELU: say so (an OpenAI checkpoint needs nothing: quick_gelu)
    enc = cp.ClipTextEncoder.from_pretrained(f, hidden_act="gelu")
    assert enc.config["layout"] == "open_clip" and enc.config["num_attention_heads"] == 8
    assert_close(enc.encode(ids, normalize=False), ref, "open_clip pooled")
    # the same via open_clip_config.json beside the file
    with open(tmp_path / "open_clip_config.json", "w") as fh:
        json.dump({"model_cfg": {"text_cfg": {"width": 512, "heads": 8, "layers": 12}, "quick_gelu": False}}, fh)
    enc2 = cp.ClipTextEncoder.from_pretrained(f)
    assert enc2.config["hidden_act"] == "gelu"
    assert_close(enc2.encode(ids[:8], normalize=False), ref[:8], "open_clip + open_clip_config.json")
    # hidden states: last layer output through ln_final, as open_clip computes before pooling
    with torch.no_grad():
        x = model.token_embedding(t) + model.positional_embedding
        x = model.transformer(x, attn_mask=model.attn_mask)
        hs = model.ln_final(x).numpy()
    assert_close(enc.hidden_states(ids[:16]), hs[:16], "open_clip hidden states")


def test_openclip_remapped_from_hf_quickgelu(tmp_path_factory, tmp_path, ids):
    """An OpenAI-layout file made by remapping a HF checkpoint (quick_gelu, text_projection transposed)."""
    model, path = hf_text_model(transformers.CLIPTextModelWithProjection, tmp_path_factory, "remap",
                                **dict(B32, num_hidden_layers=3))
    hf = load_file(os.path.join(path, "model.safetensors"))
    sd = {"token_embedding.weight": hf["text_model.embeddings.token_embedding.weight"],
          "positional_embedding": hf["text_model.embeddings.position_embedding.weight"],
          "ln_final.weight": hf["text_model.final_layer_norm.weight"],
          "ln_final.bias": hf["text_model.final_layer_norm.bias"],
          "text_projection": hf["text_projection.weight"].t().contiguous(),
          "logit_scale": torch.tensor(4.6)}
    for i in range(3):
        p = f"text_model.encoder.layers.{i}."
        q = f"transformer.resblocks.{i}."
        sd[q + "attn.in_proj_weight"] = torch.cat([hf[p + f"self_attn.{n}_proj.weight"] for n in "qkv"])
        sd[q + "attn.in_proj_bias"] = torch.cat([hf[p + f"self_attn.{n}_proj.bias"] for n in "qkv"])
        for a, b in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                     ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
            sd[q + a + ".weight"] = hf[p + b + ".weight"]
            sd[q + a + ".bias"] = hf[p + b + ".bias"]
    f = str(tmp_path / "openai.safetensors")
    save_file(sd, f)
    enc = cp.ClipTextEncoder.from_pretrained(f)
    assert enc.config["hidden_act"] == "quick_gelu" and enc.config["layout"] == "open_clip"
    pooled_ref, hs_ref = hf_reference(model, ids, (-1, -2))
    assert_close(enc.encode(ids, normalize=False), pooled_ref, "remapped pooled")
    assert_close(enc.hidden_states(ids, layer=-2), hs_ref[-2], "remapped layer -2")


# ---- bad inputs and bad files --------------------------------------------------------------------------------

TINY = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2, projection_dim=16,
            vocab_size=49408)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model, path = hf_text_model(transformers.CLIPTextModelWithProjection, tmp_path_factory, "tiny", **TINY)
    return model, path


def copy_dir(src, dst, skip=()):
    os.makedirs(dst, exist_ok=True)
    for n in os.listdir(src):
        if n not in skip:
            with open(os.path.join(src, n), "rb") as a, open(os.path.join(dst, n), "wb") as b:
                b.write(a.read())
    return dst


def test_missing_tensors_are_listed(tiny, tmp_path):
    _, path = tiny
    sd = load_file(os.path.join(path, "model.safetensors"))
    del sd["text_model.encoder.layers.1.mlp.fc2.weight"], sd["text_model.final_layer_norm.bias"]
    d = copy_dir(path, str(tmp_path / "m"), skip=("model.safetensors",))
    save_file(sd, os.path.join(d, "model.safetensors"))
    with pytest.raises(cp.ModelFormatError) as e:
        cp.ClipTextEncoder.from_pretrained(d)
    msg = str(e.value)
    assert "2 tensors missing" in msg
    assert "text_model.encoder.layers.1.mlp.fc2.weight" in msg and "text_model.final_layer_norm.bias" in msg


def test_wrong_shape_names_tensor(tiny, tmp_path):
    _, path = tiny
    d = copy_dir(path, str(tmp_path / "m"))
    cfg = json.loads(Path(os.path.join(d, "config.json")).read_text())
    cfg["intermediate_size"] = 96
    Path(os.path.join(d, "config.json")).write_text(json.dumps(cfg))
    with pytest.raises(cp.ModelFormatError, match=r"mlp\.fc1\.weight.*expected shape \[96, 32\], found \[64, 32\]"):
        cp.ClipTextEncoder.from_pretrained(d)


def test_unsupported_config_and_dtype(tiny, tmp_path):
    _, path = tiny
    d = copy_dir(path, str(tmp_path / "a"))
    cfg = json.loads(Path(os.path.join(d, "config.json")).read_text())
    Path(os.path.join(d, "config.json")).write_text(json.dumps(dict(cfg, hidden_act="swish")))
    with pytest.raises(cp.ModelFormatError, match="hidden_act"):
        cp.ClipTextEncoder.from_pretrained(d)
    Path(os.path.join(d, "config.json")).write_text(json.dumps(dict(cfg, num_attention_heads=5)))
    with pytest.raises(cp.ModelFormatError, match="unsupported CLIP text config"):
        cp.ClipTextEncoder.from_pretrained(d)
    d2 = copy_dir(path, str(tmp_path / "b"), skip=("model.safetensors",))
    sd = load_file(os.path.join(path, "model.safetensors"))
    sd["text_model.final_layer_norm.weight"] = sd["text_model.final_layer_norm.weight"].to(torch.int32)
    save_file(sd, os.path.join(d2, "model.safetensors"))
    with pytest.raises(cp.ModelFormatError, match=r"final_layer_norm\.weight.*I32"):
        cp.ClipTextEncoder.from_pretrained(d2)
    with pytest.raises(cp.ModelFormatError, match=r"config\.json"):
        cp.ClipTextEncoder.from_pretrained(copy_dir(path, str(tmp_path / "c"), skip=("config.json",)) +
                                           "/model.safetensors")


def write_raw(path, header, data=b""):
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)
    return path


def test_corrupt_files(tmp_path):
    f = str(tmp_path / "x.safetensors")
    cases = [
        (b"", "truncated"),
        (b"\x05\x00\x00", "truncated"),
        (struct.pack("<Q", 1 << 40) + b"{}", "exceeds the file size"),
        (struct.pack("<Q", 5) + b"{\"a\":", "invalid JSON"),
        (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
    ]
    for raw, msg in cases:
        with open(f, "wb") as fh:
            fh.write(raw)
        with pytest.raises(cp.ModelFormatError, match=msg):
            cp._C._safetensors_info(f)
        with pytest.raises(cp.ModelFormatError):
            cp.ClipTextEncoder.from_pretrained(f)
    bad_entries = [
        ({"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 64]}}, 16, "run past the data block"),
        ({"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}, 16, "span 8 bytes"),
        ({"t": {"dtype": "F32", "shape": [4], "data_offsets": [8, 4]}}, 16, "begin <= end"),
        ({"t": {"dtype": "Q4", "shape": [4], "data_offsets": [0, 16]}}, 16, "unknown dtype"),
        ({"t": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}, 16, "non-negative"),
        ({"t": {"dtype": "F32", "shape": [2**62, 2**62], "data_offsets": [0, 16]}}, 16, "overflow"),
        ({"t": {"dtype": "F32", "shape": [4]}}, 16, "data_offsets"),
        ({"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
          "u": {"dtype": "F32", "shape": [4], "data_offsets": [-16, 0]}}, 16, "begin <= end"),
    ]
    for header, nbytes, msg in bad_entries:
        write_raw(f, header, b"\0" * nbytes)
        with pytest.raises(cp.ModelFormatError, match=msg):
            cp._C._safetensors_info(f)
    # a valid file that is not a CLIP checkpoint
    write_raw(f, {"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 16)
    assert cp._C._safetensors_info(f) == {"t": ("F32", (4,))}
    with pytest.raises(cp.ModelFormatError, match="not a CLIP text checkpoint"):
        cp.ClipTextEncoder.from_pretrained(f)
    with pytest.raises(cp.FileAccessError):
        cp.ClipTextEncoder.from_pretrained(str(tmp_path / "does-not-exist"))


def test_truncated_and_mutated_checkpoints_never_crash(tiny, tmp_path):
    _, path = tiny
    raw = Path(os.path.join(path, "model.safetensors")).read_bytes()
    d = copy_dir(path, str(tmp_path / "m"), skip=("model.safetensors",))
    f = os.path.join(d, "model.safetensors")
    for cut in (len(raw) - 1, len(raw) // 2, 9, 8 + struct.unpack("<Q", raw[:8])[0] - 3):
        Path(f).write_bytes(raw[:cut])
        with pytest.raises(cp.ModelFormatError):
            cp.ClipTextEncoder.from_pretrained(d)
    hlen = struct.unpack("<Q", raw[:8])[0]
    rng = random.Random(1)
    outcomes = {"ok": 0, "error": 0}
    for _ in range(300):
        b = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(0, 8 + hlen)  # mutate the length or the JSON header
            b[pos] = rng.randrange(256)
        Path(f).write_bytes(bytes(b))
        try:
            enc = cp.ClipTextEncoder.from_pretrained(d)
            enc.encode(np.full((1, 77), 49407, np.int32))
            outcomes["ok"] += 1
        except cp.ModelFormatError:
            outcomes["error"] += 1
    assert outcomes["error"] > 0


def test_bad_ids_and_arguments(tiny):
    _, path = tiny
    enc = cp.ClipTextEncoder.from_pretrained(path)
    with pytest.raises(cp.InvalidArgumentError, match="outside the vocabulary"):
        enc.encode(np.full((1, 77), 49408, np.int32))
    with pytest.raises(cp.InvalidArgumentError, match="columns"):
        enc.encode(np.zeros((1, 78), np.int32))
    with pytest.raises(cp.InvalidArgumentError, match="layer"):
        enc.hidden_states(np.zeros((1, 77), np.int32), layer=-4)
    with pytest.raises(cp.InvalidArgumentError):
        enc.encode(np.zeros((1, 77), np.float32))
    with pytest.raises(cp.InvalidArgumentError, match="batch_size"):
        enc.encode(np.zeros((1, 77), np.int32), batch_size=0)
    assert enc.encode(np.zeros((0, 77), np.int32)).shape == (0, 16)
    with pytest.raises(cp.DeviceError):
        cp.ClipTextEncoder.from_pretrained(path, device="cuda")
    with pytest.raises(cp.InvalidArgumentError):
        cp.ClipTextEncoder.from_pretrained(path, dtype="int4")


def test_threads_and_gil_release(tiny, ids):
    """Concurrent calls from Python threads (GIL released, runner lock) give the same vectors as serial calls."""
    import threading

    _, path = tiny
    enc = cp.ClipTextEncoder.from_pretrained(path)
    want = enc.encode(ids)
    got = [None] * 4

    def run(i):
        got[i] = enc.encode(ids)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g in got:
        np.testing.assert_array_equal(g, want)
    n = cp.get_num_threads()
    try:
        cp.set_num_threads(1)
        assert_close(enc.encode(ids), want, "1 thread")
    finally:
        cp.set_num_threads(n if n != os.cpu_count() else 0)


def test_text_input_uses_clip_tokenizer(tiny, prompts, ids):
    _, path = tiny
    enc = cp.ClipTextEncoder.from_pretrained(path)
    np.testing.assert_array_equal(enc.encode(prompts), enc.encode(ids))
    np.testing.assert_array_equal(enc.encode(prompts[0]), enc.encode(ids[:1]))
    np.testing.assert_array_equal(enc.hidden_states(prompts[:3], layer=-2), enc.hidden_states(ids[:3], layer=-2))


def test_sharded_checkpoint(tiny, tmp_path, ids):
    model, path = tiny
    d = tmp_path / "sharded"
    model.save_pretrained(d, max_shard_size="2MB")
    assert (d / "model.safetensors.index.json").exists()
    assert len([n for n in os.listdir(d) if n.endswith(".safetensors")]) > 1
    a = cp.ClipTextEncoder.from_pretrained(d).encode(ids, normalize=False)
    b = cp.ClipTextEncoder.from_pretrained(path).encode(ids, normalize=False)
    np.testing.assert_array_equal(a, b)


ODD = dict(hidden_size=72, intermediate_size=200, num_attention_heads=6, num_hidden_layers=2, projection_dim=40)


@pytest.mark.parametrize("shape", ["b32", "odd"])
def test_one_prompt_at_a_time_small_m_kernel(tmp_path_factory, ids, shape):
    """B=1 calls pack <= 24 tokens for short prompts: cp_linear then takes the streaming small-M kernel instead of
    sgemm. Its results must equal transformers like the batched path; the odd shape (K=72, 200: not multiples of 16,
    N=216, 40: not multiples of 4 or of the 64-column chunk) exercises every leftover loop."""
    cfg = B32 if shape == "b32" else ODD
    model, path = hf_text_model(transformers.CLIPTextModelWithProjection, tmp_path_factory, "small_m_" + shape, **cfg)
    enc = cp.ClipTextEncoder.from_pretrained(path)
    pooled_ref, _ = hf_reference(model, ids)
    lengths = (ids == 49407).argmax(axis=1) + 1
    rows = [*[i for i in range(len(ids)) if lengths[i] <= 24][:12], int(lengths.argmax())]
    assert sum(lengths[i] <= 24 for i in rows) >= 8, "the prompts must exercise the small-M path"
    single = np.concatenate([enc.encode(ids[i : i + 1], normalize=False) for i in rows])
    assert_close(single, pooled_ref[rows], f"pooled, one prompt per call ({shape})")
    for threads in (1, 2):
        cp.set_num_threads(threads)
        try:
            again = np.concatenate([enc.encode(ids[i : i + 1], normalize=False) for i in rows[:4]])
        finally:
            cp.set_num_threads(0)
        assert_close(again, pooled_ref[rows[:4]], f"pooled, {threads} thread(s)")
