"""The encoder engine: one C model type (clipprompt._C.EncoderModel) for every text tower, described by data.

Checks what the CLIP / MiniLM parity suites do not: the RoBERTa / XLM-R layout (padding-offset positions, one token
type), CLS pooling from a sentence-transformers pooling config, hidden states under a mask, SDXL's raw penultimate
states (final_norm=False), auto-detection of the family, the description dict, and the engine's error paths.
Oracles: transformers (random-initialised models saved with save_pretrained), torch.
"""
import json
import os
import pathlib

import numpy as np
import pytest
import torch
import transformers

import clipprompt as cp
from clipprompt import _C


def _bert_like(tmp_path_factory, name, cls, config, seed=0):
    torch.manual_seed(seed)
    model = cls(config).eval()
    d = tmp_path_factory.mktemp(name)
    model.save_pretrained(d)
    return model, str(d)


@pytest.fixture(scope="module")
def xlmr(tmp_path_factory):
    cfg = transformers.XLMRobertaConfig(vocab_size=300, hidden_size=48, num_hidden_layers=3, num_attention_heads=4,
                                        intermediate_size=96, max_position_embeddings=40, type_vocab_size=1,
                                        pad_token_id=1, hidden_act="gelu")
    return _bert_like(tmp_path_factory, "xlmr", transformers.XLMRobertaModel, cfg, seed=1)


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    cfg = transformers.BertConfig(vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=64, hidden_act="gelu")
    return _bert_like(tmp_path_factory, "bert", transformers.BertModel, cfg, seed=2)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    torch.manual_seed(3)
    cfg = transformers.CLIPTextConfig(vocab_size=120, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                      num_attention_heads=4, max_position_embeddings=20, hidden_act="gelu",
                                      projection_dim=24, eos_token_id=119, bos_token_id=118, pad_token_id=119)
    model = transformers.CLIPTextModelWithProjection(cfg).eval()
    d = tmp_path_factory.mktemp("clip")
    model.save_pretrained(d)
    return model, str(d)


def _ids_mask(rng, B, L, vocab, pad, lo=1):
    ids = np.full((B, L), pad, np.int32)
    mask = np.zeros((B, L), np.int32)
    for b in range(B):
        n = int(rng.integers(lo, L + 1))
        ids[b, :n] = rng.integers(3, vocab, n)
        mask[b, :n] = 1
    return ids, mask


def _mean_pool(hidden, mask):
    m = mask[..., None].astype(np.float64)
    return (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)


def test_xlmr_padded_positions_match_transformers(xlmr):
    ref, path = xlmr
    enc = _C.EncoderModel(path)  # auto-detected: model_type xlm-roberta
    d = enc.description
    assert d["family"] == "xlmr" and d["layout"] == "hf-roberta" and d["position"] == "padded"
    assert d["pad_token_id"] == 1 and d["type_vocab_size"] == 1 and d["max_seq_length"] == 40 - 2
    rng = np.random.default_rng(0)
    ids, mask = _ids_mask(rng, 9, 17, 300, pad=1)
    with torch.no_grad():
        h = ref(input_ids=torch.tensor(ids, dtype=torch.long),
                attention_mask=torch.tensor(mask, dtype=torch.long)).last_hidden_state.numpy()
    ours = enc.encode(ids, mask, normalize=False)
    want = _mean_pool(h, mask)
    np.testing.assert_allclose(ours, want, rtol=0, atol=2e-5)
    hid = enc.hidden_states(ids, mask=mask)
    np.testing.assert_allclose(hid * mask[..., None], h * mask[..., None], rtol=0, atol=2e-5)
    assert np.all(hid[mask == 0] == 0)
    # the longest accepted row uses the last position row (pad_id + 1 + 37 = 39)
    full = np.full((1, 38), 5, np.int32)
    with torch.no_grad():
        hf = ref(input_ids=torch.tensor(full, dtype=torch.long)).last_hidden_state.numpy()
    np.testing.assert_allclose(enc.encode(full, normalize=False), hf.mean(1), atol=2e-5)
    with pytest.raises(cp.InvalidArgumentError, match="columns"):
        enc.encode(np.full((1, 39), 5, np.int32))


def test_bert_cls_pooling_from_sentence_transformers_config(bert, tmp_path):
    ref, path = bert
    d = str(tmp_path / "st")
    os.makedirs(os.path.join(d, "1_Pooling"))
    for f in os.listdir(path):
        os.link(os.path.join(path, f), os.path.join(d, f))
    pathlib.Path(d, "1_Pooling", "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    pathlib.Path(d, "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 24}))
    enc = _C.EncoderModel(d, family="bert")
    assert enc.description["pooling"] == "cls" and enc.description["max_seq_length"] == 24
    rng = np.random.default_rng(1)
    ids, mask = _ids_mask(rng, 6, 24, 200, pad=0)
    with torch.no_grad():
        h = ref(input_ids=torch.tensor(ids, dtype=torch.long),
                attention_mask=torch.tensor(mask, dtype=torch.long)).last_hidden_state.numpy()
    np.testing.assert_allclose(enc.encode(ids, mask, normalize=False), h[:, 0], atol=2e-5)
    ref_n = h[:, 0] / np.linalg.norm(h[:, 0], axis=1, keepdims=True)
    np.testing.assert_allclose(enc.encode(ids, mask), ref_n, atol=2e-6)


