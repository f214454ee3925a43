"""`pip wheel .` in a clean venv (no system site-packages) builds, installs and imports: the lean install.

The build runs in pip's isolated build environment, where no CUDA library wheels are visible: on a machine with
nvcc (this one, CI) setup.py must fall back to a CPU-only build and say so, not fail. The installed package pulls
no torch and no CUDA wheels. pip may use its local cache for numpy/setuptools.
"""
import os
import subprocess
import venv

from conftest import ROOT


def _run(cmd, cwd, timeout, env=None):
    r = subprocess.run(cmd, check=False, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert r.returncode == 0, f"{cmd}\n--- stdout\n{r.stdout[-4000:]}\n--- stderr\n{r.stderr[-4000:]}"
    return r


def test_wheel_builds_installs_and_imports_in_a_clean_venv(tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False, clear=True).create(env_dir)
    py = str(env_dir / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "CLIPPROMPT_", "VIRTUAL_ENV"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    # the clean venv sees nothing of ours
    r = subprocess.run([py, "-c", "import numpy"], check=False, capture_output=True, text=True, env=env,
                       cwd=tmp_path)
    assert r.returncode != 0
    src = tmp_path / "src"  # a copy of the tracked tree: no in-place build products, no build/ folder
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for f in filter(None, files):
        if (ROOT / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            (src / f).write_bytes((ROOT / f).read_bytes())
    r = _run([py, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(tmp_path / "dist"), str(src)], tmp_path, 1500,
             env)
    log = r.stdout + r.stderr
    assert "clipprompt build: " in log  # setup.py says what it builds (CUDA on, or CPU-only and why)
    wheels = list((tmp_path / "dist").glob("clipprompt-*.whl"))
    assert len(wheels) == 1
    _run([py, "-m", "pip", "install", "-q", str(wheels[0])], tmp_path, 600, env)
    code = ("import clipprompt as cp, json; i = cp.build_info(); "
            "assert cp.normalize('白色T恤') == '白色 T恤'; assert len(cp.ClipTokenizer().encode('a photo')) == 2; "
            "assert cp.segment('白色T恤') == ['白色', 'T恤']; print(json.dumps(i))")
    out = _run([py, "-c", code], tmp_path, 120, env).stdout
    info = __import__("json").loads(out.strip().splitlines()[-1])
    assert info["version"]
    if "CPU-only build" in log:
        assert info["cuda"] is False and info["cudnn"] is None
    names = _run([py, "-m", "pip", "list", "--format=freeze"], tmp_path, 120, env).stdout.lower()
    assert "torch" not in names and "nvidia" not in names and "numpy" in names and "tqdm" in names
