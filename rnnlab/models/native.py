"""Building and loading the C++ time loops (``rnnlab/csrc/loops.cpp``), for CPU float32.

The cells call them (``torch.ops.rnnlab.*``, here ``ops``) from their ``fast`` kernels; this module
only knows how to build, cache and load the extension.

In Python every per-step op costs 3-8 us of dispatch next to a 30-150 us matrix product, and the
GRU and LSTM need several elementwise ops per step. The C++ loops do one product per step (ATen)
and one fused, vectorised elementwise pass; everything that is not per step (the input projection
of all steps, the weight gradients, the output layer) stays in Python as one large op each.

The extension is compiled on first use with the machine's C++ compiler (``torch.utils.cpp_extension``,
10-20 s, cached under the user cache directory). Without a compiler, or with ``RNNLAB_NATIVE=0``, the
``fast`` kernels run their Python loops (in the cell modules): the same maths, a little slower.
Tests compare these loops with ``scratch``/``concise`` and with the Python loops.

Numbers: the C++ loops compute ``tanh``/``sigmoid`` from their own vectorised ``exp`` (about 2 float
ulp), so they agree with torch's to float32 rounding (tests: ≤1e-5), not bit for bit.
"""
from __future__ import annotations

import hashlib
import os
import platform
import sys
import threading
from pathlib import Path

import torch

_SOURCE = Path(__file__).resolve().parent.parent / "csrc" / "loops.cpp"
# (compile flags, link flags), best first: threads (OpenMP, the same runtime torch uses) and the
# CPU's own instruction set; then without OpenMP (e.g. Apple clang); then plain -O3.
_FLAG_SETS = [(["-O3", "-march=native", "-fopenmp"], ["-fopenmp"]), (["-O3", "-march=native"], []), (["-O3"], [])]
_lock = threading.Lock()
_state: dict = {}  # "ok": bool once tried, "why": the reason it is off
ops = None  # torch.ops.rnnlab once loaded


def _cpu_tag() -> str:
    """What ``-march=native`` compiled for: the CPU's model and flags (a cache shared between
    different machines must not hand one the other's binary)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))][:2]
        return "\n".join(lines)
    except OSError:
        return platform.processor() or platform.machine()


def cache_root() -> Path:
    """Where builds are cached: ``RNNLAB_NATIVE_DIR``, else the per-user cache directory."""
    from platformdirs import user_cache_dir

    return Path(os.environ.get("RNNLAB_NATIVE_DIR") or Path(user_cache_dir("rnnlab")) / "native")


def build_name(cflags: list[str], ldflags: list[str]) -> str:
    """The extension's name for this source, flags, torch and CPU (one build directory each)."""
    key = hashlib.sha1(_SOURCE.read_bytes() + " ".join(cflags + ldflags).encode() + torch.__version__.encode()
                       + _cpu_tag().encode()).hexdigest()[:12]
    return f"rnnlab_loops_{key}"


def _build_dir(name: str) -> Path:
    path = cache_root() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


#: How long a process waits for another one's build of the same extension before it gives up and
#: runs the Python loops (``RNNLAB_NATIVE_WAIT`` seconds overrides it). A build takes ~20 s here.
DEFAULT_WAIT_S = 180.0


class BuildBusy(RuntimeError):
    """Another process held the build lock for longer than the wait allows."""


def _wait_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get("RNNLAB_NATIVE_WAIT", DEFAULT_WAIT_S)))
    except ValueError:
        return DEFAULT_WAIT_S


