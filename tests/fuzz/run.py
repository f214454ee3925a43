"""Build, seed and run the libFuzzer targets (tests/fuzz/fuzz_*.c); exit status 1 on any finding.

    python tests/fuzz/run.py                       every target, 20 s each (the CI budget: tests/test_fuzz_short.py)
    python tests/fuzz/run.py --seconds 1800 --jobs 2 fuzz_store     the long form: one target, 30 min, 2 workers
    python tests/fuzz/run.py --regressions         only replay tests/fuzz/regressions/<target>/* (no fuzzing)

Corpora grow in build/fuzz/corpus/<target> (kept between runs, so long runs resume); crashes, leaks, timeouts and
out-of-memory inputs land in build/fuzz/findings/<target>/ and are listed at the end. A finding, once fixed, is
copied to tests/fuzz/regressions/<target>/ (with a name saying what it was) so every later run replays it.
"""
import argparse
import glob
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import seeds as fuzz_seeds  # noqa: E402

import build as fuzz_build  # noqa: E402

ROOT = fuzz_build.ROOT
# per-input limits: a single input may take 10 s and one allocation 1 GiB (process RSS 4 GiB: the segmenter target
# with ASan peaked at 2.7 GiB inside the full test run); a target's max input size
LIMITS = ["-timeout=10", "-rss_limit_mb=4096", "-malloc_limit_mb=1024", "-max_len=262144", "-print_final_stats=1"]
SAN_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1:allocator_may_return_null=1:detect_stack_use_after_return=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
}


def prepare(out, targets=None):
    exes = fuzz_build.build(out, targets)
    env = dict(os.environ)
    env.update(fuzz_seeds.write_data(out))
    env.update(SAN_ENV)
    seeds = fuzz_seeds.write_seeds(out, env)
    return exes, env, seeds


def replay(name, exe, env):
    """Run a target over its committed regression inputs; returns (ok, output)."""
    files = sorted(glob.glob(os.path.join(HERE, "regressions", name, "*")))
    if not files:
        return True, "no regression inputs"
    r = subprocess.run([exe, *LIMITS, *files], env=env, check=False, capture_output=True, text=True, timeout=600)
    return r.returncode == 0, (r.stdout + r.stderr)[-6000:]


def fuzz(name, exe, env, seeds, out, seconds, jobs=1, _retry=True):
    corpus = os.path.join(out, "corpus", name)
    findings = os.path.join(out, "findings", name)
    os.makedirs(corpus, exist_ok=True)
    os.makedirs(findings, exist_ok=True)
    before = set(os.listdir(findings))
    cmd = [exe, *LIMITS, f"-max_total_time={int(seconds)}", "-artifact_prefix=" + findings + "/"]
    if jobs > 1:
        cmd += [f"-fork={int(jobs)}", "-ignore_crashes=1", "-ignore_timeouts=1", "-ignore_ooms=1"]
    seed_dir = os.path.join(seeds, name)
    cmd += [corpus] + ([seed_dir] if os.path.isdir(seed_dir) else [])
    t0 = time.time()
    r = subprocess.run(cmd, env=env, check=False, capture_output=True, text=True, cwd=out, timeout=seconds + 300)
    new = sorted(set(os.listdir(findings)) - before)
    log = r.stdout + r.stderr
    # Out-of-memory and timeout artifacts depend on the machine as well as the input (a loaded CI box, the RSS
    # sampler firing during start-up with an empty unit): they count only if the input reproduces them when run
    # again on its own. Crashes, sanitizer reports and leaks always count.
    unconfirmed = []
    for f in list(new):
        if f.startswith(("oom-", "timeout-", "slow-unit-")):
            rr = subprocess.run([exe, *LIMITS, os.path.join(findings, f)], env=env, check=False, capture_output=True,
                                text=True, timeout=600)
            if rr.returncode == 0:
                new.remove(f)
                unconfirmed.append(f)
                log += f"\n[run.py] {f} did not reproduce when replayed alone: not counted\n"
    with open(os.path.join(out, name + ".log"), "w") as f:
        f.write(log)
    stats = {}
    for line in log.splitlines():
        if line.startswith("stat::"):
            k, _, v = line[6:].partition(":")
            stats[k.strip()] = v.strip()
    rc = r.returncode
    if rc != 0 and not new and unconfirmed:
        rc = 0  # the only failure libFuzzer reported was one of the non-reproducible resource artifacts above
        if _retry:  # libFuzzer stopped at that artifact: fuzz the time again, once
            again = fuzz(name, exe, env, seeds, out, seconds, jobs, _retry=False)
            again["unconfirmed"] = unconfirmed + again["unconfirmed"]
            return again
    return {"target": name, "rc": rc, "seconds": round(time.time() - t0, 1), "new_findings": new,
            "findings_dir": findings, "runs": stats.get("number_of_executed_units", "?"),
            "corpus": len(os.listdir(corpus)), "unconfirmed": unconfirmed, "tail": log[-6000:]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=20, help="fuzzing time per target")
    ap.add_argument("--jobs", type=int, default=1, help="libFuzzer -fork workers per target")
    ap.add_argument("--out", default=os.path.join(ROOT, "build", "fuzz"))
    ap.add_argument("--regressions", action="store_true", help="only replay the committed regression inputs")
    ap.add_argument("targets", nargs="*")
    a = ap.parse_args(argv)
    exes, env, seeds = prepare(a.out, a.targets or None)
    bad = 0
    for name, exe in sorted(exes.items()):
        ok, log = replay(name, exe, env)
        print(f"{name:<16s} regressions {'ok' if ok else 'FAILED'}")
        if not ok:
            print(log)
            bad += 1
        if a.regressions:
            continue
        res = fuzz(name, exe, env, seeds, a.out, a.seconds, a.jobs)
        status = "ok" if res["rc"] == 0 and not res["new_findings"] else "FINDINGS"
        found = " ".join(os.path.join(res["findings_dir"], f) for f in res["new_findings"])
        print(f"{name:<16s} {status}  {res['seconds']}s  runs {res['runs']}  corpus {int(res['corpus'])}  "
              f"rc {int(res['rc'])}  {found}")
        if status != "ok":
            print(res["tail"])
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
