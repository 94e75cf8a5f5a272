"""Files written so that nothing the user had is lost: atomically, with the right mode, and
never over a file that appeared meanwhile unless asked; and locks for files several
digitnet processes update at once.

A write goes to a temporary file beside the target (``.NAME.PID.RANDOM.tmp``, same
filesystem), held under an exclusive ``flock`` while it is written, fsynced, then published:
``os.replace`` when the target may be replaced, ``os.link`` (which fails if the name exists)
when it may not. A crash leaves the old file or the new one, never half of one; the next
write to the same name removes temporary files whose writer is gone (kill -9).
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from digitnet.errors import UsageError


def umask() -> int:
    """The process umask, read without changing it where /proc allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)        # not thread-safe, but only where /proc is missing
    os.umask(old)
    return old


def new_file_mode(path: Path) -> int:
    """The mode a file written to ``path`` gets: the mode of the file it replaces (a private
    0600 model stays private), else 0666 less the umask, as ``open()`` would give."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~umask()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:          # EPERM: it exists, owned by someone else
        return True
    return True


def clean_stale_temporaries(path: Path) -> list[Path]:
    """Remove ``.NAME.*.tmp`` files beside ``path`` left by writers that died (kill -9, power
    loss). A temporary is stale when its writer's process is gone and nobody holds its lock;
    one that is still being written is never touched. Returns what was removed."""
    removed = []
    try:
        candidates = list(path.parent.glob(f".{path.name}.*.tmp"))
    except OSError:
        return removed
    for tmp in candidates:
        parts = tmp.name[len(path.name) + 2:-4].split(".")
        if len(parts) == 2 and parts[0].isdigit():
            if _pid_alive(int(parts[0])):
                continue
        else:     # an older digitnet's name (no pid): only when clearly abandoned
            try:
                if time.time() - tmp.stat().st_mtime < 3600:
                    continue
            except OSError:
                continue
        try:
            fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass                  # locked: a writer in another pid namespace is still at it
        finally:
            os.close(fd)
    return removed


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _publish_new(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the name ``path`` only if no file has it (FileExistsError otherwise)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
            raise
        # a filesystem without hard links: claim the name first, then fill it
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.replace(tmp, path)
    else:
        tmp.unlink()


@contextmanager
def atomic_write(path: str | os.PathLike, mode: int | None = None, *, replace: bool = True) -> Iterator[BinaryIO]:
    """Yield a binary file that becomes ``path`` only when the block succeeds.

    The file's mode is ``mode``, else that of the file being replaced, else 0666 less the
    umask. With ``replace=False`` an existing ``path`` (even one that appeared while the block
    ran) is never replaced: FileExistsError, and the new bytes are dropped. On any exception
    the temporary file is removed and ``path`` is untouched. OSError from creating the
    temporary file propagates (the caller says which file).
    """
    path = Path(path)
    clean_stale_temporaries(path)
    final_mode = new_file_mode(path) if mode is None else mode
    while True:
        tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            break
        except FileExistsError:
            continue
    f = os.fdopen(fd, "wb")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)          # held until published: see clean_stale_temporaries
        yield f
        f.flush()
        os.fsync(fd)
        os.fchmod(fd, final_mode)
        if replace:
            os.replace(tmp, path)
        else:
            _publish_new(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        f.close()


def check_target(path: str | os.PathLike, force: bool = False, inputs=(), option: str = "--out") -> Path:
    """Say before any work whether an output may be written to ``path``: it must not be a
    directory, must not be one of ``inputs`` (the files the command reads: nothing writes over
    its own input, not even with --force), and must not exist unless ``force``. UsageError
    naming ``option`` otherwise."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{option} {path} is a directory; give a file name")
    for source in inputs:
        if source is not None and same_file(path, source):
            raise UsageError(f"{option} {path} is the file being read ({source}); choose another name")
    if (path.exists() or path.is_symlink()) and not force:
        raise UsageError(f"{path} exists; pass --force to overwrite it or choose another {option}")
    return path


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name one file (hard links and symlinks included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).absolute() == Path(b).absolute()


def sibling(path: Path, tag: str) -> Path:
    """A name beside ``path`` that no file has yet: ``STEM.TAG.SUFFIX``, then ``STEM.TAG-2.SUFFIX``…"""
    for i in range(1, 10_000):
        candidate = path.with_name(f"{path.stem}.{tag}{'' if i == 1 else f'-{i}'}{path.suffix}")
        if not candidate.exists() and not candidate.is_symlink():
            return candidate
    raise UsageError(f"{path.parent}: too many files named {path.stem}.{tag}*{path.suffix}")


@contextmanager
def locked(path: str | os.PathLike, deadline: float | None = None,
           on_wait: Callable[[], None] | None = None, remove: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on the lock file ``path`` (created if needed) for the block.

    Waits for another holder (calling ``on_wait`` once when it has to) until
    ``time.monotonic()`` passes ``deadline`` (TimeoutError), or forever when None. A holder
    that dies releases the lock with its process. ``remove``: delete the lock file on the way
    out (a waiter that locked the removed file notices and locks the new one).
    """
    path = Path(path)
    waited = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise TimeoutError(f"{path}: still locked by another process") from None
                    if not waited and on_wait is not None:
                        on_wait()
                    waited = True
                    time.sleep(0.05)
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:          # the holder removed it after we opened it: lock the new one
                os.close(fd)
                continue
        except BaseException:
            os.close(fd)
            raise
        try:
            yield
        finally:
            if remove:
                path.unlink(missing_ok=True)
            os.close(fd)
        return
