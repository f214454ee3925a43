"""The CUDA backend's policies, tested on any machine (no GPU needed): the device layer runs its arena and graph
logic over host fakes of its memory / graph operations (csrc/device/cp_device_selftest.c).

Faults each check guards against: an out-of-memory retry that moved the arena while runners kept views into the
freed one; graph capture without a warm-up run; one failed capture switching graphs off for good; an unbounded graph
cache keyed by exact batch shapes; float16 queries converted without a range check."""
import pathlib

from clipprompt import _C

EXPECTED = {"arena_retry_without_old", "arena_oom_restores_old_size", "arena_usable_after_oom",
            "graph_warmup_then_capture", "graph_failure_budget", "graph_cache_bounded", "graph_buckets",
            "f16_query_range"}


def test_device_policies_over_host_fakes():
    results = _C._device_selftest()
    names = {n for n, _, _ in results}
    assert names == EXPECTED, names ^ EXPECTED
    failed = [(n, d) for n, ok, d in results if not ok]
    assert not failed, failed


def test_runner_lays_views_out_per_pass():
    """The encoder runner derives every arena pointer from the context's current arena at each pass (views()),
    and never keeps a token count of its own that could outlive an arena that moved."""
    src = (pathlib.Path(__file__).parent.parent / "csrc" / "device" / "cp_runner_cuda.c").read_text()
    assert "arena_tokens(r)" in src and "r->arena_tokens" not in src
    assert src.count("CP_CHECK(views(r,") == 1
