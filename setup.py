"""Build clipprompt._C: the layers of csrc/ (base, text, model, store, device, py: selected by folder), utf8proc, OpenBLAS, OpenMP, and, when
the CUDA toolkit (nvcc) *and* its libraries (CUDA runtime, cuBLAS, cuBLASLt) are found, kernels/*.cu with cuBLAS.

Environment knobs:
  CLIPPROMPT_CUDA=0|1      force the CUDA part off / on (default: on when nvcc and the libraries are found, otherwise
                           a CPU-only build that says why; =1 makes a missing piece an error that names it)
  CLIPPROMPT_CUDNN=0       never link cuDNN (default: linked when found; it only reports its version in build_info)
  CLIPPROMPT_CUDA_ARCHS    e.g. "80;90" (default "80;90;100": A100, H100/H200, B200)
  CLIPPROMPT_SANITIZE=1    ASan + UBSan build (-O1 -g), for the hardening suite
  CLIPPROMPT_DEBUG=1       -O0 -g
  CLIPPROMPT_DNNL=0|1      force the oneDNN low-precision GEMMs off / on (default: on when a oneDNN 2.x built with
                           OpenMP is found: Debian's libdnnl-dev, or DNNL_ROOT=<prefix with include/ and lib/>)
The CUDA libraries come from the toolkit, the system, or the pip wheels of the `cuda` extra (requirements-cuda.txt)
installed in the build environment: `pip install -r requirements-cuda.txt && pip install --no-build-isolation .`.
OpenBLAS is found with pkg-config (`openblas`, then `blas`), else in the usual include folders.
"""
import glob
import os
import shutil
import subprocess
import sys
import sysconfig

import numpy
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))


def _env_flag(name):
    v = os.environ.get(name)
    if v is None or v == "":
        return None
    return v.strip().lower() not in ("0", "false", "no", "off")


def find_nvcc():
    for cand in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")):
        if cand and os.path.exists(os.path.join(cand, "bin", "nvcc")):
            return os.path.join(cand, "bin", "nvcc")
    for cand in ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), reverse=True):
        if os.path.exists(os.path.join(cand, "bin", "nvcc")):
            return os.path.join(cand, "bin", "nvcc")
    return shutil.which("nvcc")


def cuda_home(nvcc):
    real = os.path.realpath(nvcc)
    home = os.path.dirname(os.path.dirname(real))
    if os.path.exists(os.path.join(home, "include", "cuda_runtime.h")):
        return home
    # a wrapper script (e.g. /usr/local/bin/nvcc -> exec /usr/local/cuda-X/bin/nvcc)
    try:
        text = open(real, errors="ignore").read(4096)
        for tok in text.split():
            if tok.endswith("/bin/nvcc") and os.path.exists(tok):
                return os.path.dirname(os.path.dirname(tok))
    except OSError:
        pass
    return home


def find_lib(names, header, extra_roots):
    """Find (include_dir, lib_dir, link_name) for a CUDA library: pip wheels (nvidia/*), the toolkit, the system."""
    roots = list(extra_roots)
    for sp in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]} | set(sys.path):
        if sp and os.path.isdir(os.path.join(sp, "nvidia")):
            roots += sorted(glob.glob(os.path.join(sp, "nvidia", "*")))
    roots += ["/usr", "/usr/local"]
    for root in roots:
        inc = None
        for d in (os.path.join(root, "include"), os.path.join(root, "targets", "x86_64-linux", "include")):
            if os.path.exists(os.path.join(d, header)):
                inc = d
        if inc is None:
            continue
        for libdir in (os.path.join(root, "lib"), os.path.join(root, "lib64"), "/usr/lib/x86_64-linux-gnu"):
            for name in names:
                hits = sorted(glob.glob(os.path.join(libdir, "lib%s.so*" % name)))
                if hits:
                    exact = os.path.join(libdir, "lib%s.so" % name)
                    link = name if os.path.exists(exact) else ":" + os.path.basename(hits[0])
                    return inc, libdir, link
    return None


def pkg_config(name):
    """(include_dirs, library_dirs, libraries) from `pkg-config --cflags --libs name`, or None."""
    exe = shutil.which("pkg-config")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--cflags", "--libs", name], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    flags = out.stdout.split()
    return ([f[2:] for f in flags if f.startswith("-I")], [f[2:] for f in flags if f.startswith("-L")],
            [f[2:] for f in flags if f.startswith("-l")])


