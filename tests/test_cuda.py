"""The CUDA backend (issue 9).

Two kinds of test:
- device-independent ones that run everywhere (also on CI and this GPU-less machine): no usable GPU -> DeviceError at
  construction with CUDA's reason (never a crash), argument errors, the cuDNN switch, the out-of-memory mapping;
- `@pytest.mark.gpu` parity tests, skipped only when build_info()["cuda_devices"] == 0: our GPU path against our CPU
  path and against transformers on the GPU (fp32: <= 1e-4 abs; fp16/bf16: pooled cosine >= 0.9999, hidden states
  within twice transformers' own fp16/bf16 error), fresh random inputs, NaN-poisoned device arenas, odd sizes, CUDA
  graph and plain paths, flat index search against the CPU index.
"""
import copy

import numpy as np
import pytest

import clipprompt as cp
from clipprompt import _C
from clipprompt.encoders import ClipTextEncoder, MiniLMEncoder

INFO = cp.build_info()
HAS_GPU = bool(INFO.get("cuda")) and int(INFO.get("cuda_devices") or 0) > 0
_skip_no_gpu = pytest.mark.skipif(not HAS_GPU, reason=f"no CUDA device: {INFO.get('cuda_device_error')}")


def gpu(f):
    """@pytest.mark.gpu, skipped only when build_info()["cuda_devices"] == 0."""
    return pytest.mark.gpu(_skip_no_gpu(f))


import torch  # noqa: E402  (test requirements)
import transformers  # noqa: E402

CLIP_EOT, CLIP_SOT = 49407, 49406


# ---- models (random weights of the real shapes, written as HF directories) ---------------------------------

def _clip_dir(tmp_path_factory, name, seed, **cfg):
    torch.manual_seed(seed)
    config = transformers.CLIPTextConfig(**cfg)
    model = transformers.CLIPTextModelWithProjection(config).eval()
    d = tmp_path_factory.mktemp(name)
    model.save_pretrained(d)
    return model, str(d)


def _bert_dir(tmp_path_factory, name, seed, **cfg):
    torch.manual_seed(seed)
    config = transformers.BertConfig(**cfg)
    model = transformers.BertModel(config, add_pooling_layer=False).eval()
    d = tmp_path_factory.mktemp(name)
    model.save_pretrained(d)
    return model, str(d)


TINY_CLIP = dict(hidden_size=64, intermediate_size=256, num_attention_heads=4, num_hidden_layers=2, projection_dim=32)
B32 = dict(hidden_size=512, intermediate_size=2048, num_attention_heads=8, num_hidden_layers=12, projection_dim=512)
TINY_BERT = dict(vocab_size=1000, hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
                 max_position_embeddings=64)
MINILM = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
              max_position_embeddings=512)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return _clip_dir(tmp_path_factory, "tiny_clip", 1, **TINY_CLIP)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return _bert_dir(tmp_path_factory, "tiny_bert", 2, **TINY_BERT)


def clip_ids(rng, B, L=77, lengths=None, vocab=49406):
    """Fresh random prompts: SOT, random tokens, EOT, zero padding (the tokenizer's layout)."""
    ids = np.zeros((B, L), np.int32)
    if lengths is None:
        lengths = rng.integers(0, L - 1, size=B)
    for b, n_raw in enumerate(lengths):
        n = int(min(n_raw, L - 2))
        ids[b, 0] = CLIP_SOT
        ids[b, 1:1 + n] = rng.integers(1, vocab, size=n)
        ids[b, 1 + n] = CLIP_EOT
    return ids


def bert_inputs(rng, B, L, vocab, min_len=0):
    ids = rng.integers(1000 if vocab > 2000 else 1, vocab, size=(B, L)).astype(np.int32)
    lens = rng.integers(min_len, L + 1, size=B)
    mask = (np.arange(L)[None, :] < lens[:, None]).astype(np.int32)
    ids[mask == 0] = 0
    return ids, mask


