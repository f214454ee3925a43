"""Shared helpers for the prompt-strategy tests (expand, pipeline, sd, cli, eval): session-wide MiniLM, a small
slice of the shipped pool, a shared expander, and a tiny random-init CLIP text tower saved with save_pretrained."""
from __future__ import annotations

import functools

import clipprompt as cp


@functools.cache
def minilm():
    """The bundled MiniLM encoder, loaded once per session."""
    return cp.MiniLMEncoder.from_pretrained()


@functools.cache
def clip_tokenizer():
    return cp.ClipTokenizer()


def small_pool(n=150):
    """The first n phrases of the shipped pool (the Google product taxonomy) plus the whole of a few branches that
    the tests' prompts touch."""
    from clipprompt.expand import read_pool

    pool = read_pool(None)
    keep = pool[:n] + [p for p in pool if any(w in p.lower() for w in ("dress", "umbrella", "cat ", "shirt", "hat"))]
    return list(dict.fromkeys(keep))


@functools.cache
def small_expander():
    """A PromptExpander over small_pool() with MiniLM, shared by the test modules."""
    return cp.PromptExpander(small_pool(), minilm())


def save_tiny_clip(directory):
    """A small random-init CLIPTextModelWithProjection (width 32, 2 layers, projection 16) saved with
    save_pretrained into ``directory``; returns its path as str."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(0)
    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, projection_dim=16,
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
    CLIPTextModelWithProjection(cfg).eval().save_pretrained(directory)
    return str(directory)
