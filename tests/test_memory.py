"""Resident memory stays flat under long repetition (issue 8, item 4). Each test warms up first (allocator pools,
arenas, first-call caches), then repeats the operation and reads the anonymous RSS (RssAnon: memory-mapped weights
are file-backed and excluded, see hardening_util.rss_bytes) at checkpoints: the growth after warm-up must stay under
a tolerance far below what a per-call leak of the data involved would add.

Counts: 1M cache put + 1M get with eviction (full scale); 10K prompts encoded with a tiny random CLIP tower (real
vocabulary and tokenizer; 625 calls of 16) plus 160 with the bundled MiniLM (the 6-layer model costs ~0.1-1 s per
call on this 2-core machine, so it is scaled down 60x); 1K FlatIPIndex save/load cycles (and 1K PromptCache ones) on
tmpfs (/dev/shm when present: the atomic writer fsyncs, which costs ~10 ms a file on disk).
Under the sanitizer runner (CLIPPROMPT_SANITIZED_RUN=1) ASan's quarantine holds freed blocks, so the tolerance grows
by the quarantine size set in tests/run_sanitized.sh; leaks themselves are LeakSanitizer's and valgrind's job there
(docs/reliability.md)."""
import os
import tempfile

import numpy as np
import pytest
from hardening_util import SANITIZED, requires, rss_bytes, write_tiny_clip

import clipprompt as cp

MB = 1 << 20
SLACK = 48 * MB if SANITIZED else 0


def flat(readings, tol, what):
    """readings: RSS after warm-up, then at checkpoints. Fails when memory grew by more than tol."""
    growth = max(readings) - readings[0]
    print(f"{what}: anonymous RSS after warm-up {readings[0] / MB:.1f} MB, growth {growth / MB:+.2f} MB")
    assert growth <= tol + SLACK, (
        f"{what}: RSS grew by {growth / MB:.1f} MB after warm-up (tolerance {(tol + SLACK) / MB:.0f} MB); "
        f"readings (MB): {[round(r / MB, 1) for r in readings]}")


@pytest.fixture
def fastdir():
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(dir=base, prefix="cp-mem-") as d:
        yield d


@requires("PromptCache")
def test_cache_1m_put_get_with_eviction_rss_flat():
    dim, distinct = 64, 20_000
    texts = [f"a photo of prompt number {i}" for i in range(distinct)]
    vecs = [np.full(dim, i % 97, np.float32) for i in range(64)]
    cost = cp.PromptCache.entry_cost("fp", texts[-1], (dim,))
    cache = cp.PromptCache(capacity_bytes=cost * 2000)  # ~2000 live entries: almost every put evicts
    put, get = cache.put, cache.get

    def rounds(k):
        for _ in range(k):
            for i, t in enumerate(texts):
                put("fp", t, vecs[i & 63])
                get("fp", t)

    rounds(2)  # warm-up: 40K put/get
    readings = [rss_bytes()]
    for _ in range(5):
        rounds(10)  # 200K put + 200K get per checkpoint: 1M of each in all
        readings.append(rss_bytes())
    st = cache.stats()
    assert st["evictions"] >= 1_000_000 - 2000 and st["hits"] >= 1_000_000
    assert st["bytes"] <= cache.capacity_bytes and len(cache) <= 2000
    flat(readings, 8 * MB, "PromptCache 1M put/get")


@pytest.fixture
def one_thread():
    """The encode loops run on one thread: on a loaded 2-core machine every OpenMP region of a small call waits for a
    descheduled team thread (measured: tiny-tower batches of 16 take 80 ms with 2 threads, 1 ms with 1), which would
    make this test minutes long. The code paths are the same; the 8-thread test covers concurrency."""
    cp.set_num_threads(1)
    yield
    cp.set_num_threads(0)


@requires("ClipTextEncoder", "MiniLMEncoder", "ClipTokenizer")
def test_10k_encodes_rss_flat(tmp_path, one_thread):
    clip = cp.ClipTextEncoder.from_pretrained(write_tiny_clip(str(tmp_path / "clip")))
    texts = [f"a photo of a number {i} cat, {'very ' * (i % 30)}fluffy" for i in range(10_000)]
    for s in range(0, 640, 16):  # warm-up
        clip.encode(texts[s:s + 16])
        clip.hidden_states(texts[s:s + 2], layer=-2)
    readings = [rss_bytes()]
    for s in range(0, 10_000, 16):
        v = clip.encode(texts[s:s + 16])
        if s % 2000 == 0:
            clip.hidden_states(texts[s:s + 2], layer=-2)
            readings.append(rss_bytes())
    assert v.shape == (16, clip.dim) and np.isfinite(v).all()
    readings.append(rss_bytes())
    flat(readings, 12 * MB, "ClipTextEncoder 10K prompts")

    mini = cp.MiniLMEncoder.from_pretrained()
    for s in range(0, 40, 8):
        mini.encode(texts[s:s + 8])
    readings = [rss_bytes()]
    for s in range(40, 200, 8):
        mini.encode(texts[s:s + 8])
        if s % 40 == 0:
            readings.append(rss_bytes())
    flat(readings, 12 * MB, "MiniLMEncoder 160 prompts")


@requires("FlatIPIndex", "PromptCache")
def test_1k_index_and_cache_save_load_cycles_rss_flat(fastdir):
    rng = np.random.default_rng(0)
    ix = cp.FlatIPIndex(64)
    ix.add(rng.standard_normal((1000, 64)).astype(np.float32))  # 256 KB of rows: a leaked copy per cycle = 256 MB
    p = os.path.join(fastdir, "ix.cpi")
    for _ in range(20):
        ix.save(p)
        ix = cp.FlatIPIndex.load(p)
    readings = [rss_bytes()]
    for k in range(1000):
        ix.save(p)
        ix = cp.FlatIPIndex.load(p)
        if k % 200 == 199:
            readings.append(rss_bytes())
    assert len(ix) == 1000
    flat(readings, 8 * MB, "FlatIPIndex 1K save/load")

    c = cp.PromptCache()
    for i in range(500):
        c.put("fp", f"text {i}", rng.standard_normal(128).astype(np.float32))  # 256 KB of values
    q = os.path.join(fastdir, "c.cpc")
    for _ in range(20):
        c.save(q)
        c = cp.PromptCache.load(q)
    readings = [rss_bytes()]
    for k in range(1000):
        c.save(q)
        c = cp.PromptCache.load(q)
        if k % 200 == 199:
            readings.append(rss_bytes())
    assert len(c) == 500
    flat(readings, 8 * MB, "PromptCache 1K save/load")
