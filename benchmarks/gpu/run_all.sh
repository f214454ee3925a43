#!/usr/bin/env bash
# run_all.sh — one call on a GPU machine, given a copy of the repo: build (sm_90), run the CUDA tests, time
# everything (benchmarks/gpu/bench_gpu.py). Raw output goes to $OUT when it is set (else benchmarks/out/gpu).
# Budget: under 8 minutes in all (build ~1-2 min with one arch, tests ~1-2 min, timings ~3 min; the
# torch.compile baselines are skipped if the clock passes --budget).
#
#   bash benchmarks/gpu/run_all.sh            # from the repository root
#
# Build dependencies there: nvcc + cuBLAS/cuDNN (pip wheels nvidia-cublas / nvidia-cudnn-cu13 are found by
# setup.py), numpy, utf8proc and OpenBLAS headers. If utf8proc/OpenBLAS are missing and .debs/*.deb exists (see
# README "gpu": `apt-get download` them here into an ignored .debs/ and carry it), they are unpacked first.
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT_DIR="${OUT:-benchmarks/out/gpu}"
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/run_all.log"
PY="${PYTHON:-python3}"
START=$(date +%s)
stamp() { echo "[$(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }
: > "$LOG"

stamp "machine: $(uname -m) $(nproc) cpus; $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)"
if ! { [ -f /usr/include/utf8proc.h ] && ls /usr/include/*/openblas-pthread/cblas.h >/dev/null 2>&1; }; then
    if ls .debs/*.deb >/dev/null 2>&1; then
        stamp "unpacking utf8proc/OpenBLAS from .debs/"
        for f in .debs/*.deb; do dpkg -x "$f" /; done
        ldconfig 2>/dev/null || true
    else
        stamp "WARNING: utf8proc.h / openblas cblas.h not found and no .debs/: the build will likely fail"
    fi
fi

stamp "build: CLIPPROMPT_CUDA_ARCHS=90 python setup.py build_ext --inplace"
CLIPPROMPT_CUDA=1 CLIPPROMPT_CUDA_ARCHS=90 "$PY" setup.py build_ext --inplace >"$OUT_DIR/build.log" 2>&1
rc=$?
grep -iE "warning|error" "$OUT_DIR/build.log" | grep -v Deprecation | tee -a "$LOG" | head -40
if [ $rc -ne 0 ]; then stamp "BUILD FAILED (rc=$rc); tail of build.log:"; tail -30 "$OUT_DIR/build.log" | tee -a "$LOG"; exit $rc; fi
"$PY" -c "import clipprompt as cp, json; print(json.dumps(cp.build_info(), indent=1))" 2>&1 | tee -a "$LOG"

stamp "tests: pytest tests/test_cuda.py tests/test_device_policies.py"
PYTHONUNBUFFERED=1 timeout 240 "$PY" -m pytest -q -ra tests/test_cuda.py tests/test_device_policies.py -p no:cacheprovider 2>&1 | tee "$OUT_DIR/tests.log" | tail -40 | tee -a "$LOG"
test_rc=${PIPESTATUS[0]}
stamp "tests rc=$test_rc"

stamp "timings: bench_gpu.py"
PYTHONUNBUFFERED=1 timeout 300 "$PY" benchmarks/gpu/bench_gpu.py --json "$OUT_DIR/bench.json" --budget 200 2>&1 \
    | tee "$OUT_DIR/bench.log" | tee -a "$LOG"
bench_rc=${PIPESTATUS[0]}
stamp "bench rc=$bench_rc; done"
exit $(( test_rc != 0 || bench_rc != 0 ))