# ---- everywhere: errors --------------------------------------------------------------------------------------

def test_build_info_reports_the_cuda_state():
    assert "cuda" in INFO
    if INFO["cuda"]:
        assert isinstance(INFO["cuda_devices"], int) and INFO["cuda_devices"] >= 0
        assert INFO["cublas"] and INFO["cudnn"]
        if INFO["cuda_devices"] == 0:
            assert INFO["cuda_device_error"]  # the reason, e.g. "cudaErrorInsufficientDriver: ..."
        assert hasattr(_C, "EncoderModelCUDA") and hasattr(_C, "EncoderModel")


def test_construction_without_a_gpu_raises_device_error(tiny_clip, tiny_bert):
    """No GPU or driver: DeviceError with CUDA's reason from every constructor; with a GPU they all construct."""
    _, clip_path = tiny_clip
    _, bert_path = tiny_bert
    makers = [
        lambda: ClipTextEncoder.from_pretrained(clip_path, device="cuda"),
        lambda: ClipTextEncoder.from_pretrained(clip_path, device="cuda:0", dtype="float16"),
        lambda: MiniLMEncoder.from_pretrained(bert_path, device="cuda", dtype="bfloat16"),
        lambda: _C.EncoderModelCUDA(_C.EncoderModel(clip_path, family="clip"), device="cuda"),
        lambda: _C.EncoderModelCUDA(_C.EncoderModel(bert_path, family="bert"), device="cuda", dtype="float16"),
        lambda: cp.FlatIPIndex(16, device="cuda"),
        lambda: cp.FlatIPIndex(16, dtype="float16", device="cuda:0"),
    ]
    for make in makers:
        if HAS_GPU:
            assert make() is not None
        else:
            with pytest.raises(cp.DeviceError) as ei:
                make()
            msg = str(ei.value)
            assert "CUDA" in msg or "cuda" in msg, msg
            if INFO["cuda"]:
                assert INFO["cuda_device_error"].split(":")[0] in msg, (msg, INFO["cuda_device_error"])


def test_device_that_does_not_exist(tiny_bert):
    _, bert_path = tiny_bert
    with pytest.raises(cp.DeviceError):
        cp.FlatIPIndex(8, device="cuda:999")
    with pytest.raises(cp.DeviceError):
        _C.EncoderModelCUDA(_C.EncoderModel(bert_path, family="bert"), device="cuda:999")
    with pytest.raises(cp.DeviceError):
        ClipTextEncoder.from_pretrained("/nonexistent/never/read", device="cuda:999")


def test_bad_device_arguments(tiny_clip, tiny_bert):
    _, clip_path = tiny_clip
    _, bert_path = tiny_bert
    with pytest.raises(cp.InvalidArgumentError):
        cp.FlatIPIndex(8, device="tpu")
    with pytest.raises(cp.InvalidArgumentError):
        ClipTextEncoder.from_pretrained(clip_path, device="cuda", dtype="int8")
    with pytest.raises(cp.InvalidArgumentError):  # half precision is a GPU option
        ClipTextEncoder.from_pretrained(clip_path, device="cpu", dtype="float16")
    with pytest.raises(cp.InvalidArgumentError):
        _C.EncoderModelCUDA(_C.EncoderModel(bert_path, family="bert"), device="cuda", dtype="int8")
    with pytest.raises(cp.InvalidArgumentError):
        _C.EncoderModelCUDA(_C.EncoderModel(bert_path, family="bert"), device="cpu")
    with pytest.raises(TypeError):  # the runner takes a loaded EncoderModel, nothing else
        _C.EncoderModelCUDA(bert_path, device="cuda")
    with pytest.raises(cp.InvalidArgumentError):
        _C.EncoderModelCUDA(_C.EncoderModel(clip_path, family="clip"), device="cuda", attention="flash")


