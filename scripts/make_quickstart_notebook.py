"""Writes notebooks/quickstart.ipynb (outputs empty; the tests execute it). Edit here, rerun, commit both."""
import nbformat as nbf

nb = nbf.v4.new_notebook()
md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
cells = [
md("""# clipprompt quickstart

A tour of the whole path a prompt takes: **normalise → tokenize → encode → expand → cache → search**, and at the end a
small, honest comparison of prompt strategies on real COCO captions. Everything below runs on the C core in
`clipprompt._C` (no PyTorch). Run it from the repository (it reads the vendored captions in `tests/data/`)."""),
code("""import pathlib, time
import numpy as np
import clipprompt as cp

ROOT = pathlib.Path.cwd().resolve()
ROOT = ROOT.parent if ROOT.name == "notebooks" else ROOT
DATA = ROOT / "tests" / "data"
info = cp.build_info()
print(cp.__version__, "|", info["blas"].split("(")[0], "| threads", cp.get_num_threads(), "| CUDA", info["cuda"])"""),
md("""## 1. Normalise
Real prompts arrive with curly quotes, HTML entities, full-width letters, ligatures and stray whitespace.
`cp.normalize` cleans them (NFKC by default); an empty prompt is an error, not a silent empty vector."""),
code("""messy = ["“Red” summer dress &amp;amp; straw hat,   beach  ", "ＵＮＩＱＬＯ　ｓｈｉｒｔ　白色短袖",
         "ﬁne art photo of a café at night\\u00a0— 4K", "shirt白色短袖"]
for m in messy:
    print(f"{m!r:50} -> {cp.normalize(m)!r}")
try:
    cp.normalize("   ")
except cp.EmptyPromptError as e:
    print("EmptyPromptError:", e)"""),
md("""## 2. Tokenize
`cp.ClipTokenizer` is CLIP's byte-level BPE; `tok(texts)` gives the `[B, 77]` int32 matrix the text tower eats
(SOT … EOT, zero padded). Chinese costs many more tokens than English — worth knowing under a 77-token limit."""),
code("""tok = cp.ClipTokenizer()
for t in ["a photo of a cat", "白色短袖衬衫", "红色连衣裙 女 夏季"]:
    ids = tok.encode(t)
    print(f"{len(ids) + 2:3d} tokens  {t!r:24} {ids}")
print(tok(["a photo of a cat"])[0, :10])"""),
md("""## 3. Encode
`cp.MiniLMEncoder` (all-MiniLM-L6-v2, bundled) and `cp.ClipTextEncoder` (any CLIP text tower) return L2-normalised
float32 vectors, so a dot product is the cosine similarity."""),
code("""mini = cp.MiniLMEncoder.from_pretrained()
v = mini.encode(["a red summer dress", "a crimson sundress", "a stainless steel cat bowl"])
print(v.shape, v.dtype)
print(np.round(v @ v.T, 3))"""),
md("""## 4. Cache and search
`cp.PromptCache` keeps vectors by (encoder fingerprint, text): repeated prompts are not encoded again.
`cp.FlatIPIndex` is an exact inner-product index (FAISS `IndexFlatIP` semantics, `-1` where k exceeds what is stored)."""),
code("""captions = (DATA / "captions" / "coco_dev_caps.txt").read_text(encoding="utf-8").splitlines()[:200]
cache = cp.PromptCache()
t0 = time.perf_counter(); vecs = cache.get_or_encode(mini, captions); cold = time.perf_counter() - t0
t0 = time.perf_counter(); cache.get_or_encode(mini, captions); warm = time.perf_counter() - t0
print(f"cold {cold * 1e3:.0f} ms, cached {warm * 1e3:.1f} ms;", {k: cache.stats()[k] for k in ("hits", "misses", "hit_rate")})

index = cp.FlatIPIndex(mini.dim)
index.add(vecs)
D, I = index.search(mini.encode(["kids playing with an umbrella"]), 3)
for s, i in zip(D[0], I[0]):
    print(f"{s:.3f}  {captions[i]}")"""),
md("""## 5. Expand
`cp.PromptExpander(pool)` embeds a phrase pool once and grows a prompt with the nearest phrases — under guards: a
score floor, no phrase already present (exactly, normalised, or all its words), optional MMR diversity, and never
more than `max_tokens` CLIP tokens. The package ships a default pool (the Google product taxonomy); here a slice of
it keeps the notebook quick."""),
code("""from clipprompt.expand import read_pool
pool = [p for p in read_pool(None) if any(w in p.lower() for w in ("dress", "hat", "shirt", "cat", "umbrella", "beach"))]
exp = cp.PromptExpander(pool, mini, cache=cache)
for prompt in ["red summer dress", "cat food bowl", "straw hat for the beach"]:
    e = exp.expand(prompt, top_k=3, mmr=0.7, min_score=0.3)
    print(f"{e.text!r}  ({e.tokens} tokens)")
    print("   dropped:", [(p, why) for p, _, why in e.dropped[:3]])"""),
md("""## 6. Templates, keywords and the pipeline
`cp.templates(name)` returns CLIP's published zero-shot templates (`"imagenet"` = the 80 of the CLIP notebook);
`cp.keywords` reduces a caption to what a user would type. `cp.PromptPipeline` strings it all together:
normalise → segment → strategy → cache → encode → index."""),
code("""print(len(cp.templates("imagenet")), cp.templates("imagenet")[:3])
print(cp.keywords("A child holding a flowered umbrella and petting a yak ."))
pipe = cp.PromptPipeline(mini, strategy="templates", template="imagenet7", cache=cache, index=index)
D, I = pipe.search(["umbrella yak"], 2)
print([captions[i] for i in I[0]])
print({k: v for k, v in pipe.stats().items() if k in ("prompts", "texts", "hit_rate")})"""),
md("""## 7. Which strategy helps? (a small run of `benchmarks/eval_strategies.py`)
For each of 40 COCO images one caption is held back; the gallery entry is the mean embedding of the other four.
The held-back caption becomes a user-style prompt (its keywords) and each strategy turns that into a query; the raw
caption is the upper bound. The full run (1,000 images, COCO and Flickr30K) is in benchmarks/RESULTS.md — whatever it shows."""),
code("""import sys
sys.path.insert(0, str(ROOT / "benchmarks"))
import eval_strategies as ev

ids, caps = ev.load_split(DATA / "captions" / "coco_dev_caps.txt", DATA / "captions" / "coco_dev_ids.txt", limit=40)
results = ev.evaluate(mini, caps, expander=exp, template="imagenet7", repeat=2, repeat_n=20)
for r in results:
    print(f"{r['strategy']:36} R@1 {r['r1']:.2f}  R@5 {r['r5']:.2f}  R@10 {r['r10']:.2f}  {r['ms_per_prompt']:.1f} ms/prompt")"""),
code("""%matplotlib inline
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(8, 3.5))
names = [r["strategy"] for r in results]
x = np.arange(len(names))
for j, k in enumerate(("r1", "r5", "r10")):
    ax.bar(x + (j - 1) * 0.27, [r[k] for r in results], width=0.27, label=f"Recall@{k[1:]}")
ax.set_xticks(x, names, rotation=15, ha="right", fontsize=8)
ax.set_ylim(0, 1); ax.set_ylabel("recall"); ax.legend(fontsize=8); ax.set_title("COCO dev, 40 images, MiniLM")
fig.tight_layout()
plt.show()"""),
]
nb["cells"] = cells
nb["metadata"] = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                  "language_info": {"name": "python"}}
nbf.write(nb, str(__import__("pathlib").Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"))