def _load(cflags: list[str], ldflags: list[str]) -> None:
    """Build (or find in the cache) the extension with these flags and load it; raises on failure.

    Builders of one extension take an OS file lock (``build.lock``, ``filelock``): the kernel drops it
    when its holder dies, however it dies, so a killed build never blocks a later one. Holding it,
    torch's own ``lock`` file (a plain file torch waits on for as long as it exists, and which a
    killed build leaves behind) can only be stale, and is removed. A process that finds the lock
    taken says so on stderr and waits at most ``RNNLAB_NATIVE_WAIT`` seconds (then ``BuildBusy``).
    """
    from filelock import FileLock, Timeout

    name = build_name(cflags, ldflags)
    build_dir = _build_dir(name)
    lock = FileLock(str(build_dir / "build.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        wait = _wait_seconds()
        print(f"rnnlab: another process is compiling the C++ time loops in {build_dir}; waiting up to "
              f"{wait:.0f} s (RNNLAB_NATIVE_WAIT)...", file=sys.stderr, flush=True)
        try:
            lock.acquire(timeout=wait)
        except Timeout:
            raise BuildBusy(f"another process was still compiling them after {wait:.0f} s") from None
    try:
        (build_dir / "lock").unlink(missing_ok=True)  # torch's baton: stale, since we hold the OS lock
        built = any(build_dir.glob(f"{name}*.so"))
        if not built:
            print("rnnlab: compiling the C++ time loops (once per machine, ~20 s)...", file=sys.stderr, flush=True)
        try:
            _cpp_load(name, build_dir, cflags, ldflags)
        except Exception:
            if not built:
                raise
            # a build killed while linking can leave a truncated library that ninja thinks is up to date:
            # start this flag set's build over once
            for f in build_dir.iterdir():
                if f.name != "build.lock" and f.is_file():
                    f.unlink()
            print("rnnlab: the cached C++ loops did not load; compiling them again (~20 s)...", file=sys.stderr,
                  flush=True)
            _cpp_load(name, build_dir, cflags, ldflags)
    finally:
        lock.release()


def _cpp_load(name: str, build_dir: Path, cflags: list[str], ldflags: list[str]) -> None:
    from torch.utils import cpp_extension

    path = os.environ.get("PATH", "")
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + path  # the venv's ninja
    try:
        cpp_extension.load(name, [str(_SOURCE)], extra_cflags=cflags, extra_ldflags=ldflags,
                           build_directory=str(build_dir), is_python_module=False, verbose=False)
    finally:
        os.environ["PATH"] = path


def available() -> bool:
    """Whether the C++ loops are loaded (compiling them the first time); never raises."""
    if "ok" in _state:
        return _state["ok"]
    with _lock:
        if "ok" in _state:
            return _state["ok"]
        if os.environ.get("RNNLAB_NATIVE", "1") == "0":
            _state.update(ok=False, why="RNNLAB_NATIVE=0")
            return False
        why = ""
        for cflags, ldflags in _FLAG_SETS:  # compilers without OpenMP or -march=native get a plainer build
            try:
                _load(cflags, ldflags)
                global ops
                ops = torch.ops.rnnlab
                _state.update(ok=hasattr(ops, "gru_forward") and hasattr(ops, "scan_forward"), why="")
                return _state["ok"]
            except Exception as exc:  # no compiler, no ninja, headers missing...
                text = str(exc).strip()
                why = (text.splitlines()[-1] if text else type(exc).__name__)[:200]
                if isinstance(exc, BuildBusy) or (isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError)):
                    break  # another process is building, or an unwritable cache: other flags will not help
        _state.update(ok=False, why=why)
        print(f"rnnlab: C++ time loops unavailable ({why}); using the Python loops", file=sys.stderr, flush=True)
        return False


def reason() -> str:
    """Why the C++ loops are off ('' when they are on or not yet tried)."""
    return _state.get("why", "")


def applies(w: torch.Tensor) -> bool:
    """Whether a layer with weights like ``w`` can run the C++ loops: CPU float32, extension loaded."""
    return w.device.type == "cpu" and w.dtype == torch.float32 and available()


#: Run the C++ loops where they apply. Tests switch it off to cover the Python loops.
USE = True


def use(w: torch.Tensor) -> bool:
    """Whether the cells' ``fast`` kernels run their C++ loops for weights like ``w``."""
    return USE and applies(w)
