"""The HTTP service under load: micro-batched vs unbatched throughput, latency at half of peak, RSS over a long run,
and the prompt cache's hit rate over a repeated workload.

    python benchmarks/bench_service.py [--clients 64] [--seconds 20] [--rounds 2] [--soak 100000]
                                       [--soak-seconds 600] [--json OUT.json] [--plot-dir benchmarks/figures]

Two services run side by side on loopback (clipprompt.serve.ServiceProcess, bundled MiniLM, cache off so every request
is encoded): "batched" (--max-batch 64 --max-wait-ms 2) and "unbatched" (--max-batch 1). N clients (asyncio, one
keep-alive HTTP/1.1 connection each, closed loop: the next request leaves when the answer arrives) post one distinct
COCO caption per request to /v1/embeddings; the two services are measured in alternating rounds of --seconds each
(same load on the machine for both) and the median round is reported. Each round is bounded by time and count.

Then: open-loop load on the batched service at half of its measured peak (requests leave on a fixed schedule, so slow
answers do not slow the sender), p50/p95/p99; a soak on a third service with the cache on (Zipf-repeated prompts
over 4,000 COCO captions; --soak requests or --soak-seconds, whichever ends first) sampling the server's RSS and
the cache hit rate from /metrics. Errors are counted everywhere (any non-200 or transport error) and must be 0.
"""
import argparse
import asyncio
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
from _bench import ROOT, captions, cpu_name, utc_now

import clipprompt as cp
from clipprompt.serve import ServiceProcess


