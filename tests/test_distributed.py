"""clipprompt.distributed on a local Ray cluster (ray.init(num_cpus=2), 2 actors): every row comes back once with its
id, the vectors equal a single-process run, each actor loads the model once, repeats are encoded once, the index
built from the vectors answers like one built in-process, and Parquet in -> Parquet out works."""
import os

import numpy as np
import pytest
import ray
from conftest import ROOT, read_lines

import clipprompt as cp
import clipprompt.distributed as dist

N_UNIQUE, N_REPEAT = 400, 200


class LoggedMiniLM:
    """An encoder factory that leaves one line per model load (with the loading process id) in ``log``."""

    def __init__(self, log):
        self.log = str(log)

    def __call__(self):
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()}\n")
        return cp.MiniLMEncoder.from_pretrained()


@pytest.fixture(scope="module")
def cluster():
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def rows():
    caps = read_lines("captions/coco_dev_caps.txt")[:N_UNIQUE]
    rng = np.random.default_rng(0)
    prompts = caps + [caps[i] for i in rng.integers(0, N_UNIQUE, N_REPEAT)]
    order = rng.permutation(len(prompts))
    return [{"id": 10**9 + int(j), "prompt": prompts[j]} for j in order]


@pytest.fixture(scope="module")
def reference(rows):
    cp.set_num_threads(1)
    try:
        enc = cp.MiniLMEncoder.from_pretrained()
        uniq = list(dict.fromkeys(cp.normalize(r["prompt"]) for r in rows))
        vecs = enc.encode(uniq)
    finally:
        cp.set_num_threads(0)
    return dict(zip(uniq, vecs))


def test_embed_two_actors(cluster, rows, reference, tmp_path):
    log = tmp_path / "loads.txt"
    ds = ray.data.from_items(rows, override_num_blocks=6)
    out = dist.embed(ds, encoder=LoggedMiniLM(log), column="prompt", batch_size=50, concurrency=2)
    got = out.take_all()
    # every row once, with its id and its text
    assert sorted(r["id"] for r in got) == sorted(r["id"] for r in rows)
    by_id = {r["id"]: r for r in rows}
    for r in got:
        assert r["prompt"] == by_id[r["id"]]["prompt"]
        v = np.asarray(r["embedding"], np.float32)
        assert v.shape == (384,)
        np.testing.assert_allclose(v, reference[cp.normalize(r["prompt"])], atol=1e-6, rtol=0)
    # two actors, each loaded the model exactly once
    pids = log.read_text().split()
    assert len(pids) == 2 and len(set(pids)) == 2, pids


def test_build_index_and_search(cluster, rows, reference, tmp_path):
    ds = dist.embed(ray.data.from_items(rows, override_num_blocks=4), encoder="minilm", batch_size=64,
                    concurrency=2)
    index = dist.build_index(ds, path=tmp_path / "dist.cpi")
    assert len(index) == len(rows)
    ref = cp.FlatIPIndex(384)
    ref.add(np.stack([reference[cp.normalize(r["prompt"])] for r in rows]), np.array([r["id"] for r in rows]))
    q = np.stack([reference[cp.normalize(rows[i]["prompt"])] for i in (0, 7, 123)])
    D, I = index.search(q, 5)
    D2, I2 = ref.search(q, 5)
    np.testing.assert_allclose(D, D2, atol=1e-6)
    for a, b, d in zip(I, I2, D):  # equal scores may come in either order; the sets per score agree
        assert set(a.tolist()) == set(b.tolist()) or np.isclose(d[-1], d[-2])
    assert set(I[0].tolist()) >= {rows[0]["id"]}
    assert len(cp.FlatIPIndex.load(str(tmp_path / "dist.cpi"))) == len(rows)


def test_parquet_in_parquet_out(cluster, rows, reference, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": [r["id"] for r in rows[:120]], "prompt": [r["prompt"] for r in rows[:120]]}), src)
    # the read and write tasks need a CPU too: two actors at half a CPU each leave one for them (two at one CPU
    # each would hold both of this cluster's CPUs and the read task would wait for ever)
    dist.embed(ray.data.read_parquet(str(src)), encoder="minilm", batch_size=40, concurrency=2, num_cpus=0.5) \
        .write_parquet(str(tmp_path / "out"))
    t = pq.read_table(str(tmp_path / "out"))
    assert sorted(t.column("id").to_pylist()) == sorted(r["id"] for r in rows[:120])
    for p, v in zip(t.column("prompt").to_pylist(), t.column("embedding").to_pylist()):
        np.testing.assert_allclose(np.asarray(v, np.float32), reference[cp.normalize(p)], atol=1e-6, rtol=0)


def test_bad_arguments(cluster):
    ds = ray.data.from_items([{"id": 1, "prompt": "a"}])
    with pytest.raises(cp.InvalidArgumentError, match="no column 'text'"):
        dist.embed(ds, column="text")
    with pytest.raises(cp.InvalidArgumentError, match="concurrency"):
        dist.embed(ds, concurrency=0)
    with pytest.raises(cp.InvalidArgumentError, match=r"ray\.data\.Dataset"):
        dist.embed([{"prompt": "a"}])


def test_actor_dedupes_and_caches():
    calls = []

    class Counting:
        dim, fingerprint = 384, "counting"

        def __init__(self):
            self.inner = cp.MiniLMEncoder.from_pretrained()

        def encode(self, texts, normalize=True, **kw):
            calls.append(list(texts))
            return self.inner.encode(texts, normalize=normalize)

    actor = dist.EmbedActor(encoder=Counting, column="prompt")
    b = {"id": np.arange(4), "prompt": np.array(["a red hat", "A red hat", "a red hat", "ＵＮＩＱＬＯ"], dtype=object)}
    out = actor(b)
    assert calls == [["a red hat", "A red hat", "UNIQLO"]]  # normalised, repeats within the batch encoded once
    np.testing.assert_array_equal(out["embedding"][0], out["embedding"][2])
    actor(b)
    assert len(calls) == 1 and actor.encoded == 3  # the next batch is answered by the actor's cache
    with pytest.raises(cp.InvalidArgumentError, match="row 1"):
        actor({"prompt": np.array(["ok", 5], dtype=object)})
