#!/usr/bin/env bash
# The whole test suite against an ASan + UBSan build of clipprompt._C (CLIPPROMPT_SANITIZE=1: gcc
# -fsanitize=address,undefined -fno-sanitize-recover=undefined -O1 -g), built in a copy of the tree so the normal
# in-place build is never touched:
#
#   bash tests/run_sanitized.sh [pytest args]        e.g. bash tests/run_sanitized.sh -x tests/test_cache.py
#
# The copy lives in build/sanitize/tree (CLIPPROMPT_SANITIZE_DIR to move it); it is refreshed from the working tree
# (tracked + untracked, not ignored) on every run and rebuilt incrementally. The Python interpreter is not
# instrumented, so the ASan runtime is preloaded (it must be the first library loaded). Leak detection is off here
# (CPython and NumPy keep allocations until exit by design); leaks in the C core are checked by LeakSanitizer in the
# fuzz targets and by tests/leakcheck (docs/reliability.md). The libFuzzer short run is left out (it is already a
# sanitizer build). CUDA is off in the sanitized build.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC="$PWD"
DST="${CLIPPROMPT_SANITIZE_DIR:-$SRC/build/sanitize/tree}"
mkdir -p "$DST"
# refresh the copy: every file git would carry (tracked + untracked, not ignored), deletions included
git ls-files -co --exclude-standard -z | sort -z > "$DST/.files.new"
if [ -f "$DST/.files" ]; then
  comm -z -23 "$DST/.files" "$DST/.files.new" | (cd "$DST" && xargs -0 -r rm -f --)
fi
git ls-files -co --exclude-standard -z | tar --null -cf - -T - | (cd "$DST" && tar -xpf - --touch 2>/dev/null || tar -xpf -)
mv "$DST/.files.new" "$DST/.files"
cd "$DST"
CLIPPROMPT_SANITIZE=1 CLIPPROMPT_CUDA=0 python setup.py -q build_ext --inplace >/dev/null
ASAN_LIB="$(gcc -print-file-name=libasan.so)"
[ -f "$ASAN_LIB" ] || { echo "libasan.so not found (gcc -print-file-name=libasan.so)"; exit 2; }
# libstdc++ right behind it: ASan's __cxa_throw interceptor must find the real one at start-up, or the first C++
# exception thrown in an uninstrumented extension (triton's pybind11 module, imported by torch) aborts
export LD_PRELOAD="$ASAN_LIB $(gcc -print-file-name=libstdc++.so)${LD_PRELOAD:+ $LD_PRELOAD}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:allocator_may_return_null=1:check_initialization_order=1:detect_stack_use_after_return=1:quarantine_size_mb=32}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export CLIPPROMPT_SANITIZED_RUN=1
python -c "import clipprompt as cp, sys; sys.exit(0 if cp.build_info()['sanitize'] else 'not a sanitizer build')"
if [ "$#" -eq 0 ]; then set -- -q tests; fi
exec python -m pytest -p no:cacheprovider --ignore=tests/test_fuzz_short.py "$@"
