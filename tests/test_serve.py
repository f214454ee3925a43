"""python -m clipprompt serve: every endpoint against the library, every bad input, the micro-batcher, the drain.

The service runs as a child process on a free loopback port (clipprompt.serve.ServiceProcess): started once for the
module, polled until /health answers, stopped with SIGTERM at the end (its exit code and the saved cache file are
checked). Every wait is bounded.
"""
import asyncio
import base64
import concurrent.futures
import json
import os
import socket
import threading
import time

import _prompt_helpers as helpers
import httpx
import numpy as np
import pytest
from conftest import ROOT, read_lines
from prometheus_client.parser import text_string_to_metric_families

import clipprompt as cp
from clipprompt import serve

ENV = dict(os.environ, PYTHONPATH=str(ROOT))
LIMITS = ["--max-items", "16", "--max-chars", "600", "--max-body-bytes", "20000", "--max-k", "20"]
CORPUS = read_lines("captions/coco_dev_caps.txt")[:120]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve")
    (d / "pool.txt").write_text("\n".join(helpers.small_pool(60)) + "\n", encoding="utf-8")
    (d / "corpus.txt").write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def svc(files):
    s = serve.ServiceProcess(["--pool", files / "pool.txt", "--corpus", files / "corpus.txt", "--cache",
                              files / "cache.cpc", "--max-wait-ms", "5", *LIMITS], env=ENV, cwd=str(ROOT),
                             timeout=240)
    s.start()
    yield s
    rc = s.stop()
    assert rc == 0, s.output
    # the cache was saved at shutdown and holds what the service encoded (pool + corpus + requests)
    saved = cp.PromptCache.load(str(files / "cache.cpc"))
    assert len(saved) >= len(CORPUS)


