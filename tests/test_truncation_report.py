"""ClipTextEncoder reports prompts cut at context_length: a warning (default), silence, or an error."""
import warnings

import _prompt_helpers as helpers
import pytest

import clipprompt as cp

LONG = "a red summer dress with white dots " * 12  # ~85 CLIP tokens


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return cp.ClipTextEncoder.from_pretrained(helpers.save_tiny_clip(tmp_path_factory.mktemp("clip")))


def test_truncation_warns_and_names_the_prompts(clip):
    assert len(cp.ClipTokenizer().encode(LONG)) + 2 > clip.context_length
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        v = clip.encode(["short", LONG, "also short", LONG])
    assert v.shape == (4, clip.dim)
    msgs = [str(x.message) for x in w if issubclass(x.category, UserWarning)]
    assert len(msgs) == 1 and "2 of 4 prompts" in msgs[0] and "77 tokens" in msgs[0]
    assert clip.last_truncated == (1, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing cut -> no warning, and the report is reset
        clip.encode(["short"])
        clip.hidden_states(["short"])
    assert clip.last_truncated == ()


def test_truncation_ignore_and_error(clip):
    clip.on_truncate = "ignore"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            clip.encode([LONG])
        assert clip.last_truncated == (0,)
        clip.on_truncate = "error"
        with pytest.raises(cp.TokenizerError, match="context_length 77"):
            clip.encode(["fine", LONG])
        clip.on_truncate = "sometimes"
        with pytest.raises(cp.InvalidArgumentError, match="on_truncate"):
            clip.encode(["fine"])
    finally:
        clip.on_truncate = "warn"
