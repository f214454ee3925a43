"""Random-initialised Stable Diffusion pipelines saved by diffusers, for the SD parity tests, the benchmark and the
notebook: SD 1.5, SD 2.1 and SDXL with their real text-encoder configurations (full size) and tiny UNets/VAEs whose
cross-attention width is the real one.

``build(root)`` writes ``root/{sd15,sd2,sdxl}`` with ``save_pretrained`` (once: a ``.complete`` marker makes later
calls free). Set ``CLIPPROMPT_SD_MODELS=/some/dir`` to keep them between test sessions (the SDXL text towers are
~2.8 GB in fp32). Tokenizers are CLIPTokenizer objects built from CLIP's published BPE merges (the file shipped in
clipprompt/data), with each family's pad token, as the hub checkpoints have them.
"""
from __future__ import annotations

import json
import os
import pathlib
import time

FAMILIES = ("sd15", "sd2", "sdxl")
VERSION = "1"  # bump when what build() writes changes

# The text-encoder configurations of the published checkpoints (the parts that differ from CLIPTextConfig's
# defaults): runwayml/stable-diffusion-v1-5, stabilityai/stable-diffusion-2-1, stabilityai/stable-diffusion-xl-base-1.0.
VIT_L = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
             hidden_act="quick_gelu", projection_dim=768)
VIT_H = dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=23,
             hidden_act="gelu", projection_dim=512)
BIGG = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
            hidden_act="gelu", projection_dim=1280)


def _bpe_files(directory: pathlib.Path):
    """vocab.json + merges.txt of CLIP's BPE, taken from open_clip's SimpleTokenizer (an independent reading of
    the same published merges file), with the special tokens named as the hub's CLIP tokenizers name them."""
    from open_clip.tokenizer import SimpleTokenizer

    st = SimpleTokenizer()
    merges = [" ".join(pair) for pair, _ in sorted(st.bpe_ranks.items(), key=lambda kv: kv[1])]
    vocab = dict(st.encoder)
    specials = {i: tok for tok, i in vocab.items() if i >= 49406}
    for i, name in ((49406, "<|startoftext|>"), (49407, "<|endoftext|>")):
        del vocab[specials[i]]
        vocab[name] = i
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return directory / "vocab.json", directory / "merges.txt"


def clip_tokenizer(tmp: pathlib.Path, pad_token: str):
    from transformers import CLIPTokenizer

    vocab, merges = _bpe_files(tmp)
    return CLIPTokenizer(str(vocab), str(merges), pad_token=pad_token, model_max_length=77)


def _text_encoder(cfg: dict, with_projection: bool, seed: int):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    c = CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                       pad_token_id=1, **cfg)
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(c).eval()


def _unet(cross_attention_dim: int, sdxl: bool, seed: int):
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    kw = dict(block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
              down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
              up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
              cross_attention_dim=cross_attention_dim, attention_head_dim=8, norm_num_groups=32)
    if sdxl:
        kw.update(addition_embed_type="text_time", addition_time_embed_dim=8, use_linear_projection=True,
                  transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=6 * 8 + 1280)
    return UNet2DConditionModel(**kw).eval()


def _vae(seed: int):
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(block_out_channels=(32,), in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
                         norm_num_groups=32).eval()


def _build_one(family: str, out: pathlib.Path, scratch: pathlib.Path) -> None:
    from diffusers import EulerDiscreteScheduler, PNDMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    if family == "sdxl":
        pipe = StableDiffusionXLPipeline(
            vae=_vae(3), text_encoder=_text_encoder(VIT_L, False, 30),
            text_encoder_2=_text_encoder(BIGG, True, 31),
            tokenizer=clip_tokenizer(scratch / "tok1", "<|endoftext|>"),
            tokenizer_2=clip_tokenizer(scratch / "tok2", "!"),
            unet=_unet(2048, True, 32), scheduler=EulerDiscreteScheduler())
    else:
        sd15 = family == "sd15"
        pipe = StableDiffusionPipeline(
            vae=_vae(1), text_encoder=_text_encoder(VIT_L if sd15 else VIT_H, False, 10 if sd15 else 20),
            tokenizer=clip_tokenizer(scratch / family, "<|endoftext|>" if sd15 else "!"),
            unet=_unet(768 if sd15 else 1024, False, 11 if sd15 else 21), scheduler=PNDMScheduler(),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(out, safe_serialization=True)


def build(root, families=FAMILIES) -> dict[str, str]:
    """Build (once) and return {family: pipeline directory}."""
    root = pathlib.Path(root)
    out = {}
    for fam in families:
        d = root / f"{fam}-v{VERSION}"
        if not (d / ".complete").exists():
            t0 = time.perf_counter()
            _build_one(fam, d, root / "_scratch")
            (d / ".complete").write_text(f"{time.perf_counter() - t0:.1f} s\n")
        out[fam] = str(d)
    return out


_SESSION: dict[str, str] = {}


def session_models(families=FAMILIES) -> dict[str, str]:
    """build() into $CLIPPROMPT_SD_MODELS, or once per process into a temporary directory removed at exit."""
    import atexit
    import shutil
    import tempfile

    root = os.environ.get("CLIPPROMPT_SD_MODELS")
    if not root:
        if "root" not in _SESSION:
            _SESSION["root"] = tempfile.mkdtemp(prefix="clipprompt-sd-")
            atexit.register(shutil.rmtree, _SESSION["root"], True)
        root = _SESSION["root"]
    return build(root, families)


def load_pipeline(path: str):
    """The saved pipeline, loaded by diffusers in fp32 (transformers 5's CLIPTextModel has no ``text_model``,
    which diffusers' clip_skip path reads ``final_layer_norm`` through: an alias to the same module is added)."""
    import types

    import torch
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(path, torch_dtype=torch.float32)
    for te in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)):
        if te is not None and not hasattr(te, "text_model"):
            object.__setattr__(te, "text_model", types.SimpleNamespace(final_layer_norm=te.final_layer_norm))
    return pipe


if __name__ == "__main__":
    import sys

    t0 = time.perf_counter()
    print(build(sys.argv[1] if len(sys.argv) > 1 else "/tmp/sd_models"), f"{time.perf_counter() - t0:.1f} s")
