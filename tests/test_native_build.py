"""Building the C++ loops across processes: a killed builder never blocks a later one, a live one is
waited for with a notice and a bound, and concurrent builders produce one good build.

Every case runs real processes (the lock is an OS lock, so only separate processes can test it)."""
from guards import HANG_GUARD
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from rnnlab.models import native

pytestmark = pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")), reason="no C++ compiler")

CHECK = "from rnnlab.models import native; print(native.available(), flush=True)"
# holds the build lock of the first flag set (as a build in progress does) and leaves torch's baton file
HOLD = """
import sys, time
from filelock import FileLock
from rnnlab.models import native
d = native._build_dir(native.build_name(*native._FLAG_SETS[0]))
lock = FileLock(str(d / "build.lock"))
lock.acquire()
(d / "lock").write_text("")
print("held", flush=True)
time.sleep(600)
"""


def _env(cache, **extra):
    env = dict(os.environ, RNNLAB_NATIVE_DIR=str(cache), **extra)
    env.pop("RNNLAB_NATIVE", None)
    return env


def _start(code, env):
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _copy_cache(tmp_path):
    """This machine's finished build, copied into a private cache directory (no compile needed)."""
    assert native.available(), native.reason()
    cache = tmp_path / "cache"
    shutil.copytree(native.cache_root(), cache, ignore=shutil.ignore_patterns("build.lock", "lock"))
    return cache


def _killed_holder(env):
    holder = _start(HOLD, env)
    assert holder.stdout.readline().strip() == "held"
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)


def test_a_builder_killed_with_sigkill_does_not_block_the_next_process(tmp_path):
    env = _env(_copy_cache(tmp_path))
    _killed_holder(env)  # leaves torch's `lock` file behind, as a build killed mid-compile does
    out = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=HANG_GUARD)
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr
    assert "waiting" not in out.stderr


def test_a_live_builder_is_waited_for_with_a_notice_and_a_bound(tmp_path):
    env = _env(_copy_cache(tmp_path), RNNLAB_NATIVE_WAIT="1")
    holder = _start(HOLD, env)
    try:
        assert holder.stdout.readline().strip() == "held"
        # the holder never lets go: returning at all (before the timeout) is the bound
        out = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=HANG_GUARD)
    finally:
        holder.kill()
        holder.wait(10)
    assert out.returncode == 0 and out.stdout.strip() == "False"
    assert "another process is compiling" in out.stderr and "waiting up to 1 s" in out.stderr
    assert out.stderr.count("using the Python loops") == 1  # one notice, then the fallback
    # once the holder is gone the cached build loads at once
    out = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=HANG_GUARD)
    assert out.stdout.strip() == "True", out.stderr


def test_a_compile_killed_midway_then_two_concurrent_builders_make_one_good_build(tmp_path):
    """The real thing, from an empty cache: kill -9 a compile in progress, then start two processes
    at once; both load the extension, built once."""
    env = _env(tmp_path / "cache")
    first = _start(CHECK, env)
    deadline = time.monotonic() + 60
    while not any((tmp_path / "cache").glob("*/build.ninja")) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling for a file the compile writes: no fixed sleep decides the outcome
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    procs = [_start(CHECK, env) for _ in range(2)]
    outs = [p.communicate(timeout=HANG_GUARD) for p in procs]
    for p, (stdout, stderr) in zip(procs, outs):
        assert p.returncode == 0 and stdout.strip() == "True", stderr
    assert sum("compiling the C++ time loops (once" in err for _, err in outs) <= 1
    assert len(list((tmp_path / "cache").glob("*/*.so"))) == 1
