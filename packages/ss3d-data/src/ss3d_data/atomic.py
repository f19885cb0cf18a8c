"""Atomic file writing, used by every ss3d writer.

A file is written to a temporary sibling, flushed and fsync'ed, then renamed over the target, and the directory is
fsync'ed. A reader therefore sees either the previous complete file or the new complete file, never a torn one,
even if the writer is killed mid-way. A killed writer's temporary file is removed by the next write of the same
target; an OS error while writing (read-only folder, disk full, a file where a folder is expected) is one
:class:`~ss3d_data.errors.Ss3dError` naming the target, with the previous file intact and no temporary file left.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ss3d_data.errors import Ss3dError

# Temporary siblings are named ``.<target name>.tmp-<pid>-<random>``: the pid of the writer is what lets a later
# write tell a killed writer's leftover from another live process's file still being written.
_TEMP_PID = re.compile(r"\.tmp-(\d+)-")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def _remove_stale_temps(target: Path) -> None:
    """Remove temporary siblings of ``target`` left by a writer that was killed mid-write.

    Rule: only names of this module's pattern for this very target (``.<name>.tmp-<pid>-*``), and only when no
    process with that pid is alive on this machine (a killed writer's pid is gone; a live one's is not). Age is no
    safe test: a hard-linked temp (:func:`atomic_link`) carries its source's old mtime while in flight. A pid that
    was recycled merely keeps the leftover until a later write. Run folders are written by one host (rank 0), so
    the pid test is taken on the machine that wrote the file.
    """
    prefix = f".{target.name}.tmp-"
    try:
        candidates = [p for p in target.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return
    for path in candidates:
        match = _TEMP_PID.match(path.name, len(prefix) - len(".tmp-"))
        if match is None or int(match.group(1)) == os.getpid() or _pid_alive(int(match.group(1))):
            continue  # not ours to judge (unknown shape), or its writer may still be writing it
        with contextlib.suppress(OSError):
            path.unlink()


def _os_error(target: Path, err: OSError) -> Ss3dError:
    reason = err.strerror or str(err)
    hint = {errno.ENOSPC: "free some disk space and run again",
            errno.EROFS: "write to a writable folder", errno.EACCES: "check the folder's permissions",
            errno.EPERM: "check the folder's permissions"}.get(err.errno or 0)
    where = f" ({err.filename})" if err.filename and Path(str(err.filename)).name != target.name \
        and not Path(str(err.filename)).name.startswith(f".{target.name}.tmp-") else ""
    return Ss3dError(f"cannot write {target}: {reason}{where}", hint=hint)


@contextlib.contextmanager
def _temp_sibling(target: Path) -> Iterator[Path]:
    """Yield an unused temporary path next to ``target``; on a clean exit it is renamed over ``target``.

    On an exception the temporary file is removed and ``target`` is left untouched; an ``OSError`` becomes an
    :class:`Ss3dError` naming ``target``.
    """
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(target)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        yield tmp
        if target.is_dir():  # os.replace would give a bare "Is a directory"; say which path is in the way
            raise IsADirectoryError(errno.EISDIR, "a folder is in the way", str(target))
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise _os_error(target, err) from None
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file next to ``path``; on a clean exit it atomically replaces ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write supports modes 'wb' and 'w', not {mode!r}")
    with _temp_sibling(Path(path)) as tmp:
        with open(tmp, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_link(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Make ``target`` a second name for the complete file ``source``, atomically.

    A hard link costs no space; where the filesystem refuses one, a fsync'ed copy is made instead. Either way
    ``target`` stays intact when ``source`` is later replaced, because every writer here renames a new file over
    its target rather than rewriting it in place.
    """
    with _temp_sibling(Path(target)) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:  # another device, or a filesystem without hard links
            with open(source, "rb") as src, open(tmp, "xb") as dst:
                shutil.copyfileobj(src, dst)
                dst.flush()
                os.fsync(dst.fileno())
