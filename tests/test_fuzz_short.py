"""The short fuzzing run of CI: every libFuzzer target in tests/fuzz (ASan + UBSan + LeakSanitizer, clang) fuzzes for
CLIPPROMPT_FUZZ_SECONDS (default 15 s) from seeds made of tests/data lines and small valid files, two targets at a
time, after replaying the committed regression inputs (tests/fuzz/regressions/<target>/*). Any crash, sanitizer
report, leak, timeout or out-of-memory input fails the test and is kept in build/fuzz/findings/<target>/.
The long form is `python tests/fuzz/run.py --seconds 1800 --jobs 2` (docs/reliability.md)."""
import concurrent.futures
import os
import shutil
import sys

import pytest

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz")
sys.path.insert(0, HERE)
import run as fuzz_run  # noqa: E402

import build as fuzz_build  # noqa: E402

SECONDS = int(os.environ.get("CLIPPROMPT_FUZZ_SECONDS", "15"))
OUT = os.path.join(fuzz_build.ROOT, "build", "fuzz")
# target -> the core files it covers (all must be built when the files are in the tree)
EXPECTED = {
    "fuzz_normalize": ["cp_normalize.c"],
    "fuzz_segment": ["cp_segment.c", "cp_jieba.c", "cp_mecab.c"],
    "fuzz_tokenizers": ["cp_bpe.c", "cp_wordpiece.c"],
    "fuzz_model": ["cp_json.c", "cp_safetensors.c", "cp_encoder.c", "cp_arch_clip.c", "cp_arch_bert.c"],
    "fuzz_store": ["cp_cache.c", "cp_index.c", "cp_persist.c"],
}
PRESENT = sorted(t for t, files in EXPECTED.items()
                 if all(fuzz_build.core_has(f) for f in files))


@pytest.fixture(scope="module")
def fuzzed():
    assert shutil.which("clang-14") or shutil.which("clang"), "clang is needed: bash .ci/install.sh --test"
    exes, env, seeds = fuzz_run.prepare(OUT)
    assert sorted(exes) == PRESENT
    replays = {name: fuzz_run.replay(name, exe, env) for name, exe in exes.items()}
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as ex:
        futs = {name: ex.submit(fuzz_run.fuzz, name, exe, env, seeds, OUT, SECONDS) for name, exe in exes.items()}
        results = {name: f.result() for name, f in futs.items()}
    return replays, results


@pytest.mark.parametrize("target", PRESENT)
def test_fuzz_target_short_run_finds_nothing(fuzzed, target):
    replays, results = fuzzed
    ok, log = replays[target]
    assert ok, f"{target}: a committed regression input fails again:\n{log}"
    r = results[target]
    assert r["rc"] == 0 and not r["new_findings"], (
        f"{target}: fuzzing found {r['new_findings']} (in {r['findings_dir']}), rc {r['rc']}:\n{r['tail']}")
    assert int(r["runs"]) >= 100, f"{target}: only {r['runs']} inputs ran in {SECONDS}s:\n{r['tail']}"


def test_every_core_part_has_a_fuzz_target():
    """The parts issue 8 names (normaliser, both tokenizers, segmenter, safetensors/config, cache and index files)
    each have a target whenever their source is in the tree."""
    assert "fuzz_normalize" in PRESENT and "fuzz_segment" in PRESENT
    for t, files in EXPECTED.items():
        if all(fuzz_build.core_has(f) for f in files):
            assert os.path.exists(os.path.join(HERE, t + ".c"))