def find_openblas():
    """(include_dirs, library_dirs, libraries) for OpenBLAS's cblas.h: pkg-config first, then the usual folders."""
    for name in ("openblas", "blas"):
        got = pkg_config(name)
        if got and any(os.path.exists(os.path.join(d, "cblas.h")) for d in got[0] + ["/usr/include"]):
            return got
    for d in sorted(glob.glob("/usr/include/*/openblas*")) + ["/usr/include/openblas", "/usr/local/include",
                                                               "/usr/include"]:
        if os.path.exists(os.path.join(d, "cblas.h")):
            return [d], [], ["openblas"]
    sys.exit("OpenBLAS not found (no pkg-config 'openblas' and no cblas.h): apt-get install libopenblas-dev")


def _say(msg):
    print("clipprompt build: " + msg, file=sys.stderr)


def find_dnnl():
    """(include_dir, lib_dir, version) of a oneDNN 2.x built with the OpenMP CPU runtime, or (None, reason).

    The GEMMs of model/cp_lowp.c use oneDNN's 2.x C API and must share this extension's OpenMP (libgomp) thread
    pool; builds with another CPU runtime (the PyPI `onednn` wheel is SYCL + TBB) are refused with the reason."""
    roots = [os.environ["DNNL_ROOT"]] if os.environ.get("DNNL_ROOT") else []
    roots += [sys.prefix, "/usr/local", "/usr"]
    reasons = []
    for root in roots:
        inc = os.path.join(root, "include")
        cfg = os.path.join(inc, "oneapi", "dnnl", "dnnl_config.h")
        ver = os.path.join(inc, "oneapi", "dnnl", "dnnl_version.h")
        if not (os.path.exists(cfg) and os.path.exists(ver)):
            continue
        text = open(cfg, errors="ignore").read()
        vtext = open(ver, errors="ignore").read()
        major = [ln.split()[-1] for ln in vtext.splitlines() if ln.startswith("#define DNNL_VERSION_MAJOR")]
        minor = [ln.split()[-1] for ln in vtext.splitlines() if ln.startswith("#define DNNL_VERSION_MINOR")]
        patch = [ln.split()[-1] for ln in vtext.splitlines() if ln.startswith("#define DNNL_VERSION_PATCH")]
        version = ".".join((major + ["?"])[:1] + (minor + ["?"])[:1] + (patch + ["?"])[:1])
        if "#define DNNL_CPU_RUNTIME DNNL_RUNTIME_OMP" not in text:
            reasons.append("%s: oneDNN %s is not built with the OpenMP CPU runtime" % (root, version))
            continue
        if major != ["2"]:
            reasons.append("%s: oneDNN %s is not a 2.x release" % (root, version))
            continue
        for libdir in (os.path.join(root, "lib"), os.path.join(root, "lib64"),
                       os.path.join(root, "lib", "x86_64-linux-gnu")):
            if glob.glob(os.path.join(libdir, "libdnnl.so*")):
                return inc, libdir, version
        reasons.append("%s: dnnl headers without libdnnl.so" % root)
    return None, "; ".join(reasons) or "no oneDNN headers (apt-get install libdnnl-dev)"


# The layer rules of csrc/ (lower layers never include higher ones; no include cycles): a violation stops the build.
sys.path.insert(0, os.path.join(ROOT, "csrc", "tools"))
import check_layers  # noqa: E402

_layer_errors = check_layers.check(ROOT)
if _layer_errors:
    sys.exit("csrc/ breaks its layer rules (csrc/tools/check_layers.py):\n  " + "\n  ".join(_layer_errors))
sys.path.pop(0)

SANITIZE = bool(_env_flag("CLIPPROMPT_SANITIZE"))
DEBUG = bool(_env_flag("CLIPPROMPT_DEBUG"))
want_cuda = _env_flag("CLIPPROMPT_CUDA")
NVCC = find_nvcc() if want_cuda is not False else None

