"""Reduced precision on the CPU: bf16 / int8 encoder weights (oneDNN), accuracy bounded against float32.

Bounds: MiniLM (real weights) on every STS-B en dev sentence: cosine to the float32 vector >= 0.999 (bf16) /
0.97 (int8, mean >= 0.995), STS-B dev Spearman within 0.002 (bf16) / 0.005 (int8) of float32; random-initialised CLIP
B/32 and L/14 text towers: the same cosine bounds on COCO captions. A forced-fallback run (oneDNN capped at AVX2 in a
subprocess) checks the non-AVX-512 paths on any machine. Correctness only: nothing here is timed.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import transformers
from conftest import ROOT, read_lines, read_stsb
from scipy.stats import spearmanr

import clipprompt as cp
from clipprompt import _C

LOW = ("bfloat16", "int8")
MIN_COS = {"bfloat16": 0.999, "int8": 0.97}
MEAN_COS = {"bfloat16": 0.9999, "int8": 0.995}
SPEARMAN_TOL = {"bfloat16": 0.002, "int8": 0.005}


def cosines(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


def check_cos(ours, ref, dtype, what):
    c = cosines(ours, ref)
    assert c.min() >= MIN_COS[dtype], f"{what} {dtype}: min cosine {c.min():.5f} (row {int(c.argmin())})"
    assert c.mean() >= MEAN_COS[dtype], f"{what} {dtype}: mean cosine {c.mean():.5f}"
    return c


# ---- build and dispatch ------------------------------------------------------------------------------------------

def test_build_reports_library_and_isa():
    info = cp.build_info()
    for k in ("lowp_library", "lowp_cpu_isa", "lowp_bf16", "lowp_int8"):
        assert isinstance(info[k], str) and info[k], k
    # CI installs oneDNN (.ci/install.sh): the real path must be the one tested there
    assert info["lowp_library"].startswith("oneDNN 2."), info["lowp_library"]
    assert info["lowp_cpu_isa"] != "none"
    # a reference (slow) oneDNN kernel is never used: either a JIT kernel or the portable path
    for k in ("lowp_bf16", "lowp_int8"):
        assert not info[k].startswith("ref"), info


@pytest.fixture(scope="module")
def minis():
    return {dt: cp.MiniLMEncoder.from_pretrained(dtype=dt) for dt in ("float32", *LOW)}


def test_dtype_is_honoured_and_reported(minis):
    info = cp.build_info()
    assert minis["float32"].dtype == "float32" and minis["float32"].isa == "sgemm"
    assert minis["bfloat16"].dtype == "bfloat16" and minis["bfloat16"].isa == info["lowp_bf16"]
    assert minis["int8"].dtype == "int8" and minis["int8"].isa == info["lowp_int8"]
    fps = {m.fingerprint for m in minis.values()}
    assert len(fps) == 3  # a cache keyed by fingerprint never mixes precisions
    assert "dtype='int8'" in repr(minis["int8"])


def test_auto_is_the_default_and_picks_float32_or_bf16_by_probe(monkeypatch):
    monkeypatch.delenv("CLIPPROMPT_AUTO_DTYPE", raising=False)
    m = cp.MiniLMEncoder.from_pretrained()  # the default dtype is "auto"
    assert m.dtype in ("float32", "bfloat16")  # int8 is never chosen silently
    probe = m._model.dtype_probe
    assert probe.startswith("M=16/256 one layer ms: float32 "), probe
    assert probe.split(" (remembered)")[0].endswith("-> " + m.dtype), probe
    # remembered per shape for the process: a second load gives the same dtype without probing again
    again = cp.MiniLMEncoder.from_pretrained(dtype="auto")
    assert again.dtype == m.dtype and again._model.dtype_probe.endswith("(remembered)"), again._model.dtype_probe
    assert cp.MiniLMEncoder.from_pretrained(dtype="float32")._model.dtype_probe is None
    # whatever it picked stays within bf16's accuracy bound of float32
    texts = [p[0] for p in read_stsb("en")[:300]]
    ref = cp.MiniLMEncoder.from_pretrained(dtype="float32").encode(texts)
    check_cos(m.encode(texts), ref, "bfloat16", "MiniLM auto")


@pytest.mark.parametrize("pin", ["float32", "bfloat16", "int8", "bf16"])
def test_auto_pinned_by_environment(monkeypatch, pin):
    monkeypatch.setenv("CLIPPROMPT_AUTO_DTYPE", pin)
    m = cp.MiniLMEncoder.from_pretrained()
    assert m.dtype == {"bf16": "bfloat16"}.get(pin, pin)
    assert m._model.dtype_probe is None
    # an explicit dtype is always honoured over the pin
    assert cp.MiniLMEncoder.from_pretrained(dtype="float32").dtype == "float32"


@pytest.mark.parametrize("bad", ["auto", "float16", "fast"])
def test_bad_auto_pin_is_refused(monkeypatch, bad):
    monkeypatch.setenv("CLIPPROMPT_AUTO_DTYPE", bad)
    with pytest.raises(cp.InvalidArgumentError, match="CLIPPROMPT_AUTO_DTYPE"):
        cp.MiniLMEncoder.from_pretrained()


@pytest.mark.parametrize("bad", ["float16", "int4", "", "FLOAT32"])
def test_bad_dtype_is_refused(bad):
    with pytest.raises(cp.InvalidArgumentError, match="dtype"):
        cp.MiniLMEncoder.from_pretrained(dtype=bad)
    with pytest.raises(cp.InvalidArgumentError, match="dtype"):
        _C.EncoderModel(cp.encoders.default_minilm_path(), family="bert", dtype=bad or "x")


# ---- MiniLM, real weights, every STS-B dev sentence --------------------------------------------------------------

@pytest.fixture(scope="module")
def stsb_vectors(minis):
    pairs = read_stsb("en")
    a, b, gold = [p[0] for p in pairs], [p[1] for p in pairs], np.array([p[2] for p in pairs])
    out = {dt: (m.encode(a), m.encode(b)) for dt, m in minis.items()}
    return out, gold


@pytest.mark.parametrize("dtype", LOW)
def test_minilm_stsb_cosine_to_float32(stsb_vectors, dtype):
    vecs, _ = stsb_vectors
    check_cos(np.concatenate(vecs[dtype]), np.concatenate(vecs["float32"]), dtype, "MiniLM STS-B")


@pytest.mark.parametrize("dtype", LOW)
def test_minilm_stsb_spearman_within_bound(stsb_vectors, dtype):
    vecs, gold = stsb_vectors
    sp = {dt: spearmanr((ea * eb).sum(1), gold).correlation for dt, (ea, eb) in vecs.items()}
    assert sp["float32"] > 0.85  # all-MiniLM-L6-v2 on STS-B dev
    assert abs(sp[dtype] - sp["float32"]) <= SPEARMAN_TOL[dtype], sp


def test_unnormalized_and_batching_agree(minis):
    texts = read_lines("captions/coco_dev_caps.txt")[:37]
    for dt in LOW:
        m = minis[dt]
        whole = m.encode(texts, normalize=False, batch_size=64)
        parts = m.encode(texts, normalize=False, batch_size=5)
        np.testing.assert_allclose(whole, parts, rtol=0, atol=1e-5 * np.abs(whole).max())
        single = np.concatenate([m.encode(t, normalize=False) for t in texts[:4]])
        np.testing.assert_allclose(single, whole[:4], rtol=0, atol=1e-5 * np.abs(whole).max())


# ---- CLIP text towers, random init, real shapes ----------------------------------------------------------------

CLIP_SHAPES = {
    "b32": dict(hidden_size=512, intermediate_size=2048, num_attention_heads=8, num_hidden_layers=12,
                projection_dim=512),
    "l14": dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                projection_dim=768),
}


@pytest.fixture(scope="module", params=sorted(CLIP_SHAPES))
def clip_dir(request, tmp_path_factory):
    import torch

    torch.manual_seed(7)
    cfg = transformers.CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, hidden_act="quick_gelu",
                                      **CLIP_SHAPES[request.param])
    model = transformers.CLIPTextModelWithProjection(cfg).eval()
    d = tmp_path_factory.mktemp("clip-" + request.param)
    model.save_pretrained(d)
    return request.param, d


@pytest.fixture(scope="module")
def clip_ids():
    tok = _C.ClipTokenizer()
    caps = [*read_lines("captions/coco_dev_caps.txt")[:48], "x", "a " + "very " * 90 + "long prompt"]
    return np.asarray(tok(caps, context_length=77, truncate=True), np.int32)


@pytest.mark.parametrize("dtype", LOW)
def test_clip_random_init_cosine_to_float32(clip_dir, clip_ids, dtype):
    name, d = clip_dir
    ref = cp.ClipTextEncoder.from_pretrained(d, dtype="float32")
    low = cp.ClipTextEncoder.from_pretrained(d, dtype=dtype)
    assert low.dtype == dtype and ref.dtype == "float32"
    check_cos(low.encode(clip_ids), ref.encode(clip_ids), dtype, f"CLIP {name} pooled")
    # per-token states (what Stable Diffusion consumes), penultimate layer included
    for layer in (-1, -2):
        h_ref = ref.hidden_states(clip_ids[:8], layer=layer)
        h_low = low.hidden_states(clip_ids[:8], layer=layer)
        check_cos(h_low.reshape(-1, h_low.shape[-1]), h_ref.reshape(-1, h_ref.shape[-1]), dtype,
                  f"CLIP {name} hidden_states[{layer}]")


# ---- forced fallback: oneDNN capped below AVX-512 ------------------------------------------------------------------

FALLBACK_SCRIPT = r"""
import json, sys
import numpy as np
sys.path.insert(0, %(tests)r)
from conftest import read_stsb
import clipprompt as cp
texts = [p[0] for p in read_stsb("en")[:200]]
info = cp.build_info()
ref = cp.MiniLMEncoder.from_pretrained(dtype="float32").encode(texts)
out = {"info": {k: info[k] for k in ("lowp_cpu_isa", "lowp_bf16", "lowp_int8")}, "cos": {}, "isa": {}}
for dt in ("bfloat16", "int8"):
    m = cp.MiniLMEncoder.from_pretrained(dtype=dt)
    v = m.encode(texts)
    out["cos"][dt] = [float((v * ref).sum(1).min()), float((v * ref).sum(1).mean())]
    out["isa"][dt] = m.isa
auto = cp.MiniLMEncoder.from_pretrained(dtype="auto")
out["auto"] = auto.dtype
print(json.dumps(out))
"""


def test_forced_fallback_below_avx512():
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2", PYTHONPATH=str(ROOT))
    env.pop("CLIPPROMPT_AUTO_DTYPE", None)  # the real probe, on the capped ISA
    r = subprocess.run([sys.executable, "-c", FALLBACK_SCRIPT % {"tests": str(ROOT / "tests")}], env=env,
                       capture_output=True, text=True, timeout=900, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["info"]["lowp_cpu_isa"] in ("avx2", "avx2_vnni", "avx", "sse41"), out
    # oneDNN 2.x has no JIT bf16 matmul below AVX-512: the portable path runs bf16 there, never a reference kernel
    assert out["isa"]["bfloat16"] == "sgemm-dequant", out
    assert not out["isa"]["int8"].startswith("ref"), out
    assert out["auto"] in ("float32", "bfloat16")
    for dt in LOW:
        mn, mean = out["cos"][dt]
        assert mn >= MIN_COS[dt] and mean >= MEAN_COS[dt], (dt, out)
