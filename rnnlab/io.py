"""Files written so that a crash leaves the old bytes or the new ones, never a mix; JSON read with
a one-line error. The ground floor of file handling: checkpoints, prepared corpora and metrics use it."""
from __future__ import annotations

import json
import os
import tempfile
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


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def read_json(path: str | Path, what: str = "file") -> Any:
    """Parse a JSON file; a missing, unreadable or invalid one is a one-line ``RnnlabError``."""
    path = Path(path)
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