# csrc/ is layered (see README, "Layout"): every layer folder joins the extension; the device layer's C files
# compile to stubs that fail with CP_ERR_DEVICE when CUDA is off.
LAYERS = ("base", "text", "model", "store", "device", "py")
sources = [p for layer in LAYERS for p in sorted(glob.glob(os.path.join("csrc", layer, "*.c")))]
cflags = ["-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers", "-Wno-psabi",
          "-fopenmp", "-fvisibility=hidden"]
if SANITIZE:
    cflags += ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
elif DEBUG:
    cflags += ["-O0", "-g"]
else:
    cflags += ["-O3", "-march=x86-64-v2", "-mtune=generic"] if os.uname().machine == "x86_64" else ["-O3"]
ldflags = ["-fopenmp"]
if SANITIZE:
    ldflags += ["-fsanitize=address,undefined"]
define_macros = [("CP_OPENBLAS", "1")]
if SANITIZE:
    define_macros.append(("CP_SANITIZE", "1"))
BLAS_INC, BLAS_LIBDIRS, BLAS_LIBS = find_openblas()
include_dirs = [numpy.get_include(), "csrc", "."] + BLAS_INC
libraries = ["utf8proc"] + BLAS_LIBS + ["m"]
library_dirs = list(BLAS_LIBDIRS)
extra_objects = []
runtime_dirs = []

# oneDNN: the bf16 / int8 GEMMs of the reduced-precision encoders (model/cp_lowp.c); without it they run on a
# portable path (float32 sgemm over widened weight tiles) and `build_info()["lowp_library"]` says "none".
want_dnnl = _env_flag("CLIPPROMPT_DNNL")
DNNL_INFO = "disabled (CLIPPROMPT_DNNL=0)"
if want_dnnl is not False:
    _dnnl = find_dnnl()
    if _dnnl[0] is None:
        if want_dnnl:
            sys.exit("CLIPPROMPT_DNNL=1 but no usable oneDNN: " + _dnnl[1])
        DNNL_INFO = "not found (" + _dnnl[1] + ")"
        print("clipprompt: building WITHOUT oneDNN — bf16/int8 encoders use the portable path: " + _dnnl[1])
    else:
        _inc, _libdir, _ver = _dnnl
        DNNL_INFO = "oneDNN %s (%s)" % (_ver, _libdir)
        define_macros.append(("CP_WITH_DNNL", "1"))
        if _inc not in ("/usr/include", "/usr/local/include"):
            include_dirs.append(_inc)
        libraries.append("dnnl")
        if _libdir not in ("/usr/lib/x86_64-linux-gnu", "/usr/lib", "/usr/lib64"):
            library_dirs.append(_libdir)
            runtime_dirs.append(_libdir)
        print("clipprompt: bf16/int8 GEMMs with " + DNNL_INFO)

CUDA_ARCHS = os.environ.get("CLIPPROMPT_CUDA_ARCHS", "80;90;100")
cuda_sources = sorted(glob.glob("kernels/*.cu"))


def _kernels_need_cudnn():
    # cuDNN is optional once the kernels guard their <cudnn.h> use with CP_WITH_CUDNN; until then it is required.
    for src in cuda_sources + glob.glob("kernels/*.h"):
        with open(src, encoding="utf-8", errors="replace") as f:
            text = f.read()
        if "cudnn.h" in text and "CP_WITH_CUDNN" not in text:
            return True
    return False


def configure_cuda():
    """(settings dict, None) when the CUDA part can be built, else (None, the reason it cannot)."""
    if want_cuda is False:
        return None, "CLIPPROMPT_CUDA=0"
    if not cuda_sources:
        return None, "no kernels/*.cu"
    if not NVCC:
        return None, "nvcc not found (set CUDA_HOME)"
    home = cuda_home(NVCC)
    libs = {"CUDA runtime": find_lib(["cudart"], "cuda_runtime.h", [home]),
            "cuBLAS": find_lib(["cublas"], "cublas_v2.h", [home]),
            "cuBLASLt": find_lib(["cublasLt"], "cublasLt.h", [home])}
    cudnn = None if _env_flag("CLIPPROMPT_CUDNN") is False else find_lib(["cudnn"], "cudnn.h", [home])
    if _kernels_need_cudnn():
        if _env_flag("CLIPPROMPT_CUDNN") is False:
            return None, "CLIPPROMPT_CUDNN=0 but kernels/ include cudnn.h without a CP_WITH_CUDNN guard"
        libs["cuDNN"] = cudnn
    missing = [n for n, v in libs.items() if v is None]
    if missing:
        return None, ("nvcc found at %s but not %s (pip install -r requirements-cuda.txt, or the toolkit's "
                      "libraries; a pip build needs --no-build-isolation to see wheels)" % (NVCC, ", ".join(missing)))
    return {"home": home, "libs": libs, "cudnn": cudnn}, None