def test_bert_mean_pooling_and_masked_hidden_states(bert):
    ref, path = bert
    enc = _C.EncoderModel(path)
    assert enc.family == "bert" and enc.description["layout"] == "hf-bert"
    rng = np.random.default_rng(2)
    ids, mask = _ids_mask(rng, 11, 30, 200, pad=0)
    mask[3] = 0  # a row with no tokens gives a zero vector (sentence-transformers' clamp)
    with torch.no_grad():
        h = ref(input_ids=torch.tensor(ids, dtype=torch.long),
                attention_mask=torch.tensor(mask, dtype=torch.long)).last_hidden_state.numpy()
    ours = enc.encode(ids, mask, normalize=False)
    keep = mask.sum(1) > 0
    np.testing.assert_allclose(ours[keep], _mean_pool(h, mask)[keep], atol=2e-5)
    assert np.all(ours[3] == 0)
    hid = enc.hidden_states(ids, mask=mask)
    np.testing.assert_allclose(hid * mask[..., None], h * mask[..., None], atol=2e-5)
    # packing is per prompt: a prompt alone gives the vector it gets inside a batch (GEMM blocking aside)
    for b in (0, 5, 10):
        np.testing.assert_allclose(enc.encode(ids[b:b + 1], mask[b:b + 1]), enc.encode(ids, mask)[b:b + 1],
                                   atol=1e-6)


def test_clip_raw_penultimate_states_for_sdxl(clip):
    ref, path = clip
    enc = _C.EncoderModel(path)
    desc = enc.description
    assert desc["family"] == "clip" and desc["causal"] and desc["pre_layer_norm"] and desc["final_layer_norm"]
    assert desc["pooling"] == "eos_token_id" and desc["projection_dim"] == 24
    rng = np.random.default_rng(3)
    ids = np.full((5, 20), 119, np.int32)
    for b in range(5):
        n = int(rng.integers(1, 19))
        ids[b, 0] = 118
        ids[b, 1:n + 1] = rng.integers(0, 118, n)
    t = torch.tensor(ids, dtype=torch.long)
    with torch.no_grad():
        out = ref(input_ids=t, output_hidden_states=True)
    raw = enc.hidden_states(ids, layer=-2, final_norm=False)
    np.testing.assert_allclose(raw, out.hidden_states[-2].numpy(), atol=2e-5)
    normed = enc.hidden_states(ids, layer=-2)
    with torch.no_grad():
        want = ref.text_model.final_layer_norm(out.hidden_states[-2]).numpy()
    np.testing.assert_allclose(normed, want, atol=2e-5)
    np.testing.assert_allclose(enc.encode(ids, normalize=False), out.text_embeds.numpy(), atol=2e-5)


def test_family_detection_and_errors(clip, bert, tmp_path):
    assert _C.EncoderModel(clip[1]).family == "clip"
    assert _C.EncoderModel(bert[1]).family == "bert"
    with pytest.raises(cp.InvalidArgumentError, match="unknown model family"):
        _C.EncoderModel(bert[1], family="gpt2")
    with pytest.raises(cp.ModelFormatError):  # a BERT directory read as CLIP
        _C.EncoderModel(bert[1], family="clip")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(cp.ModelFormatError, match="not a text-tower checkpoint"):
        _C.EncoderModel(str(empty))
    with pytest.raises(cp.FileAccessError):
        _C.EncoderModel(str(tmp_path / "missing"))
    enc = _C.EncoderModel(bert[1])
    with pytest.raises(cp.InvalidArgumentError, match="0/1"):
        enc.encode(np.ones((1, 4), np.int32), np.full((1, 4), 2, np.int32))
    with pytest.raises(cp.DimensionMismatchError):
        enc.encode(np.ones((1, 4), np.int32), np.ones((1, 5), np.int32))
    with pytest.raises(cp.InvalidArgumentError, match="layer"):
        enc.hidden_states(np.ones((1, 4), np.int32), layer=5)
    with pytest.raises(TypeError):
        _C.EncoderModelCUDA("not a model")


def test_layer_table_of_a_model_needs_no_runner_code():
    """Adding a family is a description + a name table: the runner files never name a family."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for rel in ("csrc/model/cp_runner_cpu.c", "csrc/device/cp_runner_cuda.c"):
        src = pathlib.Path(root, rel).read_text().lower().replace("clipprompt", "")
        for word in ("clip", "bert", "roberta", "minilm"):
            assert word not in src, (rel, word)