def test_cudnn_attention_is_refused_with_the_reason(tiny_clip):
    _, clip_path = tiny_clip
    with pytest.raises(cp.DeviceError, match="cuDNN"):
        _C.EncoderModelCUDA(_C.EncoderModel(clip_path, family="clip"), device="cuda", attention="cudnn")


def test_out_of_memory_maps_to_device_out_of_memory_error():
    huge = 1 << 60
    if HAS_GPU:
        with pytest.raises(cp.DeviceOutOfMemoryError, match=str(huge)):
            _C._cuda_malloc_test(huge)
        _C._cuda_malloc_test(1 << 20)  # and the device is still usable
    else:
        with pytest.raises(cp.DeviceError) as ei:
            _C._cuda_malloc_test(huge)
        assert not isinstance(ei.value, cp.DeviceOutOfMemoryError)
    assert issubclass(cp.DeviceOutOfMemoryError, MemoryError) and issubclass(cp.DeviceOutOfMemoryError, cp.DeviceError)


def test_cpu_index_keeps_its_behaviour(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 8)).astype(np.float32)
    ix = cp.FlatIPIndex(8)
    ix.add(x)
    assert ix.device == "cpu" and "device" not in repr(ix)
    p = str(tmp_path / "ix.cpix")
    ix.save(p)
    back = cp.FlatIPIndex.load(p, device="cpu")
    assert back.device == "cpu"
    D0, I0 = ix.search(x[:5], 3)
    D1, I1 = back.search(x[:5], 3)
    np.testing.assert_array_equal(I0, I1)
    np.testing.assert_array_equal(D0, D1)
    if not HAS_GPU:
        with pytest.raises(cp.DeviceError):
            cp.FlatIPIndex.load(p, device="cuda")


# ---- GPU: parity ---------------------------------------------------------------------------------------------

def assert_close(ours, ref, atol, what):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
    assert np.isfinite(ours).all(), f"{what}: non-finite values at {np.argwhere(~np.isfinite(ours))[:5].tolist()}"
    diff = np.abs(ours - ref)
    bad = np.argwhere(diff > atol)
    assert bad.size == 0, f"{what}: max abs diff {diff.max():.3g} at {bad[:5].tolist()}"


