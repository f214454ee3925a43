"""Builds the libFuzzer targets of tests/fuzz/fuzz_*.c with clang (libFuzzer + ASan + UBSan).

The C core (the layers csrc/base, text, model and store: no Python binding, no device layer) is compiled once into
build/fuzz/obj/ (objects are rebuilt only when a source or any header is newer) and archived into libcp_fuzz.a;
every target links only the objects it needs. OpenMP pragmas are ignored (clang-14 on Debian has no libomp): the
fuzzers run the serial paths, one input at a time.

    python tests/fuzz/build.py [--out build/fuzz] [target ...]      prints the built binaries' paths
"""
import argparse
import concurrent.futures
import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.join(ROOT, "tests", "fuzz")
SAN = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer"]
# clang-14 does not know __builtin_cpu_supports("f16c"): the fuzz build takes the portable paths
CFLAGS = ["-std=c11", "-g", "-O1", "-D__builtin_cpu_supports(x)=0", "-DCP_OPENBLAS=1", "-DCP_FUZZ=1",
          "-Wno-unknown-pragmas", "-Wno-unused-command-line-argument", "-I" + os.path.join(ROOT, "csrc"),
          "-I/usr/include/x86_64-linux-gnu/openblas-pthread"]
LIBS = ["-lutf8proc", "-lopenblas", "-lpthread", "-ldl", "-lm"]
# The layers that join the fuzz build (selected by folder: csrc/device and csrc/py never do).
CORE_LAYERS = ("base", "text", "model", "store")

# clang-14 has no libomp here: a serial stand-in for the few OpenMP calls and for <omp.h> itself.
OMP_SHIM = """#ifndef CP_FUZZ_OMP_SHIM_H
#define CP_FUZZ_OMP_SHIM_H
static inline int omp_get_max_threads(void) { return 1; }
static inline int omp_get_num_threads(void) { return 1; }
static inline int omp_get_thread_num(void) { return 0; }
static inline int omp_get_num_procs(void) { return 1; }
static inline void omp_set_num_threads(int n) { (void)n; }
static inline int omp_in_parallel(void) { return 0; }
#endif
"""


def clang():
    for c in ("clang-14", "clang"):
        p = shutil.which(c)
        if p:
            return p
    sys.exit("clang not found: `apt-get install clang libclang-rt-14-dev` (bash .ci/install.sh --test does)")


def core_sources():
    return [p for layer in CORE_LAYERS for p in sorted(glob.glob(os.path.join(ROOT, "csrc", layer, "*.c")))]


def core_has(name):
    """Is the core source file `name` (e.g. "cp_bpe.c") in some layer folder of this tree?"""
    return bool(glob.glob(os.path.join(ROOT, "csrc", "*", name)))


def targets():
    """name -> harness path, for every harness whose part of the core is present in this tree."""
    out = {}
    for h in sorted(glob.glob(os.path.join(HERE, "fuzz_*.c"))):
        needs = []
        with open(h) as f:
            for line in f:
                if line.startswith("// needs:"):
                    needs = line.split(":", 1)[1].split()
                    break
        if all(core_has(n) for n in needs):
            out[os.path.basename(h)[:-2]] = h
    return out


def _newer(dst, srcs):
    if not os.path.exists(dst):
        return True
    t = os.path.getmtime(dst)
    return any(os.path.getmtime(s) > t for s in srcs)


def build(out, names=None, verbose=False):
    cc = clang()
    obj = os.path.join(out, "obj")
    shim = os.path.join(out, "shim")
    os.makedirs(obj, exist_ok=True)
    os.makedirs(shim, exist_ok=True)
    shim_h = os.path.join(shim, "omp.h")
    if not os.path.exists(shim_h) or Path(shim_h).read_text() != OMP_SHIM:
        with open(shim_h, "w") as f:
            f.write(OMP_SHIM)
    headers = glob.glob(os.path.join(ROOT, "csrc", "*", "*.h")) + glob.glob(os.path.join(ROOT, "csrc", "*", "*.inc"))
    flags = [*CFLAGS, "-I" + shim, *SAN, "-fsanitize=fuzzer-no-link"]

    def compile_one(src):
        o = os.path.join(obj, os.path.basename(src)[:-2] + ".o")
        if _newer(o, [src, *headers, __file__]):
            cmd = [cc, "-c", src, "-o", o, *flags]
            if verbose:
                print(" ".join(cmd))
            r = subprocess.run(cmd, check=False, capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"compile failed: {' '.join(cmd)}\n{r.stderr[-4000:]}")
        return o

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as ex:
        objs = list(ex.map(compile_one, core_sources()))
    lib = os.path.join(out, "libcp_fuzz.a")
    if _newer(lib, objs) or len(objs) != _count_members(lib):
        if os.path.exists(lib):
            os.remove(lib)
        subprocess.check_call(["ar", "rcs", lib, *objs])
    built = {}
    todo = targets()
    if names:
        missing = [n for n in names if n not in todo]
        if missing:
            raise SystemExit(f"unknown or unavailable fuzz targets: {missing} (have: {sorted(todo)})")
        todo = {n: todo[n] for n in names}

    def link_one(item):
        name, src = item
        exe = os.path.join(out, name)
        if _newer(exe, [src, lib, os.path.join(HERE, "fuzz_common.h"), __file__]):
            cmd = [cc, src, lib, "-o", exe, *CFLAGS, "-I" + shim, "-I" + HERE, *SAN, "-fsanitize=fuzzer", *LIBS]
            if verbose:
                print(" ".join(cmd))
            r = subprocess.run(cmd, check=False, capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"link failed: {' '.join(cmd)}\n{r.stderr[-4000:]}")
        return name, exe

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as ex:
        for name, exe in ex.map(link_one, todo.items()):
            built[name] = exe
    return built


def _count_members(lib):
    if not os.path.exists(lib):
        return -1
    r = subprocess.run(["ar", "t", lib], check=False, capture_output=True, text=True)
    return len(r.stdout.split())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "build", "fuzz"))
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("targets", nargs="*")
    a = ap.parse_args()
    for name, exe in sorted(build(a.out, a.targets or None, a.verbose).items()):
        print(name, exe)


if __name__ == "__main__":
    main()
