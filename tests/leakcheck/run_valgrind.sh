#!/usr/bin/env bash
# valgrind memcheck over tests/leakcheck/representative.py (the in-place build of clipprompt._C).
#   bash tests/leakcheck/run_valgrind.sh            -> prints every memcheck error and definite leak whose stack
#                                                      passes through clipprompt's C code; exit 1 if there is one
# CPython's own allocations are not ours: PYTHONMALLOC=malloc lets memcheck see every block, and only records with a
# frame in _C*.so (or a csrc/ file) count. OpenBLAS is pinned to a core type valgrind can emulate (no AVX-512).
set -euo pipefail
cd "$(dirname "$0")/../.."
LOG="${LEAKCHECK_LOG:-build/leakcheck/valgrind.log}"
mkdir -p "$(dirname "$LOG")"
export PYTHONMALLOC=malloc OPENBLAS_CORETYPE=Haswell OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \
  --num-callers=40 --log-file="$LOG" "$(python -c "import sys; print(sys.executable)")" tests/leakcheck/representative.py
python - "$LOG" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
records = re.split(r"\n==\d+== \n", text)
ours = [r for r in records if ("_C.cpython" in r or "/csrc/" in r) and
        ("definitely lost" in r or "Invalid " in r or "uninitialised" in r or "Mismatched" in r or "overlap" in r)]
summary = [l for l in text.splitlines() if "definitely lost:" in l or "ERROR SUMMARY" in l]
print("\n".join(summary))
for r in ours:
    print(r, "\n")
print(f"{len(ours)} record(s) in clipprompt's C code (log: {sys.argv[1]})")
sys.exit(1 if ours else 0)
PY