@pytest.fixture(scope="module")
def client(svc):
    with httpx.Client(base_url=svc.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def pool(files):
    from clipprompt.expand import read_pool

    return read_pool(str(files / "pool.txt"))


def _post(client, path, obj):
    """POST obj as ASCII JSON (lone surrogates travel as \\udXXX escapes, as a careless client would send them)."""
    return client.post(path, content=json.dumps(obj).encode(), headers={"content-type": "application/json"})


def _err(r, status, kind, item=None, field=None):
    assert r.status_code == status, (r.status_code, r.text)
    e = r.json()["error"]
    assert e["type"] == kind, e
    assert e["status"] == status
    if item is not None:
        assert e["item"] == item, e
    if field is not None:
        assert e["field"] == field, e
    assert e["message"]
    return e


def _metrics(client):
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(r.text):  # the reference parser: the format is valid
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _metric(m, name, **labels):
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


# -- endpoints ---------------------------------------------------------------------------------------------------------


def test_health_and_models(client):
    h = client.get("/health").json()
    enc = helpers.minilm()
    assert h["status"] == "ok" and h["model"] == "minilm" and h["dim"] == 384
    assert h["encoder"] == enc.fingerprint and h["expander"] == "ready" and h["index"] == len(CORPUS)
    m = client.get("/v1/models").json()
    assert m["object"] == "list" and m["data"][0]["id"] == "minilm" and m["data"][0]["dim"] == 384


def test_embeddings_equal_the_library(client):
    texts = ["A child holding a flowered umbrella .", "“Red” summer dress &amp; straw hat", "红色连衣裙 女 夏季",
             "硬い帽子をかぶった男が踊っている。"]
    enc = helpers.minilm()
    ref = enc.encode([cp.normalize(t) for t in texts])
    r = client.post("/v1/embeddings", json={"input": texts, "model": "minilm"})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["object"] == "list" and d["model"] == "minilm"
    got = np.array([x["embedding"] for x in d["data"]], np.float32)
    assert [x["index"] for x in d["data"]] == [0, 1, 2, 3]
    np.testing.assert_allclose(got, ref, atol=1e-5)
    # usage: WordPiece tokens with [CLS]/[SEP], as the encoder sees them
    _, mask = cp.WordPieceTokenizer(os.path.join(enc.path, "vocab.txt"))([cp.normalize(t) for t in texts],
                                                                              max_length=enc.max_seq_length)
    assert d["usage"]["prompt_tokens"] == d["usage"]["total_tokens"] == int(np.asarray(mask).sum())
    # one string, base64 (little-endian float32, as OpenAI's clients decode it), the fingerprint as model name
    r = client.post("/v1/embeddings", json={"input": texts[2], "encoding_format": "base64", "model": enc.fingerprint})
    v = np.frombuffer(base64.b64decode(r.json()["data"][0]["embedding"]), "<f4")
    np.testing.assert_allclose(v, ref[2], atol=1e-5)


def test_cache_in_front_of_the_encoder(client):
    texts = [f"cache probe {i} a blue ceramic teapot" for i in range(5)]
    m0 = _metrics(client)
    a = client.post("/v1/embeddings", json={"input": texts}).json()
    m1 = _metrics(client)
    b = client.post("/v1/embeddings", json={"input": texts}).json()
    m2 = _metrics(client)
    assert _metric(m1, "clipprompt_cache_misses_total") - _metric(m0, "clipprompt_cache_misses_total") == 5
    assert _metric(m2, "clipprompt_cache_hits_total") - _metric(m1, "clipprompt_cache_hits_total") == 5
    # the second request never reached the encoder
    assert _metric(m2, "clipprompt_encoded_texts_total") == _metric(m1, "clipprompt_encoded_texts_total")
    assert a["data"] == b["data"]


def test_concurrent_requests_are_merged_into_batches(client):
    enc = helpers.minilm()
    texts = [f"merge probe {i}: a small wooden boat on a lake" for i in range(24)]
    ref = enc.encode(texts)
    m0 = _metrics(client)

    def one(i):
        r = client.post("/v1/embeddings", json={"input": texts[i]})
        return i, r.status_code, r.json()

    with concurrent.futures.ThreadPoolExecutor(24) as ex:
        res = list(ex.map(one, range(24)))
    for i, status, d in res:
        assert status == 200, d
        np.testing.assert_allclose(d["data"][0]["embedding"], ref[i], atol=1e-5)
    m1 = _metrics(client)
    calls = _metric(m1, "clipprompt_batch_size_count") - _metric(m0, "clipprompt_batch_size_count")
    encoded = _metric(m1, "clipprompt_batch_size_sum") - _metric(m0, "clipprompt_batch_size_sum")
    assert encoded == 24
    assert calls < 24, f"24 concurrent requests took {calls} encoder calls: nothing was merged"


def test_normalize_and_segment(client):
    texts = ["ＵＮＩＱＬＯ　ｓｈｉｒｔ　白色短袖", "ﬁne art photo of a café at night\u00a0— 4K"]
    d = client.post("/v1/normalize", json={"input": texts, "lowercase": True}).json()
    assert [x["text"] for x in d["data"]] == [cp.normalize(t, lowercase=True) for t in texts]
    d = client.post("/v1/normalize", json={"input": texts[0], "form": "NFC"}).json()
    assert d["data"][0]["text"] == cp.normalize(texts[0], form="NFC")
    d = client.post("/v1/segment", json={"input": ["红色连衣裙 女 夏季", "硬い帽子をかぶった男"], "lang": "auto"})
    d = d.json()
    assert [x["segments"] for x in d["data"]] == [cp.segment("红色连衣裙 女 夏季"), cp.segment("硬い帽子をかぶった男")]


def test_expand_equals_the_library(client, pool):
    exp = cp.PromptExpander(pool, helpers.minilm())
    texts = ["red summer dress", "a cat sleeping"]
    d = client.post("/v1/expand", json={"input": texts, "top_k": 3, "mmr": 0.7}).json()
    for x, e in zip(d["data"], exp.expand_batch(texts, top_k=3, mmr=0.7)):
        assert x["text"] == e.text and x["tokens"] == e.tokens
        assert [a["phrase"] for a in x["added"]] == [p for p, _ in e.added]
        np.testing.assert_allclose([a["score"] for a in x["added"]], [s for _, s in e.added], atol=1e-5)
        assert [(q["phrase"], q["reason"]) for q in x["dropped"]] == [(p, r) for p, _, r in e.dropped]


def test_search_equals_the_library(client):
    enc = helpers.minilm()
    index = cp.FlatIPIndex(enc.dim)
    index.add(enc.encode(CORPUS))
    q = ["a man riding a horse", "people on a beach"]
    D, I = index.search(enc.encode(q), 5)
    d = client.post("/v1/search", json={"input": q, "k": 5}).json()
    for x, dr, ir in zip(d["data"], D, I):
        assert [n["id"] for n in x["neighbors"]] == ir.tolist()
        assert [n["text"] for n in x["neighbors"]] == [CORPUS[j] for j in ir]
        np.testing.assert_allclose([n["score"] for n in x["neighbors"]], dr, atol=1e-5)


def test_inspect(client, pool):
    tok = cp.ClipTokenizer()
    long = "a watercolor painting of " + ", ".join(f"tall tree number {i}" for i in range(25))
    d = client.post("/v1/inspect", json={"input": ["红色连衣裙 女 夏季", long], "top_k": 3, "k": 3}).json()
    zh, en = d["items"]
    assert zh["normalized"] == cp.normalize("红色连衣裙 女 夏季") and zh["segments"] == cp.segment(zh["normalized"])
    ids = [t["id"] for t in zh["clip"]["tokens"]]
    assert ids == [49406, *tok.encode(zh["normalized"]), 49407] and zh["clip"]["cut"] is None
    # byte-level BPE: the characters the ids complete, in order, spell the prompt
    assert "".join(t["text"] for t in zh["clip"]["tokens"][1:-1]).replace(" ", "") == "红色连衣裙女夏季"
    n = len(tok.encode(en["normalized"]))
    assert n > 75 and en["clip"]["n_tokens"] == n + 2 and en["clip"]["cut"] == 76 and en["clip"]["dropped"] == n - 75
    row = tok([en["normalized"]])[0]
    assert [t["id"] for t in en["clip"]["tokens"][:76]] == row[:76].tolist()  # what the encoder keeps
    chunks = cp.sd.chunk_prompt(en["normalized"], tok)
    assert [c["text"] for c in en["sd"]["chunks"]] == chunks and len(chunks) == 2
    assert en["sd"]["chunks"][1]["start"] == 1 + len(tok.encode(chunks[0]))
    exp = cp.PromptExpander(pool, helpers.minilm())
    e = exp.expand(zh["normalized"], top_k=3)
    assert [a["phrase"] for a in zh["expansion"]["added"]] == [p for p, _ in e.added]
    assert all(q["reason"] in ("score", "present", "redundant", "budget") for q in en["expansion"]["dropped"])
    assert len(zh["neighbors"]["pool"]) == 3 and len(zh["neighbors"]["index"]) == 3
    assert set(zh["times_ms"]) == {"normalize", "segment", "tokenize", "chunk", "encode", "expand", "search"}
    # the second look is answered by the cache
    d2 = client.post("/v1/inspect", json={"input": "红色连衣裙 女 夏季"}).json()
    assert d2["items"][0]["cache"] == "hit"


def test_inspect_batch_reports_bad_items_in_place(client):
    d = _post(client, "/v1/inspect", {"input": ["a red hat", "   ", 7, "\ud800", "a blue hat"]})
    assert d.status_code == 200
    items = d.json()["items"]
    assert "error" not in items[0] and "error" not in items[4]
    assert items[1]["error"]["type"] == "EmptyPromptError" and items[1]["error"]["item"] == 1
    assert items[2]["error"]["type"] == "InvalidArgumentError" and items[2]["input"] is None
    assert items[3]["error"]["type"] == "TokenizerError"


def test_sd_encode_needs_clip(client):
    _err(client.post("/v1/sd/encode", json={"prompt": "a cat"}), 400, "DependencyError")


def test_page_is_self_contained(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'sha256-" in csp and "unsafe" not in csp
    html = r.text
    import re

    assert not re.search(r"""(src|href|action)\s*=\s*["']?(https?:)?//""", html), "loads something from elsewhere"
    assert not re.search(r"\.innerHTML|\.outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function", html)
    assert "/v1/inspect" in html


def test_metrics_format(client):
    client.post("/v1/embeddings", json={"input": "metrics probe"})
    client.post("/v1/embeddings", json={"input": ""})
    m = _metrics(client)
    assert _metric(m, "clipprompt_requests_total", endpoint="/v1/embeddings", status="200") >= 1
    assert _metric(m, "clipprompt_requests_total", endpoint="/v1/embeddings", status="400") >= 1
    assert _metric(m, "clipprompt_request_duration_seconds_count", endpoint="/v1/embeddings") >= 2
    assert _metric(m, "clipprompt_request_duration_seconds_bucket", endpoint="/v1/embeddings", le="+Inf") >= 2
    assert _metric(m, "clipprompt_batch_size_count") >= 1 and _metric(m, "clipprompt_cache_entries") > 0


# -- bad input: a clear 4xx naming the error class and the item, and the service stays up ------------------------------


BAD_JSON = [
    # (what, body, status, error class, item, field)
    ("empty prompt", {"input": ""}, 400, "EmptyPromptError", 0, "input"),
    ("whitespace item", {"input": ["ok", "fine", " \t\n"]}, 400, "EmptyPromptError", 2, "input"),
    ("lone surrogate", {"input": ["ok", "\ud800abc"]}, 400, "TokenizerError", 1, "input"),
    ("number", {"input": 42}, 422, "InvalidArgumentError", None, "input"),
    ("object", {"input": {"a": 1}}, 422, "InvalidArgumentError", None, "input"),
    ("int in list", {"input": ["ok", 3]}, 422, "InvalidArgumentError", 1, "input"),
    ("null in list", {"input": ["ok", None]}, 422, "InvalidArgumentError", 1, "input"),
    ("token ids", {"input": [[1, 2, 3]]}, 422, "InvalidArgumentError", 0, "input"),
    ("missing input", {"model": "minilm"}, 422, "InvalidArgumentError", None, "input"),
    ("empty list", {"input": []}, 400, "InvalidArgumentError", None, "input"),
    ("list over the limit", {"input": ["x"] * 17}, 413, "InvalidArgumentError", None, "input"),
    ("item over the limit", {"input": ["ok", "y" * 601]}, 413, "InvalidArgumentError", 1, "input"),
    ("unknown model", {"input": "ok", "model": "text-embedding-3-large"}, 400, "InvalidArgumentError", None, "model"),
    ("model not a string", {"input": "ok", "model": 3}, 422, "InvalidArgumentError", None, "model"),
    ("bad encoding_format", {"input": "ok", "encoding_format": "int8"}, 400, "InvalidArgumentError", None,
     "encoding_format"),
    ("wrong dimensions", {"input": "ok", "dimensions": 128}, 400, "DimensionMismatchError", None, "dimensions"),
]


@pytest.mark.parametrize("what,obj,status,kind,item,field", BAD_JSON, ids=[b[0] for b in BAD_JSON])
def test_bad_embeddings_input(client, what, obj, status, kind, item, field):
    _err(_post(client, "/v1/embeddings", obj), status, kind, item, field)


BAD_PARAMS = [
    ("/v1/search", {"input": "a", "k": 0}, 400, "k"),
    ("/v1/search", {"input": "a", "k": 21}, 400, "k"),
    ("/v1/search", {"input": "a", "k": "5"}, 422, "k"),
    ("/v1/search", {"input": "a", "k": True}, 422, "k"),
    ("/v1/expand", {"input": "a", "top_k": -1}, 400, "top_k"),
    ("/v1/expand", {"input": "a", "mmr": 1.5}, 400, "mmr"),
    ("/v1/expand", {"input": "a", "min_score": "high"}, 422, "min_score"),
    ("/v1/expand", {"input": "a", "max_tokens": 1}, 400, "max_tokens"),
    ("/v1/normalize", {"input": "a", "form": "NFD"}, 400, "form"),
    ("/v1/normalize", {"input": "a", "lowercase": "yes"}, 422, "lowercase"),
    ("/v1/segment", {"input": "a", "lang": "xx"}, 400, "lang"),
    ("/v1/inspect", {"input": "a", "k": 1000}, 400, "k"),
    ("/v1/inspect", {"input": ["a"] * 17}, 413, "input"),
    ("/v1/inspect", {"input": "   "}, 400, "input"),
    ("/v1/inspect", {"input": 5}, 422, "input"),
]


@pytest.mark.parametrize("path,obj,status,field", BAD_PARAMS, ids=[f"{b[0]}-{b[3]}-{b[2]}" for b in BAD_PARAMS])
def test_bad_parameters(client, path, obj, status, field):
    e = _err(client.post(path, json=obj), status, "EmptyPromptError" if obj.get("input") == "   " else
             "InvalidArgumentError", field=field)
    assert field in e["message"]


def test_bad_bodies(client):
    h = {"content-type": "application/json"}
    e = _err(client.post("/v1/embeddings", content=b'{"input": "caf\xe9 \xff"}', headers=h), 400, "TokenizerError")
    assert "UTF-8" in e["message"] and "byte 14" in e["message"]
    _err(client.post("/v1/embeddings", content=b'{"input": "unterminated', headers=h), 400, "InvalidArgumentError")
    _err(client.post("/v1/embeddings", content=b"", headers=h), 400, "InvalidArgumentError")
    _err(client.post("/v1/embeddings", content=b'["a", "b"]', headers=h), 422, "InvalidArgumentError")
    _err(client.post("/v1/embeddings", content=b"[" * 5000 + b"]" * 5000, headers=h), 400, "InvalidArgumentError")
    # bodies over the limit: announced by Content-Length, and streamed without one
    big = json.dumps({"input": ["z" * 500] * 15}).encode()
    assert len(big) < 20000  # under the limit: accepted
    assert client.post("/v1/normalize", content=big, headers=h).status_code == 200
    huge = json.dumps({"input": "w" * 30000}).encode()
    _err(client.post("/v1/embeddings", content=huge, headers=h), 413, "InvalidArgumentError")

    def chunks():
        for i in range(0, len(huge), 4096):
            yield huge[i:i + 4096]

    _err(client.post("/v1/embeddings", content=chunks(), headers=h), 413, "InvalidArgumentError")


def test_unknown_routes_and_methods(client):
    _err(client.get("/v1/nothing"), 404, "NotFound")
    _err(client.get("/v1/embeddings"), 405, "MethodNotAllowed")


def test_raw_socket_garbage_does_not_hurt(svc, client):
    # half a request then a hang-up; a TLS hello; a malformed Content-Length (the HTTP layer answers 400 itself)
    for payload, expect in ((b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"inp", None),
                            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n", b"HTTP/1.1 400"),
                            (b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n{}",
                             b"HTTP/1.1 400")):
        with socket.create_connection((svc.host, svc.port), timeout=10) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            got = b""
            try:
                while chunk := s.recv(4096):
                    got += chunk
            except OSError:
                pass
        if expect is not None:
            assert got.startswith(expect), got[:200]
    assert client.get("/health").json()["status"] == "ok"


def test_bad_items_next_to_good_requests(client):
    """Good and bad requests at once: every good one answers with its vectors, every bad one a 4xx, never a 5xx."""
    enc = helpers.minilm()
    good = [f"good request {i}: a green bicycle" for i in range(12)]
    ref = enc.encode(good)
    bad = [{"input": ""}, {"input": ["x", 1]}, {"input": ["ok", "\udfff"]}, {"input": ["q"] * 40}]

    def call(j):
        if j % 2 == 0:
            r = client.post("/v1/embeddings", json={"input": good[j // 2]})
            return j, r.status_code, r.json()
        r = _post(client, "/v1/embeddings", bad[(j // 2) % len(bad)])
        return j, r.status_code, r.json()

    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        res = list(ex.map(call, range(24)))
    for j, status, d in res:
        if j % 2 == 0:
            assert status == 200, d
            np.testing.assert_allclose(d["data"][0]["embedding"], ref[j // 2], atol=1e-5)
        else:
            assert 400 <= status < 500, d
    assert client.get("/health").json()["status"] == "ok"


# -- the micro-batcher on its own: a failing batch isolates the bad item -----------------------------------------------


def test_batcher_isolates_a_failing_item():
    calls = []

    def encode(texts):
        calls.append(list(texts))
        if any("BAD" in t for t in texts):
            raise cp.TokenizerError("cannot encode a BAD text")
        return np.array([[len(t), 1.0] for t in texts], np.float32)

    async def main():
        b = serve.MicroBatcher(encode, max_batch=64, max_wait_s=0.05)
        b.start()
        reqs = [["a", "bb"], ["ccc", "BAD one", "dd"], ["eeeee"], ["a"]]
        res = await asyncio.gather(*(b.submit(r) for r in reqs), return_exceptions=True)
        await b.close()
        return res

    res = asyncio.run(asyncio.wait_for(main(), 60))
    np.testing.assert_array_equal(res[0][:, 0], [1, 2])
    assert isinstance(res[1], serve.ApiError) and res[1].item == 1 and res[1].kind == "TokenizerError"
    np.testing.assert_array_equal(res[2][:, 0], [5])
    np.testing.assert_array_equal(res[3][:, 0], [1])
    assert calls[0] == ["a", "bb", "ccc", "BAD one", "dd", "eeeee"]  # one merged call, "a" encoded once


def test_batcher_limits_and_drain():
    sizes = []

    def encode(texts):
        sizes.append(len(texts))
        time.sleep(0.01)
        return np.zeros((len(texts), 4), np.float32)

    async def main():
        b = serve.MicroBatcher(encode, max_batch=8, max_wait_s=0.02)
        b.start()
        tasks = [asyncio.ensure_future(b.submit([f"t{i}"])) for i in range(30)]
        big = asyncio.ensure_future(b.submit([f"big{i}" for i in range(20)]))  # over max_batch: goes alone
        await asyncio.sleep(0)
        await b.close()  # drains: every queued request is answered
        return [t.result().shape for t in tasks], big.result().shape

    shapes, big = asyncio.run(asyncio.wait_for(main(), 60))
    assert shapes == [(1, 4)] * 30 and big == (20, 4)
    assert max(s for s in sizes if s != 20) <= 8 and 20 in sizes and sum(sizes) == 50


def test_encoder_names_resolve_lazily(monkeypatch):
    monkeypatch.delattr(cp, "E5Encoder", raising=False)
    monkeypatch.delattr(cp, "USEEncoder", raising=False)
    with pytest.raises(cp.DependencyError, match="E5Encoder"):
        serve.load_encoder("e5")
    with pytest.raises(cp.DependencyError, match="USEEncoder"):
        serve.load_encoder("use")
    with pytest.raises(cp.InvalidArgumentError, match="unknown encoder"):
        serve.load_encoder("bert-large")
    with pytest.raises(cp.InvalidArgumentError, match="clip:PATH"):
        serve.load_encoder("clip")
    with pytest.raises(cp.InvalidArgumentError):
        serve.ServeConfig(max_batch=0).check()


def test_cli_refuses_a_bad_encoder_before_binding():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "clipprompt", "serve", "--port", str(serve.free_port()), "--encoder",
                        "clip:/nonexistent/dir"], check=False, capture_output=True, text=True, env=ENV, cwd=ROOT,
                       timeout=120)
    assert r.returncode == 2 and "Error" in r.stderr and "/nonexistent/dir" in r.stderr


# -- a CLIP service: /v1/sd/encode and CLIP embeddings (random-init tower) ---------------------------------------------


def test_clip_service_sd_encode(tmp_path):
    path = helpers.save_tiny_clip(tmp_path / "tinyclip")
    enc = cp.ClipTextEncoder.from_pretrained(path)
    tok = cp.ClipTokenizer()
    prompt = "a watercolor painting of a lighthouse, " + ", ".join(f"stormy sea wave {i}" for i in range(25))
    (tmp_path / "pool.txt").write_text("Lighthouses\nSeascapes\nWatercolor Paints\nCats\n", encoding="utf-8")
    with serve.ServiceProcess(["--encoder", f"clip:{path}", "--pool", tmp_path / "pool.txt"], env=ENV,
                              cwd=str(ROOT), timeout=240) as s, httpx.Client(base_url=s.url, timeout=120) as c:
        r = c.post("/v1/sd/encode", json={"prompt": prompt, "negative": "blurry", "encoding_format": "float"})
        assert r.status_code == 200, r.text
        d = r.json()
        cond, uncond = cp.sd.encode_pair(enc, cp.normalize(prompt), "blurry", -1, tokenizer=tok)
        n = len(cp.sd.chunk_prompt(cp.normalize(prompt), tok))
        assert n >= 2 and d["shape"] == list(cond.shape) == [1, 77 * n, 32] and d["chunks"] == n
        np.testing.assert_allclose(np.array(d["prompt_embeds"], np.float32), cond, atol=1e-4)
        np.testing.assert_allclose(np.array(d["negative_prompt_embeds"], np.float32), uncond, atol=1e-4)
        r = c.post("/v1/sd/encode", json={"prompt": "a cat", "layer": -2})
        d = r.json()
        got = np.frombuffer(base64.b64decode(d["prompt_embeds"]), "<f4").reshape(d["shape"])
        ref, _ = cp.sd.encode_pair(enc, "a cat", None, -2, tokenizer=tok)
        np.testing.assert_allclose(got, ref, atol=1e-4)
        _err(c.post("/v1/sd/encode", json={"prompt": ""}), 400, "EmptyPromptError", field="prompt")
        _err(c.post("/v1/sd/encode", json={"prompt": "a", "layer": 9}), 400, "InvalidArgumentError", field="layer")
        _err(c.post("/v1/sd/encode", json={"prompt": "a", "negative": 3}), 422, "InvalidArgumentError")
        e = c.post("/v1/embeddings", json={"input": ["a cat", "a dog"], "model": "clip"}).json()
        np.testing.assert_allclose([x["embedding"] for x in e["data"]], enc.encode(["a cat", "a dog"]), atol=1e-5)
        assert e["usage"]["prompt_tokens"] == 2 * 4
    assert s.returncode == 0, s.output


# -- shutdown drains the requests in flight ----------------------------------------------------------------------------


def test_sigterm_drains_in_flight_requests(files):
    texts = [" ".join(f"word{i}x{j}" for j in range(120)) for i in range(16)]  # ~16 x 256 tokens: a slow encode
    s = serve.ServiceProcess(["--pool", files / "pool.txt", "--max-chars", "5000"], env=ENV, cwd=str(ROOT),
                             timeout=240).start()
    out = {}

    def call():
        with httpx.Client(base_url=s.url, timeout=120) as c:
            r = c.post("/v1/embeddings", json={"input": texts})
            out["status"], out["n"] = r.status_code, len(r.json()["data"])
            out["done"] = time.monotonic()

    th = threading.Thread(target=call)
    th.start()
    time.sleep(0.3)  # the request is in flight (the encode takes seconds on this machine)
    t0 = time.monotonic()
    rc = s.stop()
    th.join(120)
    assert not th.is_alive()
    done = out.pop("done", None)
    assert out == {"status": 200, "n": 16}, (out, s.output)
    assert done > t0, "the request finished before SIGTERM: it was not in flight"
    assert rc == 0, s.output
    assert time.monotonic() - t0 < 120
