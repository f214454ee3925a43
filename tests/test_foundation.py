"""Build info, thread control and the error model (status code -> exception class mapping)."""
import pytest

import clipprompt as cp


def test_build_info_reports_build():
    info = cp.build_info()
    for key in ("compiler", "blas", "openmp", "utf8proc", "cuda", "cublas", "cudnn", "threads", "version"):
        assert key in info, key
    assert "OpenBLAS" in info["blas"]
    assert info["version"] == cp.__version__
    if info["cuda"]:
        # compiled and linked with cuBLAS and cuDNN; on a machine without a GPU the reason is reported
        assert info["cublas"].count(".") == 2 and info["cudnn"].count(".") == 2
        assert isinstance(info["cuda_devices"], int)
        if info["cuda_devices"] == 0:
            assert info["cuda_device_error"]


def test_threads_roundtrip():
    old = cp.get_num_threads()
    try:
        cp.set_num_threads(1)
        assert cp.get_num_threads() == 1
        cp.set_num_threads(3)
        assert cp.get_num_threads() == 3
    finally:
        cp.set_num_threads(0)
    assert cp.get_num_threads() >= 1
    with pytest.raises(cp.InvalidArgumentError, match="set_num_threads"):
        cp.set_num_threads(-1)
    assert old >= 1


@pytest.mark.parametrize(
    "code,cls,extra",
    [
        (-1, MemoryError, None),
        (-2, cp.EmptyPromptError, ValueError),
        (-3, cp.TokenizerError, ValueError),
        (-4, cp.ModelFormatError, None),
        (-5, cp.DimensionMismatchError, ValueError),
        (-6, cp.IndexStateError, None),
        (-7, cp.DeviceError, None),
        (-8, cp.DeviceOutOfMemoryError, MemoryError),
        (-9, cp.InvalidArgumentError, ValueError),
        (-10, cp.FileAccessError, OSError),
        (-11, cp.DependencyError, None),
        (-12, cp.ClipPromptError, None),
    ],
)
def test_status_mapping(code, cls, extra):
    with pytest.raises(cls, match="what went wrong") as ei:
        cp._C._raise_status(code, "what went wrong at x")
    if cls is not MemoryError:
        assert isinstance(ei.value, cp.ClipPromptError)
    if extra is not None:
        assert isinstance(ei.value, extra)


def test_device_oom_is_device_error():
    assert issubclass(cp.DeviceOutOfMemoryError, cp.DeviceError)
    assert issubclass(cp.DeviceOutOfMemoryError, MemoryError)


def test_ok_status_raises_nothing():
    assert cp._C._raise_status(0, "") is None
