"""Parse CLIP's published prompts.md into clipprompt/data/clip_templates.json (committed; rerun if it changes).

    python scripts/build_templates.py [--prompts tests/data/clip/prompts.md] [--out clipprompt/data/clip_templates.json]

prompts.md (openai/CLIP, MIT licence, clipprompt/data/CLIP_LICENSE) holds, per dataset, a `classes = [...]` and a
`templates = [...]` Python list inside a fenced block. ImageNet's templates are not in prompts.md: they are published
in CLIP's notebook `notebooks/Prompt_Engineering_for_ImageNet.ipynb` (openai/CLIP, MIT). The 80-template list and the
7-template subset the notebook selects are reproduced below with that attribution.

Output: {"source": ..., "licence": ..., "templates": {name: [..]}, "classes": {name: [..]}}, names lower-cased
("cifar10", "food101", "imagenet", "imagenet7", ...).
"""
from __future__ import annotations

import argparse
import ast
import json
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent

# openai/CLIP notebooks/Prompt_Engineering_for_ImageNet.ipynb, "imagenet_templates" (MIT, Copyright (c) 2021 OpenAI).
IMAGENET_TEMPLATES = [
    'a bad photo of a {}.',
    'a photo of many {}.',
    'a sculpture of a {}.',
    'a photo of the hard to see {}.',
    'a low resolution photo of the {}.',
    'a rendering of a {}.',
    'graffiti of a {}.',
    'a bad photo of the {}.',
    'a cropped photo of the {}.',
    'a tattoo of a {}.',
    'the embroidered {}.',
    'a photo of a hard to see {}.',
    'a bright photo of a {}.',
    'a photo of a clean {}.',
    'a photo of a dirty {}.',
    'a dark photo of the {}.',
    'a drawing of a {}.',
    'a photo of my {}.',
    'the plastic {}.',
    'a photo of the cool {}.',
    'a close-up photo of a {}.',
    'a black and white photo of the {}.',
    'a painting of the {}.',
    'a painting of a {}.',
    'a pixelated photo of the {}.',
    'a sculpture of the {}.',
    'a bright photo of the {}.',
    'a cropped photo of a {}.',
    'a plastic {}.',
    'a photo of the dirty {}.',
    'a jpeg corrupted photo of a {}.',
    'a blurry photo of the {}.',
    'a photo of the {}.',
    'a good photo of the {}.',
    'a rendering of the {}.',
    'a {} in a video game.',
    'a photo of one {}.',
    'a doodle of a {}.',
    'a close-up photo of the {}.',
    'a photo of a {}.',
    'the origami {}.',
    'the {} in a video game.',
    'a sketch of a {}.',
    'a doodle of the {}.',
    'a origami {}.',
    'a low resolution photo of a {}.',
    'the toy {}.',
    'a rendition of the {}.',
    'a photo of the clean {}.',
    'a photo of a large {}.',
    'a rendition of a {}.',
    'a photo of a nice {}.',
    'a photo of a weird {}.',
    'a blurry photo of a {}.',
    'a cartoon {}.',
    'art of a {}.',
    'a sketch of the {}.',
    'a embroidered {}.',
    'a pixelated photo of a {}.',
    'itap of the {}.',
    'a jpeg corrupted photo of the {}.',
    'a good photo of a {}.',
    'a plushie {}.',
    'a photo of the nice {}.',
    'a photo of the small {}.',
    'a photo of the weird {}.',
    'the cartoon {}.',
    'art of the {}.',
    'a drawing of the {}.',
    'a photo of the large {}.',
    'a black and white photo of a {}.',
    'the plushie {}.',
    'a dark photo of a {}.',
    'itap of a {}.',
    'graffiti of the {}.',
    'a toy {}.',
    'itap of my {}.',
    'a photo of a cool {}.',
    'a photo of a small {}.',
    'a tattoo of the {}.',
]

# The same notebook's 7-template subset found by sequential forward selection on ImageNet train.
IMAGENET7_TEMPLATES = [
    'itap of a {}.',
    'a bad photo of the {}.',
    'a origami {}.',
    'a photo of the large {}.',
    'a {} in a video game.',
    'art of the {}.',
    'a photo of the small {}.',
]

_SECTION = re.compile(r"^## (.+?)\s*$", re.M)
_LIST = re.compile(r"^(classes|templates)\s*=\s*(\[.*?^\])", re.M | re.S)


def parse_prompts_md(text: str) -> tuple[dict, dict]:
    """Return ({dataset: templates}, {dataset: classes}) with lower-cased dataset names."""
    templates, classes = {}, {}
    heads = list(_SECTION.finditer(text))
    for i, h in enumerate(heads):
        body = text[h.end(): heads[i + 1].start() if i + 1 < len(heads) else len(text)]
        name = h.group(1).strip().lower()
        for m in _LIST.finditer(body):
            value = ast.literal_eval(m.group(2))  # a plain list literal of str (or list of str for FER2013)
            (templates if m.group(1) == "templates" else classes)[name] = value
    return templates, classes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", default=str(ROOT / "tests" / "data" / "clip" / "prompts.md"))
    p.add_argument("--out", default=str(ROOT / "clipprompt" / "data" / "clip_templates.json"))
    args = p.parse_args(argv)
    templates, classes = parse_prompts_md(pathlib.Path(args.prompts).read_text(encoding="utf-8"))
    assert len(IMAGENET_TEMPLATES) == 80 and len(set(IMAGENET_TEMPLATES)) == 80
    templates["imagenet"] = list(IMAGENET_TEMPLATES)
    templates["imagenet7"] = list(IMAGENET7_TEMPLATES)
    out = {
        "source": "openai/CLIP data/prompts.md (26 datasets) + notebooks/Prompt_Engineering_for_ImageNet.ipynb "
                  "(imagenet, imagenet7)",
        "licence": "MIT, Copyright (c) 2021 OpenAI (see CLIP_LICENSE beside this file)",
        "templates": dict(sorted(templates.items())),
        "classes": dict(sorted(classes.items())),
    }
    pathlib.Path(args.out).write_text(json.dumps(out, ensure_ascii=False, separators=(",", ":")) + "\n",
                                      encoding="utf-8")
    print(f"{args.out}: {len(templates)} template sets, {sum(map(len, templates.values()))} templates")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
