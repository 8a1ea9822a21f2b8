"""Files written so that a crash leaves the old bytes or the new ones, never a mix; files read only
once they are known to be readable regular files that fit in memory (a FIFO would hang the reader,
``/dev/zero`` would fill the memory), JSON with a one-line error. The ground floor of file
handling: corpora, checkpoints, prepared corpora and metrics use it."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from .errors import RnnlabError


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new bytes, never a mix
    (a temporary file in the same directory, fsync, then ``os.replace``). Nothing is left behind
    when it fails; an operating-system error becomes a one-line ``RnnlabError`` naming the path."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise RnnlabError(f"cannot write {path} ({e.strerror or e}); {os_error_hint(e)}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def staged_dir(target: str | Path):
    """A folder that appears at ``target`` whole or not at all: yields an empty temporary folder next
    to it (``.NAME.tmp-*``, so on the same file system) to fill; when the block ends without an
    error it takes ``target``'s place (a folder already there is replaced: the caller decides
    whether it may be). On any error or interrupt the temporary folder and the parent folders made
    for it are removed and nothing at ``target`` changes; an operating-system error becomes a
    one-line ``RnnlabError`` naming the path."""
    target = Path(target)
    made = [p for p in (target.parent, *target.parent.parents) if not p.exists()]  # innermost first
    tmp, landed = None, False
    try:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:12]}"
            tmp.mkdir()  # (not mkdtemp: the folder keeps the usual permissions once in place)
        except OSError as e:
            raise RnnlabError(f"cannot write {target} ({e.strerror or e}); {os_error_hint(e)}") from None
        yield tmp
        holder = None  # a folder already at target waits here until the new one is in place
        try:
            if target.is_dir() and not target.is_symlink():
                holder = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
                os.replace(target, holder / target.name)
            try:
                os.replace(tmp, target)
            except OSError:
                if holder is not None:
                    os.replace(holder / target.name, target)  # the previous folder back where it was
                raise
            tmp, landed = None, True
        except OSError as e:
            raise RnnlabError(f"cannot write {target} ({e.strerror or e}); {os_error_hint(e)}") from None
        finally:  # the old folder goes once the new one is in place (never while it is the only copy)
            if holder is not None and (landed or not any(holder.iterdir())):
                shutil.rmtree(holder, ignore_errors=True)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        for p in made if not landed else ():  # innermost first, each only while empty
            with contextlib.suppress(OSError):
                p.rmdir()


def json_text(obj: Any, **kwargs) -> str:
    """``json.dumps`` that always writes valid JSON: a NaN or infinity (which JSON cannot hold;
    Python would write the invalid ``NaN``) becomes ``null``, wherever it sits."""
    import math

    def finite(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: finite(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [finite(v) for v in x]
        return x

    try:
        return json.dumps(obj, allow_nan=False, **kwargs)
    except ValueError:
        return json.dumps(finite(obj), allow_nan=False, **kwargs)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, (json_text(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


#: bytes of memory per byte of JSON while it is parsed (Python objects are far larger than their text)
JSON_MEMORY_FACTOR = 20


def check_input_file(p: str | Path, what: str = "file", missing: str = "check the path") -> int:
    """The size of a readable regular file, or a one-line ``RnnlabError`` saying what it is instead
    (missing: ``missing`` says what to do; a folder, a device or FIFO that would never end, a
    symbolic-link loop, unreadable)."""
    import stat

    p = Path(p)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise RnnlabError(f"{p}: no such file; {missing}") from None
    except OSError as e:
        raise RnnlabError(f"{p}: cannot open it ({e.strerror or e}); {os_error_hint(e)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise RnnlabError(f"{p}: is a directory, not a {what}; give a file (a text file inside it, say)")
    if not stat.S_ISREG(st.st_mode):
        raise RnnlabError(f"{p}: is not a regular file (a device, FIFO or socket), so it cannot be a {what}; "
                          f"give a regular file")
    if not os.access(p, os.R_OK):
        raise RnnlabError(f"{p}: cannot read it (permission denied); check its permissions")
    return st.st_size


def check_fits_in_memory(p: Path, size: int, factor: float, what: str, fix: str) -> None:
    """Refuse to read ``size`` bytes of ``p`` that take ``factor`` times as much memory once read."""
    from .runtime import available_memory

    free = available_memory()
    if free is not None and size * factor > free:
        raise RnnlabError(f"{p}: {size / 2**20:,.0f} MB is too large to read as a {what} here; {fix}")


def read_json(path: str | Path, what: str = "file") -> Any:
    """Parse a JSON file; a missing, unreadable or invalid one, something other than a regular file,
    or one too large for memory, is a one-line ``RnnlabError``."""
    path = Path(path)
    size = check_input_file(path, what)
    check_fits_in_memory(path, size, JSON_MEMORY_FACTOR, what, "it is not one rnnlab wrote; restore or recreate it")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise RnnlabError(f"{path}: not valid JSON (a corrupt or truncated {what}); restore or recreate it") from None
    except OSError as e:
        raise RnnlabError(f"{path}: cannot read it ({e.strerror or e}); {os_error_hint(e)}") from None


def os_error_hint(e: OSError) -> str:
    """What to do about a failed file operation, by its errno."""
    import errno

    return {
        errno.ENOSPC: "free some disk space and try again",
        errno.EDQUOT: "free some disk space (quota) and try again",
        errno.EACCES: "check the permissions or choose another path",
        errno.EPERM: "check the permissions or choose another path",
        errno.EROFS: "the file system is read-only: choose another path",
        errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
        errno.EISDIR: "it is a folder: give a file path",
        errno.ENOENT: "check the path",
        errno.ELOOP: "the path has a symbolic-link loop: fix the link",
        errno.ENAMETOOLONG: "use a shorter path",
    }.get(e.errno, "check the path and the disk")
