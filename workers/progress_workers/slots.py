"""Concurrency slots of local job processes, in a directory of lock files on this host.

The directory is shared by every gateway process of one store on the host and by the job
processes they start, so the bound holds across them and across restarts. Each user (a gateway
while it runs, a job process while it lives) holds a shared lock on ``users.lock``; a job
process also holds one ``slot-<n>.lock`` exclusively while it works. Every lock dies with its
process.

The last user to leave removes the directory: ``leave`` takes ``users.lock`` exclusively without
waiting, which succeeds only when nobody else holds it. A process that opened the directory
while it was being removed finds its ``users.lock`` unlinked and joins again (recreating it).
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path
from typing import IO

__all__ = ["join", "leave", "take_slot"]

USERS = "users.lock"
SLOT_PREFIX = "slot-"


def join(directory: Path) -> IO[bytes]:
    """Create ``directory`` if needed and hold it in use until the returned handle is closed."""
    path = directory / USERS
    while True:
        directory.mkdir(parents=True, exist_ok=True)
        try:
            handle = path.open("ab")
        except FileNotFoundError:
            continue  # removed between mkdir and open: make it again
        fcntl.flock(handle, fcntl.LOCK_SH)
        if _still_linked(handle.fileno(), path):
            return handle
        handle.close()  # the last user removed it while we waited for the lock


def take_slot(directory: Path, slots: int) -> IO[bytes]:
    """Block until one of ``slots`` lock files is ours; the caller has joined ``directory``."""
    while True:
        for index in range(slots):
            handle = (directory / f"{SLOT_PREFIX}{index}.lock").open("ab")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            return handle
        time.sleep(0.1)


def leave(users: IO[bytes], directory: Path) -> bool:
    """Stop using ``directory`` (``users`` is what ``join`` returned); remove it if we were its
    last user. Returns whether it was removed. Only our own lock files are deleted: a directory
    holding anything else (a configured one) is left in place."""
    users.close()
    path = directory / USERS
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False  # another last user removed it already
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a gateway or a job process still uses it
        if not _still_linked(fd, path):
            return False
        # Nobody holds a slot: a slot holder also holds users.lock.
        for entry in directory.glob(f"{SLOT_PREFIX}*.lock"):
            entry.unlink(missing_ok=True)
        path.unlink()
    finally:
        os.close(fd)
    try:
        directory.rmdir()
    except OSError as exc:
        # Not empty: someone joined again just now, or the directory holds other files.
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
            return False
        raise
    return True


def _still_linked(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (not unlinked by a remover)."""
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)
