"""Figures for benchmarks/RESULTS.md (matplotlib, Agg backend, PNG): each function takes a benchmark script's JSON
output and writes its figure(s) next to the tables; returns the paths written.

    plot_strategies(eval_strategies --json output, path)   R@1/5/10 per strategy
    plot_encode(bench_encode --json output, path)           prompts/s per batch size, per model and engine
    plot_service(bench_service --json output, directory)    throughput/latency batched vs unbatched; soak RSS and
                                                            cache hit rate over a repeated workload
"""
from __future__ import annotations

import os


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "font.size": 9, "axes.grid": True, "grid.alpha": 0.3,
                         "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _footer(fig, header: dict, keys) -> None:
    text = " · ".join(f"{k} {str(header[k]).split(' (')[0][:60]}" for k in keys
                      if k in header and header[k] not in (None, ""))
    fig.text(0.01, 0.005, text, fontsize=6.5, color="#666", ha="left", va="bottom")


def plot_strategies(data: dict, path: str) -> list[str]:
    """Grouped bars: Recall@1/5/10 (%) per strategy, from ``eval_strategies.py --json``."""
    plt = _plt()
    res = data["results"]
    names = [r["strategy"] for r in res]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(names) + 2), 3.6))
    width = 0.26
    for j, (key, label) in enumerate((("r1", "R@1"), ("r5", "R@5"), ("r10", "R@10"))):
        xs = [i + (j - 1) * width for i in range(len(names))]
        vals = [r[key] * 100 for r in res]
        bars = ax.bar(xs, vals, width, label=label)
        if key == "r1":
            ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylabel("recall (%)")
    ax.set_ylim(0, 118)
    h = data.get("header", {})
    ax.set_title(f"Prompt strategies: {h.get('metric', 'retrieval')}\n{h.get('split', '?')}, "
                 f"{h.get('images', '?')} images", fontsize=9)
    ax.legend(ncol=3, fontsize=8, loc="upper center")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    _footer(fig, h, ("encoder", "date", "pool", "expand"))
    fig.savefig(path)
    plt.close(fig)
    return [path]


def plot_encode(data: dict, path: str) -> list[str]:
    """Prompts/s against batch size (log-log), one panel per model, one line per engine, from
    ``bench_encode.py --json``."""
    plt = _plt()
    rows = data["rows"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 3.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        for engine in dict.fromkeys(r["engine"] for r in rows if r["model"] == model):
            pts = sorted((r["batch"], r["prompts_per_s"]) for r in rows if r["model"] == model and
                         r["engine"] == engine)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=engine,
                    linewidth=2.2 if engine == "clipprompt" else 1.3)
        ax.set_xscale("log", base=2)
        sizes = sorted({r["batch"] for r in rows if r["model"] == model})
        ax.set_xticks(sizes, [str(b) for b in sizes])
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel("prompts / s")
        ax.set_title(f"{model}, float32, CPU")
        ax.legend(fontsize=8)
    h = data.get("header", {})
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    _footer(fig, h, ("date", "machine", "threads", "blas", "torch", "onnxruntime", "load_avg"))
    fig.savefig(path)
    plt.close(fig)
    return [path]


def plot_service(data: dict, directory: str) -> list[str]:
    """service_throughput.png (req/s and p50/p99, batched vs unbatched vs half peak) and, with a soak,
    service_soak.png (server RSS and the cache hit rate per window over the repeated workload)."""
    plt = _plt()
    os.makedirs(directory, exist_ok=True)
    out = []
    h = data["header"]
    cl, hp = data["closed_loop"], data["half_peak"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8.6, 3.3))
    labels = ["micro-batched", "unbatched"]
    rps = [cl["batched"]["rps"], cl["unbatched"]["rps"]]
    bars = a1.bar(labels, rps, color=["#2f6fde", "#9aa5b8"])
    a1.bar_label(bars, fmt="%.0f", fontsize=8)
    a1.set_ylabel("requests / s")
    a1.set_title(f"{h['clients']} clients, closed loop ({cl['speedup']:.1f}×)")
    groups = ["batched\n(peak)", "unbatched\n(peak)", "batched\n(half peak)"]
    rows = [cl["batched"], cl["unbatched"], hp]
    x = range(len(groups))
    a2.bar([i - 0.2 for i in x], [r["p50_ms"] for r in rows], 0.4, label="p50")
    a2.bar([i + 0.2 for i in x], [r["p99_ms"] for r in rows], 0.4, label="p99")
    a2.set_xticks(list(x), groups)
    a2.set_yscale("log")
    a2.set_ylabel("latency (ms)")
    a2.set_title("latency")
    a2.legend(fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    _footer(fig, h, ("date", "cpu", "threads", "encoder"))
    p = os.path.join(directory, "service_throughput.png")
    fig.savefig(p)
    plt.close(fig)
    out.append(p)
    if "soak" in data:
        k = data["soak"]
        s = k["series"]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(8.6, 3.3))
        a1.plot([x["requests"] for x in s], [x["rss_mib"] for x in s], marker=".")
        a1.set_xlabel("requests served")
        a1.set_ylabel("server RSS (MiB)")
        lo = min(x["rss_mib"] for x in s)
        a1.set_ylim(lo * 0.9, max(x["rss_mib"] for x in s) * 1.1)
        a1.set_title(f"RSS over {k['requests']} requests")
        w = [x for x in s if x.get("window_hit_rate") is not None]
        a2.plot([x["requests"] for x in w], [x["window_hit_rate"] * 100 for x in w], marker=".", label="per window")
        cum = [x["hits"] / (x["hits"] + x["misses"]) * 100 for x in w]
        a2.plot([x["requests"] for x in w], cum, linestyle="--", label="cumulative")
        a2.set_ylim(0, 100)
        a2.set_xlabel("requests served")
        a2.set_ylabel("prompt-cache hit rate (%)")
        a2.set_title(f"Zipf-repeated workload over {k['distinct']} prompts")
        a2.legend(fontsize=8)
        fig.tight_layout(rect=(0, 0.05, 1, 1))
        _footer(fig, h, ("date", "cpu", "threads", "encoder", "soak_clients"))
        p = os.path.join(directory, "service_soak.png")
        fig.savefig(p)
        plt.close(fig)
        out.append(p)
    return out


def main(argv=None) -> int:
    """python benchmarks/_plots.py {strategies,encode,service} RESULT.json OUT (a PNG path, or a folder for service)."""
    import argparse
    import json

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("kind", choices=["strategies", "encode", "service"])
    ap.add_argument("json")
    ap.add_argument("out")
    a = ap.parse_args(argv)
    with open(a.json, encoding="utf-8") as f:
        data = json.load(f)
    fn = {"strategies": plot_strategies, "encode": plot_encode, "service": plot_service}[a.kind]
    for p in fn(data, a.out):
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
