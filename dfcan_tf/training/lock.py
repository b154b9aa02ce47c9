"""One ``dfcan train`` per run folder: an exclusive, non-blocking ``flock`` (``docs/training.md``).

The lock is a ``flock`` on :data:`LOCK_NAME` inside the run folder, released by
the kernel when the process ends, however it ends; the file holds the owner's
pid for the message of the next comer.
"""

from __future__ import annotations

import fcntl
import io
import os
from pathlib import Path

from dfcan_tf.errors import DfcanError

LOCK_NAME = ".dfcan-train.lock"

__all__ = ["LOCK_NAME", "lock_run", "missing_ancestor", "undo_new_run"]


def lock_run(folder: Path, *, create: bool) -> io.TextIOWrapper:
    """Take the run folder's exclusive, non-blocking training lock; return the open lock file (close to release)."""
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        f = open(folder / LOCK_NAME, "a+")  # noqa: SIM115 - held open for the whole training
    except FileExistsError:
        raise DfcanError(f"{folder}: exists and is not a folder; choose another run folder") from None
    except OSError as exc:
        raise DfcanError(f"{folder}: cannot create the run folder's lock file ({exc.strerror})") from None
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        # A lock file removed and recreated between our open and flock is not the lock everybody else sees.
        if os.fstat(f.fileno()).st_ino != os.stat(folder / LOCK_NAME).st_ino:
            raise BlockingIOError
    except (BlockingIOError, FileNotFoundError):
        f.seek(0)
        pid = f.read().strip() or "unknown"
        f.close()
        raise DfcanError(f"{folder} is in use by another dfcan train (pid {pid}); wait for it to finish, "
                         f"or train into another folder") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def missing_ancestor(folder: Path) -> Path | None:
    """The outermost of ``folder`` and its parents that does not exist yet (what ``mkdir -p`` creates)."""
    top = None
    p = folder.absolute()
    while not p.exists():
        top = p
        if p.parent == p:
            break
        p = p.parent
    return top


def undo_new_run(out_dir: Path, created_from: Path | None) -> None:
    """After a new run failed before writing its configuration: remove the lock file and the folders it made."""
    (out_dir / LOCK_NAME).unlink(missing_ok=True)
    if created_from is None:
        return
    p = out_dir.absolute()
    while True:
        try:
            p.rmdir()  # only ever removes an empty folder
        except OSError:
            return
        if p == created_from or p.parent == p:
            return
        p = p.parent