def rss_mib(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def _pct(xs, q):
    return float(np.percentile(np.asarray(xs), q)) * 1e3 if xs else float("nan")


class _Conn:
    """One keep-alive HTTP/1.1 connection on asyncio streams: POST JSON, read status + Content-Length body.

    The load generator must cost far less than the server or it measures itself: httpx.AsyncClient with 64
    connections spent 5.6 ms of client CPU per request here (0.5 ms in the server); this costs 0.06 ms.
    """

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.r = self.w = None

    async def post(self, path, obj):
        if self.w is None:
            self.r, self.w = await asyncio.open_connection(self.host, self.port)
        body = json.dumps(obj).encode()
        self.w.write(b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                     % (path.encode(), self.host.encode(), len(body)) + body)
        try:
            head = await self.r.readuntil(b"\r\n\r\n")
            i = head.lower().find(b"content-length:")
            data = await self.r.readexactly(int(head[i + 15:head.find(b"\r\n", i)]))
        except (OSError, asyncio.IncompleteReadError, ValueError):
            self.close()
            raise
        return int(head[9:12]), data

    def close(self):
        if self.w is not None:
            self.w.close()
        self.r = self.w = None


async def _post(conn, text):
    """-> latency in seconds, or None on any error (non-200, transport)."""
    t0 = time.perf_counter()
    try:
        status, _ = await conn.post("/v1/embeddings", {"input": text})
    except (OSError, asyncio.IncompleteReadError, ValueError):
        return None
    return time.perf_counter() - t0 if status == 200 else None


async def closed_loop(svc, texts, clients, seconds, max_requests):
    """N clients, each sending its next request when the previous answer arrives. -> stats dict."""
    lat, errors, sent = [], 0, 0
    t_end = time.perf_counter() + seconds

    async def client():
        nonlocal errors, sent
        conn = _Conn(svc.host, svc.port)
        while time.perf_counter() < t_end and sent < max_requests:
            i = sent
            sent += 1
            dt = await _post(conn, texts[i % len(texts)])
            if dt is None:
                errors += 1
            else:
                lat.append(dt)
        conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - t0
    return dict(requests=sent, ok=len(lat), errors=errors, seconds=wall, rps=len(lat) / wall,
                p50_ms=_pct(lat, 50), p95_ms=_pct(lat, 95), p99_ms=_pct(lat, 99))


async def open_loop(svc, texts, rate, seconds, clients):
    """Requests leave on a fixed schedule (one every 1/rate s) whatever the answers do, over a pool of
    ``clients`` connections (a request waits for a free connection: that wait counts in its latency)."""
    lat, errors = [], 0
    n = max(1, int(rate * seconds))
    free = asyncio.Queue()
    for _ in range(clients):
        free.put_nowait(_Conn(svc.host, svc.port))
    t_start = time.perf_counter()

    async def one(i):
        nonlocal errors
        delay = t_start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        t0 = time.perf_counter()
        conn = await free.get()
        dt = await _post(conn, texts[i % len(texts)])
        free.put_nowait(conn)
        if dt is None:
            errors += 1
        else:
            lat.append(time.perf_counter() - t0)

    await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - t_start
    while not free.empty():
        free.get_nowait().close()
    return dict(requests=n, ok=len(lat), errors=errors, seconds=wall, rps=len(lat) / wall, target_rps=rate,
                p50_ms=_pct(lat, 50), p95_ms=_pct(lat, 95), p99_ms=_pct(lat, 99))


async def soak(svc, texts, clients, total, seconds, samples=40):
    """Closed loop over Zipf-repeated prompts with the cache on; RSS and hit rate sampled ``samples`` times."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    rng = np.random.default_rng(0)
    ranks = np.arange(1, len(texts) + 1, dtype=np.float64)
    p = 1.0 / ranks**1.1
    order = rng.choice(len(texts), size=total, p=p / p.sum())
    series, errors, done = [], 0, 0
    t_end = time.perf_counter() + seconds
    every = max(1, total // samples)

    async with httpx.AsyncClient(base_url=svc.url, timeout=60) as http:

        async def sample():
            m = {}
            for fam in text_string_to_metric_families((await http.get("/metrics")).text):
                for s in fam.samples:
                    m[s.name] = s.value
            hits, misses = m.get("clipprompt_cache_hits_total", 0), m.get("clipprompt_cache_misses_total", 0)
            series.append(dict(requests=done, rss_mib=rss_mib(svc.pid()), hits=hits, misses=misses,
                               t=time.perf_counter()))

        await sample()
        nxt = 0

        async def client():
            nonlocal errors, done, nxt
            conn = _Conn(svc.host, svc.port)
            while nxt < total and time.perf_counter() < t_end:
                i = nxt
                nxt += 1
                errors += await _post(conn, texts[order[i]]) is None
                done += 1
                if done % every == 0:
                    await sample()
            conn.close()

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        wall = time.perf_counter() - t0
        await sample()
    for s in series:  # hit rate of the requests between this sample and the one before
        s["t"] -= series[0]["t"]
    for a, b in itertools.pairwise(series):
        d = (b["hits"] - a["hits"]) + (b["misses"] - a["misses"])
        b["window_hit_rate"] = (b["hits"] - a["hits"]) / d if d else None
    return dict(requests=done, errors=errors, seconds=wall, rps=done / wall, distinct=len(texts),
                rss_start_mib=series[0]["rss_mib"], rss_end_mib=series[-1]["rss_mib"],
                rss_after_first_10pct_mib=series[min(len(series) - 1, max(1, len(series) // 10))]["rss_mib"],
                series=series)


def encoder_ceiling(texts, threads, reps=3):
    """What batching can gain in the encoder alone (this process, same threads): 64 texts as 64 calls of one vs one
    call of 64, interleaved ``reps`` times; medians. -> dict."""
    enc = cp.MiniLMEncoder.from_pretrained()
    cp.set_num_threads(threads)
    enc.encode(texts[:8])
    one, batch = [], []
    for r in range(reps):
        chunk = texts[64 * r:64 * (r + 1)]
        t0 = time.perf_counter()
        for t in chunk:
            enc.encode([t])
        one.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        enc.encode(chunk, batch_size=64)
        batch.append(time.perf_counter() - t0)
    cp.set_num_threads(0)
    t1, t64 = statistics.median(one), statistics.median(batch)
    return dict(b1_texts_per_s=64 / t1, b64_texts_per_s=64 / t64, ratio=t1 / t64)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of one throughput round")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per service")
    ap.add_argument("--max-requests", type=int, default=200_000, help="cap per round")
    ap.add_argument("--half-seconds", type=float, default=20.0, help="length of the half-peak open-loop run")
    ap.add_argument("--soak", type=int, default=100_000, help="requests in the soak (0: skip)")
    ap.add_argument("--soak-seconds", type=float, default=900.0)
    ap.add_argument("--soak-clients", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="C threads in each service (1: the other core runs the "
                    "event loop and the load generator)")
    ap.add_argument("--json", metavar="OUT", help="write the results here")
    ap.add_argument("--plot-dir", metavar="DIR", help="write service_*.png figures here")
    args = ap.parse_args(argv)

    caps = captions()
    texts = [f"{c} ({i})" for i, c in enumerate(caps)]  # distinct: every request is a new prompt
    tmp = tempfile.mkdtemp(prefix="cp_bench_service_")
    pool = os.path.join(tmp, "pool.txt")
    with open(pool, "w", encoding="utf-8") as f:  # the expander is not exercised here: a tiny pool, quick start
        f.write("Dresses\nHats\nUmbrellas\n")
    env = dict(os.environ, PYTHONPATH=ROOT)
    common = ["--pool", pool, "--log-level", "error"] + (["--threads", str(args.threads)] if args.threads else [])
    header = dict(command=" ".join([os.path.basename(sys.executable), *sys.argv]), date=utc_now(), cpu=cpu_name(),
                  cpus=os.cpu_count(), threads=args.threads or cp.get_num_threads(), python=platform.python_version(),
                  clipprompt=cp.__version__, isa=cp.build_info().get("isa", cp.build_info().get("blas")),
                  encoder="MiniLM-L6 (bundled), float32, CPU", clients=args.clients, soak_clients=args.soak_clients,
                  load_avg_start=[round(x, 2) for x in os.getloadavg()])
    out = dict(header=header)
    out["encoder_ceiling"] = encoder_ceiling(caps[5000:], args.threads)
    print(f"  encoder alone: B=1 {out['encoder_ceiling']['b1_texts_per_s']:.1f} texts/s, B=64 "
          f"{out['encoder_ceiling']['b64_texts_per_s']:.1f} texts/s ({out['encoder_ceiling']['ratio']:.2f}x)",
          file=sys.stderr)

    batched = ServiceProcess([*common, "--cache-bytes", "0", "--max-batch", "64", "--max-wait-ms", "2"], env=env,
                             cwd=ROOT).start()
    unbatched = ServiceProcess([*common, "--cache-bytes", "0", "--max-batch", "1", "--max-wait-ms", "0"], env=env,
                               cwd=ROOT).start()
    try:
        rss0 = {"batched": rss_mib(batched.pid()), "unbatched": rss_mib(unbatched.pid())}
        rounds = {"batched": [], "unbatched": []}
        offset = 0
        # warm both (first requests pay for lazy loads)
        for s in (batched, unbatched):
            asyncio.run(closed_loop(s, texts[-200:], 8, 3.0, 200))
        for r in range(args.rounds):
            for name, s in (("batched", batched), ("unbatched", unbatched)) if r % 2 == 0 else \
                    (("unbatched", unbatched), ("batched", batched)):
                res = asyncio.run(closed_loop(s, texts[offset:], args.clients, args.seconds, args.max_requests))
                offset = (offset + res["requests"]) % (len(texts) // 2)
                res["round"] = r
                rounds[name].append(res)
                print(f"  round {r} {name:9}: {res['rps']:7.1f} req/s  p50 {res['p50_ms']:.1f} ms  "
                      f"p99 {res['p99_ms']:.1f} ms  errors {res['errors']}", file=sys.stderr)
        rss1 = {"batched": rss_mib(batched.pid()), "unbatched": rss_mib(unbatched.pid())}
        summary = {}
        for name in rounds:
            med = sorted(rounds[name], key=lambda x: x["rps"])[len(rounds[name]) // 2]
            summary[name] = dict(med, rss_before_mib=rss0[name], rss_after_mib=rss1[name],
                                 errors=sum(x["errors"] for x in rounds[name]))
        summary["speedup"] = summary["batched"]["rps"] / summary["unbatched"]["rps"]
        out["closed_loop"] = summary
        out["rounds"] = rounds
        # half of peak, open loop, on the batched service
        peak = summary["batched"]["rps"]
        half = asyncio.run(open_loop(batched, texts[len(texts) // 2:], peak / 2, args.half_seconds,
                                     args.clients))
        half["p99_over_p50"] = half["p99_ms"] / half["p50_ms"]
        out["half_peak"] = half
        print(f"  half peak: {half['rps']:.1f} req/s (target {peak / 2:.1f})  p50 {half['p50_ms']:.1f} ms  "
              f"p99 {half['p99_ms']:.1f} ms  errors {half['errors']}", file=sys.stderr)
    finally:
        batched.stop()
        unbatched.stop()

    if args.soak:
        s = ServiceProcess([*common, "--max-batch", "64", "--max-wait-ms", "2"], env=env, cwd=ROOT).start()
        try:
            out["soak"] = asyncio.run(soak(s, caps[:4000], args.soak_clients, args.soak, args.soak_seconds))
        finally:
            s.stop()
        k = out["soak"]
        print(f"  soak: {k['requests']} requests in {k['seconds']:.0f} s ({k['rps']:.0f} req/s), RSS "
              f"{k['rss_start_mib']:.1f} -> {k['rss_after_first_10pct_mib']:.1f} (10%) -> {k['rss_end_mib']:.1f} MiB, "
              f"errors {k['errors']}", file=sys.stderr)
    header["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    print_table(out)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)
    if args.plot_dir:
        from _plots import plot_service

        for p in plot_service(out, args.plot_dir):
            print(f"wrote {p}", file=sys.stderr)
    return 0


def print_table(out) -> None:
    h = out["header"]
    print(" | ".join(f"{k}={v}" for k, v in h.items()))
    print()
    print("| service | clients | load | requests (errors) | throughput req/s | p50 ms | p95 ms | p99 ms | "
          "RSS before → after MiB | × unbatched |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    cl = out["closed_loop"]
    for name in ("batched", "unbatched"):
        r = cl[name]
        label = "micro-batched (64, 2 ms)" if name == "batched" else "unbatched (max-batch 1)"
        print(f"| {label} | {h['clients']} | closed loop, median of {len(out['rounds'][name])} rounds | "
              f"{r['requests']} ({r['errors']}) | {r['rps']:.1f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
              f"{r['p99_ms']:.1f} | {r['rss_before_mib']:.0f} → {r['rss_after_mib']:.0f} | "
              f"{r['rps'] / cl['unbatched']['rps']:.2f} |")
    hp = out["half_peak"]
    print(f"| micro-batched (64, 2 ms) | {h['clients']} | open loop at half of peak ({hp['target_rps']:.0f}/s) | "
          f"{hp['requests']} ({hp['errors']}) | {hp['rps']:.1f} | {hp['p50_ms']:.1f} | {hp['p95_ms']:.1f} | "
          f"{hp['p99_ms']:.1f} | | p99/p50 = {hp['p99_over_p50']:.2f} |")
    ce = out["encoder_ceiling"]
    print(f"| encoder alone, in process (no HTTP): 64 calls of 1 vs 1 call of 64 | | | | "
          f"{ce['b1_texts_per_s']:.1f} → {ce['b64_texts_per_s']:.1f} texts/s | | | | | {ce['ratio']:.2f} (ceiling) |")
    if "soak" in out:
        k = out["soak"]
        last = [s for s in k["series"] if s.get("window_hit_rate") is not None]
        hr = last[-1]["window_hit_rate"] if last else float("nan")
        print(f"| soak, cache on (Zipf over {k['distinct']} prompts) | {h['soak_clients']} | closed loop | "
              f"{k['requests']} ({k['errors']}) | "
              f"{k['rps']:.1f} | | | | {k['rss_start_mib']:.0f} → {k['rss_after_first_10pct_mib']:.0f} (10%) → "
              f"{k['rss_end_mib']:.0f} | hit rate at the end {hr:.2f} |")


if __name__ == "__main__":
    raise SystemExit(main())
