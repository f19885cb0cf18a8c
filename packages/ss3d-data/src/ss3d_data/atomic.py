"""Atomic file writing, used by every ss3d writer.

A file is written to a temporary sibling, flushed and fsync'ed, then renamed over the target, and the directory is
fsync'ed. A reader therefore sees either the previous complete file or the new complete file, never a torn one,
even if the writer is killed mid-way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


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


@contextlib.contextmanager
def _temp_sibling(target: Path) -> Iterator[Path]:
    """Yield an unused temporary path next to ``target``; on a clean exit it is renamed over ``target``.

    On an exception the temporary file is removed and ``target`` is left untouched.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
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
