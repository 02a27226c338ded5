"""Platform policy: which backend MLX runs on, which dtype is fast there, and the BLAS preload.

On Linux the `mlx[cpu]` wheel links the slow reference BLAS; preloading OpenBLAS (same symbols)
makes float32 matrix products ~30x faster (docs: platform.md). `LD_PRELOAD` only works if set
before the process starts, so every process that trains or infers is started with it: the `clara`
entry point re-executes itself once, and training workers get it in their environment.

Environment overrides (recorded in every run):
    CLARA_BLAS      "off" to disable the preload, or a path to a BLAS library to preload
    CLARA_DTYPE     float32 | bfloat16 | float16, instead of the platform default
"""

from __future__ import annotations

import os
import platform as _platform
import sys
from pathlib import Path

OPENBLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)
_REEXEC_MARK = "CLARA_BLAS_REEXEC"


def blas_library() -> str | None:
    """The BLAS library to preload, or None (not Linux, disabled, or none installed)."""
    choice = os.environ.get("CLARA_BLAS", "auto")
    if choice.lower() in ("off", "0", "none", "false"):
        return None
    if choice not in ("auto", ""):
        return choice if Path(choice).is_file() else None
    if sys.platform != "linux":
        return None
    return next((p for p in OPENBLAS_CANDIDATES if Path(p).is_file()), None)


def blas_preloaded() -> bool:
    lib = blas_library()
    return bool(lib) and lib in os.environ.get("LD_PRELOAD", "").split(":")


def env_with_blas(env: dict | None = None) -> dict:
    """A copy of `env` (default: os.environ) with the BLAS preload added where it applies."""
    env = dict(os.environ if env is None else env)
    lib = blas_library()
    if lib:
        current = [p for p in env.get("LD_PRELOAD", "").split(":") if p]
        if lib not in current:
            env["LD_PRELOAD"] = ":".join([lib, *current])
    return env


def reexec_with_blas() -> None:
    """Restart this process once with the BLAS preloaded, if it applies and is not yet done."""
    if os.environ.get(_REEXEC_MARK) or blas_preloaded() or not blas_library():
        return
    env = env_with_blas()
    env[_REEXEC_MARK] = "1"
    argv = [sys.executable, *getattr(sys, "orig_argv", [sys.executable, *sys.argv])[1:]]
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, argv, env)
    except OSError:
        return  # run on without the speed-up rather than fail


def backend() -> str:
    """'metal', 'cuda' or 'cpu': where MLX computes by default."""
    import mlx.core as mx

    if mx.default_device() == mx.cpu:
        return "cpu"
    try:
        if mx.cuda.is_available():
            return "cuda"
    except AttributeError:
        pass
    return "metal" if sys.platform == "darwin" else "gpu"


def default_dtype() -> str:
    """float32 on the CPU (the only fast dtype there); bfloat16 on Metal and CUDA."""
    override = os.environ.get("CLARA_DTYPE")
    if override:
        return override
    return "float32" if backend() == "cpu" else "bfloat16"


def device_memory() -> tuple[int, str]:
    """(bytes, what they are) a run may use on the device MLX computes on: Metal's recommended
    working set, CUDA's total GPU memory, the host's RAM on the CPU; (0, "unknown") if none."""
    import mlx.core as mx

    try:
        info = mx.device_info()
    except Exception:
        info = {}
    for key, what in (("max_recommended_working_set_size", "Metal recommended working set"),
                      ("total_memory", "GPU memory")):
        if info.get(key):
            return int(info[key]), what
    if info.get("memory_size") and backend() != "cpu":
        return int(info["memory_size"]), "unified memory"
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "host RAM"
    except (ValueError, OSError, AttributeError):
        return 0, "unknown"


def kernel_cache_dir() -> Path:
    """Where MLX's CUDA backend keeps the kernels it compiles at first use (NVRTC -> PTX):
    MLX_PTX_CACHE_DIR, else <temp dir>/mlx/<version>/ptx. A fresh machine compiles for minutes;
    later processes read this folder."""
    import tempfile

    import mlx.core as mx

    own = os.environ.get("MLX_PTX_CACHE_DIR")
    return Path(own) if own else Path(tempfile.gettempdir()) / "mlx" / mx.__version__ / "ptx"


def kernels_cold() -> bool:
    """True on CUDA when the kernel cache is empty: the first steps will compile kernels."""
    if backend() != "cuda":
        return False
    d = kernel_cache_dir()
    return not d.is_dir() or not any(d.iterdir())


def describe() -> dict:
    """What a run records about the platform it ran on."""
    import mlx.core as mx

    try:
        import mlx_lm

        mlx_lm_version = mlx_lm.__version__
    except Exception:  # pragma: no cover
        mlx_lm_version = "unknown"
    return {
        "system": f"{_platform.system()} {_platform.machine()}",
        "python": _platform.python_version(),
        "mlx": mx.__version__,
        "mlx_lm": mlx_lm_version,
        "backend": backend(),
        "dtype": default_dtype(),
        "blas_preload": blas_library() if blas_preloaded() else None,
    }
