"""Prompt strategies: CLIP templates (vs the published lists), keyword extraction, template ensembling."""
import ast
import json
import re
import subprocess
import sys

import _prompt_helpers as helpers
import numpy as np
import pytest
from conftest import DATA, ROOT, read_lines

import clipprompt as cp
from clipprompt import strategies as st


def _prompts_md_lists():
    """An independent parse of prompts.md: each fenced block's `templates = [...]`, keyed by the heading."""
    text = (DATA / "clip" / "prompts.md").read_text(encoding="utf-8")
    out = {}
    for block in re.split(r"^## ", text, flags=re.M)[1:]:
        name, _, body = block.partition("\n")
        code = body.split("```bash", 1)[1].split("```", 1)[0]
        ns = {}
        for node in ast.parse(code).body:
            if isinstance(node, ast.Assign) and node.targets[0].id == "templates":
                ns["templates"] = ast.literal_eval(node.value)
        out[re.sub(r"[^0-9a-z]", "", name.lower())] = ns["templates"]
    return out


def test_templates_match_clip_prompts_md():
    published = _prompts_md_lists()
    assert len(published) == 26
    for name, tmpl in published.items():
        assert cp.templates(name) == tmpl, name
    assert set(published) | {"imagenet", "imagenet7"} == set(cp.template_names())


def test_imagenet_templates_are_clips_80():
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    ours = cp.templates("imagenet")
    assert ours == [f("{}") for f in OPENAI_IMAGENET_TEMPLATES]
    assert len(ours) == 80 and all(t.count("{}") == 1 for t in ours)
    assert cp.templates("imagenet7") == [f("{}") for f in SIMPLE_IMAGENET_TEMPLATES]
    assert cp.templates() == ours
    assert cp.templates("Food-101") == cp.templates("food101") == ["a photo of {}, a type of food."]


def test_templates_unknown_name():
    with pytest.raises(cp.InvalidArgumentError, match="unknown template set 'nope'"):
        cp.templates("nope")


def test_shipped_json_is_what_the_build_script_makes(tmp_path):
    out = tmp_path / "t.json"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_templates.py"), "--prompts",
                    str(DATA / "clip" / "prompts.md"), "--out", str(out)], check=True, capture_output=True)
    shipped = (ROOT / "clipprompt" / "data" / "clip_templates.json").read_text(encoding="utf-8")
    assert json.loads(out.read_text(encoding="utf-8")) == json.loads(shipped)


def test_fill_templates_keeps_braces_in_prompt():
    assert st.fill_templates("a {weird} mug", ["a photo of a {}.", "{} art"]) == ["a photo of a a {weird} mug.",
                                                                                 "a {weird} mug art"]


def test_keywords_examples():
    assert cp.keywords("A child holding a flowered umbrella and petting a yak .") == \
        "child holding flowered umbrella petting yak"
    assert cp.keywords("  The  man's T-shirt is on the bed ") == "man's t-shirt bed"
    assert cp.keywords("the a of") == "the a of"  # nothing but stopwords: the prompt is kept
    zh = cp.keywords("红色的连衣裙和白色的帽子")
    assert "的" not in zh.split() and "和" not in zh.split()
    assert "连衣裙" in zh and "帽子" in zh
    with pytest.raises(cp.EmptyPromptError):
        cp.keywords("   ")


def test_keywords_on_real_captions():
    stop = st.stopwords()
    for cap in read_lines("captions/coco_dev_caps.txt")[:1000]:
        words = cp.keywords(cap).split()
        assert words, cap
        assert len(words) == len(set(words))
        low = cap.lower()
        for w in words:
            assert w not in stop, (cap, w)
            assert w in low, (cap, w)
        # every content word of the caption is kept (hyphenated / possessive words stay whole)
        parts = {x for k in words for x in re.split(r"['’-]", k)}
        for w in re.findall(r"[a-z0-9]+", low):
            if w not in stop and w != "s":
                assert w in parts, (cap, w)


def test_pool_vectors_is_mean_of_normalised_then_renormalised():
    rng = np.random.default_rng(0)
    v = rng.standard_normal((10, 7)).astype(np.float32) * rng.uniform(0.5, 3, (10, 1)).astype(np.float32)
    counts = [3, 1, 6]
    got = st.pool_vectors(v, counts)
    unit = v / np.linalg.norm(v, axis=1, keepdims=True)
    want = np.stack([unit[0:3].mean(0), unit[3:4].mean(0), unit[4:10].mean(0)])
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(st.pool_vectors(v[:3], [1, 1, 1]), v[:3])


def test_strategies_texts():
    prompts = ["a red dress on a chair", "blue shirt"]
    assert st.RawStrategy().texts(prompts) == [[p] for p in prompts]
    assert st.KeywordStrategy().texts(prompts) == [["red dress chair"], ["blue shirt"]]
    t = st.TemplateStrategy("cifar10").texts(prompts)
    assert t[0] == [x.replace("{}", prompts[0]) for x in cp.templates("cifar10")]
    tk = st.TemplateStrategy(["a photo of {}."], keywords=True).texts(prompts)
    assert tk == [["a photo of red dress chair."], ["a photo of blue shirt."]]
    with pytest.raises(cp.InvalidArgumentError):
        st.TemplateStrategy(["no placeholder"])
    with pytest.raises(cp.InvalidArgumentError, match="unknown strategy"):
        st.get_strategy("bogus")


def test_template_ensemble_by_hand():
    enc = helpers.minilm()
    tmpl = cp.templates("imagenet7")
    got = st.encode_texts(enc, [t.replace("{}", "cat") for t in tmpl])
    got = st.pool_vectors(got, [len(tmpl)])
    e = enc.encode([t.format("cat") for t in tmpl], normalize=True)
    want = e.mean(0) / np.linalg.norm(e.mean(0))
    np.testing.assert_allclose(got[0], want, atol=1e-5)
