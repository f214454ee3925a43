"""benchmarks/eval_strategies.py: recall arithmetic, pool hygiene, the text->image path (--clip, --image-embeddings)."""
import json
import sys

import _prompt_helpers as helpers
import numpy as np
import pytest
from conftest import DATA, ROOT

import clipprompt as cp

sys.path.insert(0, str(ROOT / "benchmarks"))
import eval_strategies as ev

CAPS = str(DATA / "captions" / "coco_dev_caps.txt")
IDS = str(DATA / "captions" / "coco_dev_ids.txt")


def test_recall_at():
    I = np.array([[0, 2, 1], [0, 1, 2], [1, 0, 2]])
    r = ev.recall_at(I, [0, 1, 2], ks=(1, 2, 3))
    assert r == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 3: 1.0}


def test_load_split_and_clean_pool():
    ids, caps = ev.load_split(CAPS, IDS, limit=5)
    assert len(ids) == len(caps) == 5 and all(len(c) == 5 for c in caps)
    assert caps[0][0] == "A child holding a flowered umbrella and petting a yak ."
    pool = ["Umbrellas", caps[1][2].upper() + "  ", "Yak Wool"]
    kept, removed = ev.clean_pool(pool, caps)
    assert kept == ["Umbrellas", "Yak Wool"] and removed == 1


def test_text_to_text_run(capsys):
    rc = ev.main(["--captions", CAPS, "--ids", IDS, "--limit", "12", "--repeat", "2", "--json",
                  "--strategies", "raw", "keywords", "templates", "--no-expand", "--template", "stl10"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    names = [r["strategy"] for r in out["results"]]
    assert names == ["raw caption (upper bound)", "keywords (user prompt)", "templates (stl10) on keywords"]
    for r in out["results"]:
        assert 0 <= r["r1"] <= r["r5"] <= r["r10"] <= 1 and r["n_queries"] == r["gallery"] == 12
        assert 0 < r["repeat_hit_rate"] <= 0.5  # each query twice, served in batches of 16: at most half hit
    assert out["results"][0]["r10"] == 1.0  # 12 images: everything is in the top 10
    assert out["header"]["metric"].startswith("text->text")


def test_text_to_image_path(tmp_path, capsys):
    clip_dir = helpers.save_tiny_clip(tmp_path / "clip")
    clip = cp.ClipTextEncoder.from_pretrained(clip_dir)
    _ids, caps = ev.load_split(CAPS, IDS, limit=10)
    # "image" embeddings = the CLIP embedding of each image's held-back caption: the raw strategy must find
    # every image first, whatever the (random) weights.
    emb = clip.encode([cp.normalize(c[0]) for c in caps])
    np.save(tmp_path / "img.npy", emb)
    rc = ev.main(["--captions", CAPS, "--ids", IDS, "--limit", "10", "--clip", clip_dir, "--image-embeddings",
                  str(tmp_path / "img.npy"), "--no-expand", "--strategies", "raw", "keywords", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["header"]["metric"] == "text->image"
    raw = out["results"][0]
    assert raw["r1"] == 1.0 and raw["gallery"] == 10
    with pytest.raises(SystemExit, match="needs --clip"):
        ev.main(["--captions", CAPS, "--ids", IDS, "--image-embeddings", str(tmp_path / "img.npy")])


def test_expand_configs_each_get_a_row():
    assert ev._parse_config("2:0.5:-") == (2, 0.5, None) and ev._parse_config("5") == (5, None, None)
    enc = helpers.minilm()
    _ids, caps = ev.load_split(CAPS, IDS, limit=6)
    res = ev.evaluate(enc, caps, expander=helpers.small_expander(), strategies=["expand"], repeat=1, repeat_n=2,
                      expand_configs=[(2, None, None), (3, 0.4, 0.5)])
    assert [r["strategy"] for r in res] == ["expand top2 on keywords", "expand top3 min0.4 mmr0.5 on keywords"]
    assert all(r["n_queries"] == r["gallery"] == 6 and 0 <= r["r1"] <= r["r10"] <= 1 for r in res)