def row_cos(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


def row_rel(a, ref):
    a, ref = np.asarray(a, np.float64).reshape(len(a), -1), np.asarray(ref, np.float64).reshape(len(ref), -1)
    return np.linalg.norm(a - ref, axis=1) / np.maximum(np.linalg.norm(ref, axis=1), 1e-30)


@pytest.fixture(scope="module")
def b32(tmp_path_factory):
    return _clip_dir(tmp_path_factory, "clip_b32", 3, **B32)


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    return _bert_dir(tmp_path_factory, "minilm", 4, **MINILM)


@pytest.fixture
def poisoned(monkeypatch):
    """Device arenas are filled with NaN bit patterns when allocated: an output element no kernel writes shows up."""
    monkeypatch.setenv("CLIPPROMPT_CUDA_POISON", "1")


def hf_clip(model, ids, dtype, layers=(-1,)):
    m = copy.deepcopy(model).to("cuda", dtype)  # a copy: rounding the fixture's weights would corrupt later tests
    with torch.no_grad():
        out = m(input_ids=torch.tensor(ids, dtype=torch.long, device="cuda"), output_hidden_states=True)
        hs = {layer: m.text_model.final_layer_norm(out.hidden_states[layer]).float().cpu().numpy() for layer in layers}
        pooled = out.text_embeds.float().cpu().numpy()
    return pooled, hs


@gpu
@pytest.mark.parametrize("B", [1, 3, 64, 65, 257])
def test_clip_fp32_matches_cpu_and_transformers(b32, poisoned, B):
    model, path = b32
    rng = np.random.default_rng(100 + B)
    lengths = rng.integers(0, 76, size=B)
    lengths[0] = 75  # a full-context prompt
    ids = clip_ids(rng, B, lengths=lengths)
    cpu = _C.EncoderModel(path, family="clip")
    dev = _C.EncoderModelCUDA(cpu, device="cuda", dtype="float32")
    ours = dev.encode(ids, normalize=False)
    ref_cpu = cpu.encode(ids, normalize=False)
    ref_hf, _ = hf_clip(model, ids, torch.float32)
    assert_close(ours, ref_cpu, 1e-4, f"fp32 pooled vs CPU (B={B})")
    assert_close(ours, ref_hf, 1e-4, f"fp32 pooled vs transformers (B={B})")
    n = dev.encode(ids, normalize=True)
    assert_close(n, ref_hf / np.linalg.norm(ref_hf, axis=1, keepdims=True), 1e-5, "normalized")


@gpu
def test_clip_graphs_and_plain_path_agree(b32, poisoned):
    _, path = b32
    cpu = _C.EncoderModel(path, family="clip")
    g = _C.EncoderModelCUDA(cpu, device="cuda", graph_max_batch=64)
    plain = _C.EncoderModelCUDA(cpu, device="cuda", graph_max_batch=0)
    rng = np.random.default_rng(7)
    for B in (1, 1, 2, 17, 64):  # repeated shapes replay a cached graph
        ids = clip_ids(rng, B)
        assert_close(g.encode(ids), plain.encode(ids), 1e-5, f"graph vs plain B={B}")
    assert g.info["graphs"] >= 1
    assert plain.info["graphs"] == 0


@gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_clip_half_precision(b32, poisoned, dtype):
    model, path = b32
    rng = np.random.default_rng(11)
    ids = clip_ids(rng, 96)
    tdt = torch.float16 if dtype == "float16" else torch.bfloat16
    layers = (-1, -2)
    ref32, hs32 = hf_clip(model, ids, torch.float32, layers)
    ref16, hs16 = hf_clip(model, ids, tdt, layers)
    dev = _C.EncoderModelCUDA(_C.EncoderModel(path, family="clip"), device="cuda", dtype=dtype)
    ours = dev.encode(ids, normalize=False)
    assert np.isfinite(ours).all()
    cos = row_cos(ours, ref32)
    hf_cos = row_cos(ref16, ref32).min()
    assert cos.min() >= 0.9999, f"{dtype} pooled cosine {cos.min():.6f} (transformers {dtype}: {hf_cos:.6f})"
    bound = {"float16": 5e-3, "bfloat16": 4e-2}[dtype]
    for layer in layers:
        h = dev.hidden_states(ids, layer=layer)
        ours_err, hf_err = row_rel(h, hs32[layer]), row_rel(hs16[layer], hs32[layer])
        assert ours_err.max() <= max(bound, 2 * hf_err.max()), (
            f"{dtype} hidden layer {layer}: ours {ours_err.max():.3g} vs transformers {hf_err.max():.3g}")


@gpu
@pytest.mark.parametrize("layer", [-1, -2, 0, 5])
def test_clip_hidden_states_fp32(b32, poisoned, layer):
    model, path = b32
    rng = np.random.default_rng(20 + layer)
    ids = clip_ids(rng, 5)
    _, hs = hf_clip(model, ids, torch.float32, (layer,))
    cpu = _C.EncoderModel(path, family="clip")
    dev = _C.EncoderModelCUDA(cpu, device="cuda")
    h = dev.hidden_states(ids, layer=layer)
    assert_close(h, hs[layer], 1e-4, f"hidden layer {layer} vs transformers")
    assert_close(h, cpu.hidden_states(ids, layer=layer), 1e-4, f"hidden layer {layer} vs CPU")


@gpu
def test_clip_encoder_front_end_on_gpu(b32):
    _, path = b32
    rng = np.random.default_rng(5)
    ids = clip_ids(rng, 300)
    cpu_enc = ClipTextEncoder.from_pretrained(path)
    gpu_enc = ClipTextEncoder.from_pretrained(path, device="cuda")
    assert gpu_enc.fingerprint == cpu_enc.fingerprint
    assert ClipTextEncoder.from_pretrained(path, device="cuda", dtype="float16").fingerprint != cpu_enc.fingerprint
    assert_close(gpu_enc.encode(ids, batch_size=128), cpu_enc.encode(ids), 1e-4, "encoder front end")


@gpu
def test_clip_out_of_memory_leaves_the_runner_usable(b32, monkeypatch):
    _, path = b32
    dev = _C.EncoderModelCUDA(_C.EncoderModel(path, family="clip"), device="cuda")
    rng = np.random.default_rng(9)
    small = clip_ids(rng, 2)
    first = dev.encode(small)
    monkeypatch.setenv("CLIPPROMPT_CUDA_ALLOC_LIMIT", str(1 << 20))
    with pytest.raises(cp.DeviceOutOfMemoryError, match="bytes"):
        dev.encode(clip_ids(rng, 1000, lengths=np.full(1000, 75)))
    monkeypatch.delenv("CLIPPROMPT_CUDA_ALLOC_LIMIT")
    assert_close(dev.encode(small), first, 1e-6, "after OOM")
    big = clip_ids(rng, 1000)
    assert dev.encode(big).shape == (1000, 512)


def hf_mean(model, ids, mask, dtype):
    m = copy.deepcopy(model).to("cuda", dtype)
    with torch.no_grad():
        t_ids = torch.tensor(ids, dtype=torch.long, device="cuda")
        t_mask = torch.tensor(mask, dtype=torch.long, device="cuda")
        h = m(input_ids=t_ids, attention_mask=t_mask).last_hidden_state.float()
        w = t_mask.unsqueeze(-1).float()
        pooled = (h * w).sum(1) / w.sum(1).clamp(min=1e-9)
    return pooled.cpu().numpy()


@gpu
@pytest.mark.parametrize("B,L", [(1, 7), (33, 16), (500, 64), (70, 256)])
def test_minilm_fp32_matches_cpu_and_transformers(minilm, poisoned, B, L):
    model, path = minilm
    rng = np.random.default_rng(B * 1000 + L)
    ids, mask = bert_inputs(rng, B, L, MINILM["vocab_size"], min_len=1)
    cpu = _C.EncoderModel(path, family="bert")
    dev = _C.EncoderModelCUDA(cpu, device="cuda")
    ours = dev.encode(ids, mask, normalize=False)
    assert_close(ours, cpu.encode(ids, mask, normalize=False), 1e-4, f"MiniLM fp32 vs CPU B={B} L={L}")
    assert_close(ours, hf_mean(model, ids, mask, torch.float32), 1e-4, f"MiniLM fp32 vs transformers B={B} L={L}")


@gpu
def test_minilm_empty_sentences_give_zeros(tiny_bert, poisoned):
    _, path = tiny_bert
    cpu = _C.EncoderModel(path, family="bert")
    dev = _C.EncoderModelCUDA(cpu, device="cuda")
    rng = np.random.default_rng(3)
    ids, mask = bert_inputs(rng, 9, 12, TINY_BERT["vocab_size"])
    mask[[0, 4]] = 0
    ours = dev.encode(ids, mask, normalize=True)
    assert_close(ours, cpu.encode(ids, mask, normalize=True), 1e-5, "tiny bert")
    assert (ours[[0, 4]] == 0).all()


@gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_minilm_half_precision(minilm, poisoned, dtype):
    model, path = minilm
    rng = np.random.default_rng(31)
    ids, mask = bert_inputs(rng, 200, 32, MINILM["vocab_size"], min_len=1)
    ref = hf_mean(model, ids, mask, torch.float32)
    enc = MiniLMEncoder.from_pretrained(path, device="cuda", dtype=dtype)
    ours = enc.encode((ids, mask), normalize=False)
    cos = row_cos(ours, ref)
    assert cos.min() >= 0.9999, f"MiniLM {dtype} cosine {cos.min():.6f}"


# ---- GPU: index search -------------------------------------------------------------------------------------

def check_search(D, I, D_ref, I_ref, atol):
    assert D.shape == D_ref.shape and I.shape == I_ref.shape
    pad = I_ref < 0
    np.testing.assert_array_equal(I[pad], I_ref[pad])
    assert np.isneginf(D[pad]).all()
    assert_close(np.where(pad, 0, D), np.where(pad, 0, D_ref), atol, "scores")
    # ids must agree except where the reference scores are tied within the tolerance (order of near-equals)
    for q in range(len(I)):
        for j in range(I.shape[1]):
            if I[q, j] != I_ref[q, j]:
                s = D_ref[q, j]
                near = np.abs(D_ref[q] - s) <= 2 * atol
                assert I[q, j] in set(I_ref[q][near]) or abs(D[q, j] - s) <= 2 * atol, (q, j, I[q, j], I_ref[q, j])


@gpu
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_index_search_matches_cpu(dtype):
    rng = np.random.default_rng(17)
    n, d = 20011, 96
    x = rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = rng.permutation(10 * n)[:n].astype(np.int64)
    cpu = cp.FlatIPIndex(d, dtype=dtype)
    dev = cp.FlatIPIndex(d, dtype=dtype, device="cuda")
    cpu.add(x, ids)
    dev.add(x, ids)
    atol = 1e-5 if dtype == "float32" else 3e-3  # float16 rows: the GPU rounds the queries to float16 too
    for nq, k in [(1, 1), (1, 10), (7, 100), (1500, 10), (3, 256)]:
        q = rng.standard_normal((nq, d)).astype(np.float32)
        check_search(*dev.search(q, k), *cpu.search(q, k), atol)
    # k beyond the device maximum: the CPU search answers, identically
    q = rng.standard_normal((2, d)).astype(np.float32)
    _D, I = dev.search(q, _C.CUDA_TOPK_MAX + 1)
    _D0, I0 = cpu.search(q, _C.CUDA_TOPK_MAX + 1)
    np.testing.assert_array_equal(I, I0)
    # tiny tiles and chunks: many GEMM tiles + candidate merges
    dev._set_device_knobs(tile_bytes=4 * 64 * 7, chunk=64)
    q = rng.standard_normal((7, d)).astype(np.float32)
    check_search(*dev.search(q, 20), *cpu.search(q, 20), atol)


@gpu
def test_index_mirror_follows_changes():
    rng = np.random.default_rng(23)
    d = 32
    cpu, dev = cp.FlatIPIndex(d), cp.FlatIPIndex(d, device="cuda")
    q = rng.standard_normal((4, d)).astype(np.float32)
    D, I = dev.search(q, 5)  # empty index: all padding
    assert (I == -1).all() and np.isneginf(D).all()
    for step in range(4):
        x = rng.standard_normal((333, d)).astype(np.float32)
        cpu.add(x)
        dev.add(x)
        if step == 2:
            gone = np.arange(0, 500, 3)
            cpu.remove_ids(gone)
            dev.remove_ids(gone)
        check_search(*dev.search(q, 50), *cpu.search(q, 50), 1e-5)
    D, I = dev.search(q, len(cpu) + 5)  # k > ntotal pads
    assert (I[:, len(cpu):] == -1).all()
    dev.reset()
    cpu.reset()
    x = rng.standard_normal((10, d)).astype(np.float32)
    cpu.add(x)
    dev.add(x)
    check_search(*dev.search(q, 3), *cpu.search(q, 3), 1e-5)
    with pytest.raises(cp.InvalidArgumentError):
        dev.search(np.full((1, d), np.nan, np.float32), 3)
