"""Atomic file writes: outputs appear whole or not at all, so an interrupted run never leaves a
half-written artifact that a later stage would trust. Also the run-directory lock, and permissions that follow
the user's umask (temporary files and folders are created private)."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import RunDirError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def _replaced_on_success(path: Path, suffix: str):
    """A temporary file beside ``path`` (same folder, so the rename is atomic) for the caller to write; on success it
    gets the user's usual permissions (mkstemp makes 0600) and replaces ``path``, on failure it is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with _replaced_on_success(Path(path), ".tmp") as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def save_figure(fig, path: str | Path, dpi: int = 120, **savefig_kwargs) -> None:
    """Save a matplotlib figure atomically, readable like any output; the format follows the file's suffix, as with
    ``fig.savefig``."""
    path = Path(path)
    with _replaced_on_success(path, path.suffix) as tmp:
        fig.savefig(tmp, dpi=dpi, **savefig_kwargs)


def share_like_umask(path: str | Path) -> None:
    """Give a folder tree made by mkdtemp/mkstemp (0700 / 0600) the permissions the user's umask gives new files,
    so a shared export or cache is readable by the colleagues it is shared with."""
    mask = _umask()
    path = Path(path)
    if path.is_symlink():  # chmod follows links: never change what a link points at (rule T3)
        return
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                item = os.path.join(root, name)
                if not os.path.islink(item):
                    os.chmod(item, (0o777 if name in dirs else 0o666) & ~mask)


def strict_json(obj):
    """``obj`` with every non-finite float (NaN, inf) replaced by None: strict JSON readers reject them."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def atomic_write_json(path: str | Path, obj, strict: bool = False) -> None:
    """``strict``: non-finite floats become null, so the file is valid for any JSON reader (the run manifest)."""
    if strict:
        text = json.dumps(strict_json(obj), indent=2, sort_keys=False, default=str, allow_nan=False)
    else:
        text = json.dumps(obj, indent=2, sort_keys=False, default=str)
    atomic_write_text(path, text + "\n")


def cached_json(path: str | Path, key: dict, compute):
    """The ``result`` kept in ``path`` when it was made with ``key`` (compared as JSON reads it back); otherwise
    ``compute()``, kept in ``path`` with its key (atomically) and returned."""
    path = Path(path)
    key = json.loads(json.dumps(key))
    if path.is_file():
        doc = json.loads(path.read_text())
        if doc.get("key") == key:
            return doc["result"]
    result = compute()
    atomic_write_json(path, {"key": key, "result": result})
    return result


@contextmanager
def atomic_dir(path: str | Path, overwrite: bool = True):
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        share_like_umask(tmp)
        if path.exists():
            if not overwrite:
                raise FileExistsError(path)
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class RunLock:
    """An exclusive lock on a run directory, held while a run writes into it.

    Uses ``filelock`` (an OS lock, released by the kernel when the process dies, so a killed run never leaves a
    lock that blocks). Who holds it (pid, host, start time) is written beside it, for the message a second run
    gets."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.path = self.root / ".lock"
        self.holder = self.root / ".lock.holder"
        self._lock = None

    def acquire(self) -> None:
        from filelock import FileLock, Timeout

        self._lock = FileLock(str(self.path))
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise RunDirError(f"{self.root} is in use by another llm-unlearn run ({self._describe_holder()}); "
                              "wait for it to finish, or use another --out") from None
        atomic_write_json(self.holder, {"pid": os.getpid(), "host": socket.gethostname(),
                                        "started": time.strftime("%Y-%m-%dT%H:%M:%S")})

    def _describe_holder(self) -> str:
        try:
            info = json.loads(self.holder.read_text())
            return f"pid {info['pid']} on {info['host']}, started {info['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "holder unknown"

    def release(self) -> None:
        if self._lock is not None:
            self.holder.unlink(missing_ok=True)
            self._lock.release()
            self._lock = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
