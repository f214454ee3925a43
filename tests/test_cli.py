"""python -m clipprompt {demo,normalize,tokenize,encode,expand,search,bench,info}."""
import json
import os
import subprocess
import sys

import _prompt_helpers as helpers
import numpy as np
import pytest
from conftest import ROOT, read_lines

import clipprompt as cp
from clipprompt.cli import DEMO_PROMPTS, main

POOL = ["Rain Boots", "Umbrellas", "Dresses", "Summer Dresses", "Cat Food", "Cat Beds", "T-Shirts", "Hats",
        "Coffee Tables", "Artwork", "Straw Hats", "Beach Towels"]


@pytest.fixture()
def pool_file(tmp_path):
    f = tmp_path / "pool.txt"
    f.write_text("\n".join(POOL) + "\n", encoding="utf-8")
    return str(f)


def _run(capsys, *argv):
    rc = main(list(argv))
    out = capsys.readouterr()
    assert rc == 0, out.err
    return out.out


def test_info_and_normalize_as_module():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "clipprompt", "info"], check=False, capture_output=True, text=True,
                       env=env,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["version"] == cp.__version__
    r = subprocess.run([sys.executable, "-m", "clipprompt", "normalize", "ＵＮＩＱＬＯ　ｓｈｉｒｔ"],
                       check=False, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == cp.normalize("ＵＮＩＱＬＯ　ｓｈｉｒｔ")
    r = subprocess.run([sys.executable, "-m", "clipprompt", "normalize", "   "], check=False, capture_output=True,
                       text=True,
                       env=env, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "EmptyPromptError" in r.stderr


def test_tokenize(capsys):
    out = _run(capsys, "tokenize", "--json", "a photo of a cat", "shirt白色短袖")
    rows = json.loads(out)
    tok = cp.ClipTokenizer()
    assert rows[0]["ids"] == list(tok.encode("a photo of a cat")) and rows[0]["n_tokens"] == len(rows[0]["ids"]) + 2
    assert rows[1]["ids"] == list(tok.encode("shirt白色短袖"))
    assert "tokens" in _run(capsys, "tokenize", "a dog")


def test_encode(capsys, tmp_path):
    out = tmp_path / "v.npy"
    assert "wrote" in _run(capsys, "encode", "--out", str(out), "a red dress", "a cat on a mat")
    v = np.load(out)
    enc = helpers.minilm()
    np.testing.assert_allclose(v, enc.encode(["a red dress", "a cat on a mat"]), atol=1e-5)
    text = _run(capsys, "encode", "--strategy", "keywords", "the red dress")
    assert "float32 [1, 384]" in text and "strategy=keywords" in text


def test_expand(capsys, pool_file):
    rows = json.loads(_run(capsys, "expand", "--json", "--pool", pool_file, "--top-k", "2", "straw hat for the beach"))
    assert len(rows) == 1 and len(rows[0]["added"]) == 2
    added = [p for p, _ in rows[0]["added"]]
    assert set(added) <= set(POOL) and "Straw Hats" not in added  # all its words are in the prompt
    assert rows[0]["text"].startswith("straw hat for the beach, ")
    text = _run(capsys, "expand", "--pool", pool_file, "--max-tokens", "10", "straw hat for the beach")
    assert "CLIP tokens" in text


def test_search(capsys, tmp_path):
    corpus = tmp_path / "corpus.txt"
    lines = read_lines("captions/coco_dev_caps.txt")[:50]
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = _run(capsys, "search", "--corpus", str(corpus), "-k", "2", lines[7])
    first = out.splitlines()[1]
    assert first.strip().split("  ", 1)[1] == cp.normalize(lines[7])
    out = _run(capsys, "search", "--corpus", str(corpus), "-k", "1", "--strategy", "templates", "--template",
               "stl10", "umbrella yak")
    assert len(out.splitlines()) == 2


def test_bench(capsys):
    out = json.loads(_run(capsys, "bench", "-n", "24", "--runs", "1", "--json"))
    whats = [r["what"] for r in out["rows"]]
    assert whats == ["normalize_batch", "ClipTokenizer", "encode (no cache)", "encode (PromptCache hit)",
                     "FlatIPIndex.search k=10"]
    assert all(r["median_ms"] >= 0 for r in out["rows"]) and out["header"]["threads"] >= 1
    table = _run(capsys, "bench", "-n", "8", "--runs", "1")
    assert "median ms (runs, warm-up)" in table and "x baseline" in table


def test_demo(capsys, pool_file, tmp_path):
    cache_file = tmp_path / "demo.cpc"
    out = _run(capsys, "demo", "--pool", pool_file, "--cache-file", str(cache_file))
    for head in ("1. normalise", "2. CLIP tokens", "3. expand", "4. search", "5. timings"):
        assert head in out
    for p in DEMO_PROMPTS:
        assert repr(cp.normalize(p)[:44]) in out
    assert "hit rate 100%" in out  # the repeat pass is served from the cache
    assert f"0 from the cache file, {len(POOL)} encoded" in out
    assert cache_file.exists()
    again = _run(capsys, "demo", "--pool", pool_file, "--cache-file", str(cache_file))
    assert f"{len(POOL)} from the cache file, 0 encoded" in again  # the pool is embedded once, across runs
    assert any("中" in p or "色" in p for p in DEMO_PROMPTS) and any(p.isascii() for p in DEMO_PROMPTS)