CUDA, CUDA_WHY_NOT = configure_cuda()
if CUDA is None and want_cuda:
    sys.exit("CLIPPROMPT_CUDA=1 but the CUDA part cannot be built: " + CUDA_WHY_NOT)
WITH_CUDA = CUDA is not None
if WITH_CUDA:
    home = CUDA["home"]
    cuda_inc = [os.path.join(home, "include")]
    cuda_libdirs = [d for d in (os.path.join(home, "lib64"), os.path.join(home, "lib")) if os.path.isdir(d)]
    define_macros += [("CP_WITH_CUDA", "1"), ("CP_CUDA_ARCHS", CUDA_ARCHS.replace(";", "_"))]
    linked = dict(CUDA["libs"])
    if CUDA["cudnn"] is not None:
        linked["cuDNN"] = CUDA["cudnn"]
        define_macros.append(("CP_WITH_CUDNN", "1"))
    for inc, libdir, link in linked.values():
        if inc not in cuda_inc:
            cuda_inc.append(inc)
        if libdir not in library_dirs:
            library_dirs.append(libdir)
            runtime_dirs.append(libdir)
        libraries.append(link)
    for d in cuda_libdirs:
        if d not in library_dirs:
            library_dirs.append(d)
            runtime_dirs.append(d)
    include_dirs += cuda_inc
    _say("CUDA on (nvcc %s; %s; archs %s)" % (NVCC, ", ".join("%s in %s" % (n, v[1]) for n, v in linked.items()),
                                              CUDA_ARCHS))
else:
    _say("CPU-only build (%s)" % CUDA_WHY_NOT)


class BuildExt(build_ext):
    """Compiles kernels/*.cu with nvcc into objects that join the extension's link."""

    def build_extension(self, ext):
        if WITH_CUDA:
            objdir = os.path.join(self.build_temp, "kernels")
            os.makedirs(objdir, exist_ok=True)
            gencode = []
            for a in CUDA_ARCHS.split(";"):
                a = a.strip()
                if a:
                    gencode += ["-gencode", "arch=compute_%s,code=sm_%s" % (a, a)]
            last = CUDA_ARCHS.split(";")[-1].strip()
            gencode += ["-gencode", "arch=compute_%s,code=compute_%s" % (last, last)]
            objs = []
            for src in cuda_sources:
                obj = os.path.join(objdir, os.path.basename(src) + ".o")
                if not os.path.exists(obj) or os.path.getmtime(obj) < max(
                        os.path.getmtime(p) for p in [src] + glob.glob("kernels/*.h") + glob.glob("csrc/*.h")):
                    cmd = [NVCC, "-O3", "-std=c++17", "-Xcompiler", "-fPIC,-fvisibility=hidden", "-lineinfo",
                           "--expt-relaxed-constexpr", "-Icsrc", "-I."]
                    cmd += ["-I" + d for d in include_dirs if d != numpy.get_include()]
                    cmd += gencode + ["-c", src, "-o", obj]
                    print(" ".join(cmd))
                    subprocess.check_call(cmd)
                objs.append(obj)
            ext.extra_objects = list(ext.extra_objects or []) + objs
        super().build_extension(ext)


ext = Extension(
    "clipprompt._C",
    sources=sources,
    include_dirs=include_dirs,
    define_macros=define_macros,
    libraries=libraries,
    library_dirs=library_dirs,
    runtime_library_dirs=runtime_dirs,
    extra_compile_args=cflags,
    extra_link_args=ldflags,
    extra_objects=extra_objects,
    depends=glob.glob("csrc/*/*.h") + glob.glob("csrc/*/*.inc") + glob.glob("kernels/*.h"),
)

setup(ext_modules=[ext], cmdclass={"build_ext": BuildExt})
