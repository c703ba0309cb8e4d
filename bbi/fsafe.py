"""Safe file-system primitives: regular files only, output directories bbi owns, disk errors.

Three promises rest here (docs/reliability.md):

- reading never blocks: a FIFO, socket or device put where bbi expects a file is refused
  (opened with ``O_NONBLOCK``, checked with ``fstat`` before a byte is read);
- an output directory is bbi's own: it is new, empty, or holds bbi's marker file
  (``.bbi-output.json``) naming the same kind of output; anything else (a run directory,
  the user's files) is refused unless the user passes the replace flag, and then the old
  directory is kept as ``OUT.replaced-<time>``; no symbolic link inside it is ever
  followed (one there is refused before any work);
- a full disk, a read-only file system or a name the file system cannot hold is one
  ``BbiError`` line, and a directory that was being staged is removed.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bbi.errors import BbiError

MARKER = ".bbi-output.json"
# Errors of the medium rather than of bbi: each becomes one line naming the path.
DISK_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EROFS: "read-only file system",
    errno.ENAMETOOLONG: "file name too long (shorten the name)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def disk_error(exc: OSError, where: str | os.PathLike | None = None) -> BbiError | None:
    """The one-line BbiError for an OSError of the medium (see DISK_ERRNOS), else None."""
    what = DISK_ERRNOS.get(exc.errno or 0)
    if what is None:
        return None
    path = where if where is not None else (exc.filename or "")
    return BbiError(f"{path}: {what}")


# ---- reading -------------------------------------------------------------------------


def read_regular_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of a regular file; a FIFO, socket or device is an OSError-free BbiError.

    ``open()`` of a FIFO blocks until a writer appears, so the file is opened with
    ``O_NONBLOCK`` and checked with ``fstat`` before reading. Other OSErrors propagate
    (FileNotFoundError, IsADirectoryError...) for the caller to word.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", os.fspath(path))
        if not stat.S_ISREG(st.st_mode):
            raise BbiError(f"{path}: not a regular file (a FIFO, socket or device); give a file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=True) as fh:
            fd = -1
            return fh.read()
    finally:
        if fd >= 0:
            os.close(fd)


def check_regular(path: str | os.PathLike) -> None:
    """An existing ``path`` must be a regular file (following links), never a FIFO."""
    try:
        st = os.stat(path)
    except OSError:
        return
    if not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
        raise BbiError(f"{path}: not a regular file (a FIFO, socket or device); give a file")


# ---- output directories --------------------------------------------------------------


def marker_kind(path: Path) -> str | None:
    """The kind recorded by bbi's marker in ``path``, or None (no marker, or not bbi's)."""
    marker = Path(path) / MARKER
    try:
        if not stat.S_ISREG(os.lstat(marker).st_mode):
            return None
        info = json.loads(read_regular_bytes(marker).decode("utf-8"))
    except (OSError, ValueError, BbiError):
        return None
    kind = info.get("kind") if isinstance(info, dict) else None
    return kind if isinstance(kind, str) else None


def write_marker(path: Path, kind: str) -> None:
    """Mark ``path`` as bbi's output of ``kind`` (a later run may replace it); written to a
    temp file and renamed, so a marker is whole or absent."""
    marker = Path(path) / MARKER
    tmp = marker.with_name(f"{MARKER}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({"kind": kind, "written_by": "bbi"}) + "\n", encoding="utf-8")
        os.replace(tmp, marker)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def find_link(root: Path) -> Path | None:
    """The first symbolic link inside ``root`` (never descending through one), or None."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                return p
    return None


# The files and folders that make a directory a run (bbi.runstore.RunDir.FILES/DIRS).
_RUN_ENTRIES = ("run.yaml", "manifest.json", "suite.jsonl", "results.json", "responses")


def _is_run_dir(path: Path) -> bool:
    return (
        (path / "run.yaml").is_file()
        or (path / "responses").is_dir()
        or ((path / "suite.jsonl").exists() and (path / "manifest.json").exists())
    )


def check_writable_parent(path: Path, flag: str) -> None:
    """The nearest existing ancestor of ``path`` must be a writable directory."""
    ancestor = Path(path).parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        raise BbiError(f"{flag} {path}: {ancestor} is a file, not a directory")
    if ancestor.is_dir() and not os.access(ancestor, os.W_OK | os.X_OK):
        raise BbiError(f"{flag} {path}: cannot write in {ancestor} (permission denied)")


def check_output_dir(
    out: str | os.PathLike,
    kind: str,
    *,
    flag: str = "--out",
    replace_flag: str = "--replace",
    replace: bool = False,
    run_path: str | os.PathLike | None = None,
    own_subdirs: tuple[str, ...] = ("adapters", "models"),
) -> Path:
    """Refuse an output directory bbi must not write into; return it as a Path.

    Accepted: a path that does not exist (its nearest existing ancestor a writable
    directory), an empty directory, or one holding bbi's marker of ``kind``. Refused:
    a file, a symbolic link (``out`` itself or anything inside it), a run directory, a
    path inside ``run_path`` outside its ``own_subdirs`` (a run's own files are never an
    output), an ancestor of ``run_path``, and any other non-empty directory unless
    ``replace`` (which keeps the old one as ``OUT.replaced-<time>``).
    """
    out = Path(out)
    if out.is_symlink():
        raise BbiError(f"{flag} {out}: is a symbolic link; give the directory itself")
    if out.exists() and not out.is_dir():
        raise BbiError(f"{flag} {out}: is a file; give a directory")
    if run_path is not None:
        root, target = Path(run_path).resolve(), out.resolve()
        if target == root or root.is_relative_to(target):
            raise BbiError(
                f"{flag} {out}: is the run directory (or holds it); give a new directory"
            )
        if target.is_relative_to(root):
            parts = target.relative_to(root).parts
            if parts[0] not in own_subdirs or len(parts) < 2:
                raise BbiError(
                    f"{flag} {out}: is one of the run's own files; give a directory outside "
                    f"the run or under {'/ or '.join(own_subdirs)}/"
                )
            for i in range(1, len(parts)):
                if (root.joinpath(*parts[:i])).is_symlink():
                    raise BbiError(f"{flag} {out}: goes through a symbolic link in the run")
    if not out.exists():
        check_writable_parent(out, flag)
        return out
    found = marker_kind(out)
    if found == kind:
        link = find_link(out)
        if link is not None:
            raise BbiError(
                f"{flag} {out}: holds a symbolic link ({link}); bbi never writes through "
                "one: remove it"
            )
        return out
    if not any(out.iterdir()):
        return out
    if replace:
        return out
    if found is not None:
        what = f"bbi's output of another kind ({found})"
    elif _is_run_dir(out):
        what = "a run directory"
    else:
        what = "a directory with files bbi did not write"
    raise BbiError(
        f"{flag} {out}: is {what}; choose another directory, or pass {replace_flag} to "
        f"replace it (the old one is kept as {out.name}.replaced-<time>)"
    )


def backup_dir(out: Path) -> Path:
    """A new ``OUT.replaced-<time>[-N]`` beside ``out``."""
    stamp = int(time.time())
    target = out.with_name(f"{out.name}.replaced-{stamp}")
    i = 1
    while target.exists() or target.is_symlink():
        target = out.with_name(f"{out.name}.replaced-{stamp}-{i}")
        i += 1
    return target


def prepare_output_dir(out: Path, kind: str, *, replace: bool = False) -> Path | None:
    """Create ``out`` (checked by :func:`check_output_dir`) marked as ``kind``.

    A foreign directory (only with ``replace``) is first moved aside; returns where, or
    None. A directory already marked ``kind`` is kept as it is (reruns and ``--resume``).
    """
    out = Path(out)
    backup = None
    created = not out.exists()
    try:
        if out.is_dir() and marker_kind(out) != kind and any(out.iterdir()):
            if not replace:  # check_output_dir refuses this; never write into it
                raise BbiError(f"{out}: is not bbi's output of kind {kind}")
            backup = backup_dir(out)
            out.rename(backup)
        out.mkdir(parents=True, exist_ok=True)
        if marker_kind(out) != kind:
            write_marker(out, kind)
    except OSError as exc:
        if created and backup is None:
            shutil.rmtree(out, ignore_errors=True)
        raise (disk_error(exc, out) or exc) from None
    return backup


@contextmanager
def removed_on_error(out: Path, enabled: bool, *, unless: Path | None = None) -> Iterator[None]:
    """Remove ``out`` (a directory this command created) if the block fails, unless
    ``unless`` exists by then (e.g. a checkpoint worth resuming); disk errors one line."""
    try:
        yield
    except BaseException as exc:
        if enabled and (unless is None or not Path(unless).exists()):
            shutil.rmtree(out, ignore_errors=True)
        if isinstance(exc, OSError) and disk_error(exc) is not None:
            raise disk_error(exc) from None
        raise


@contextmanager
def staged_dir(out: str | os.PathLike, kind: str, *, replace: bool = False) -> Iterator[Path]:
    """Write a whole output directory into a fresh sibling, then move it into place.

    The block writes into the yielded staging directory; when it ends without error the
    marker is added, the old ``out`` (bbi's own output of ``kind``, removed once the new
    one is in place; or, with ``replace``, anything else, kept as ``OUT.replaced-<time>``)
    is moved aside and the staging directory renamed to ``out``. On any error the staging
    directory is removed and ``out`` is as it was; disk errors become one-line BbiErrors.
    """
    out = Path(out)
    stage = out.with_name(f".{out.name}.staging-{os.getpid()}-{time.monotonic_ns()}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage.mkdir()
    except OSError as exc:
        raise (disk_error(exc, out) or exc) from None
    try:
        yield stage
        write_marker(stage, kind)
        old = None
        if out.is_dir() and not out.is_symlink():
            own = marker_kind(out) == kind or not any(out.iterdir())
            if not own and not replace:
                raise BbiError(f"{out}: is not bbi's output of kind {kind}; not replaced")
            old = (
                out.with_name(f".{out.name}.old-{time.monotonic_ns()}") if own else backup_dir(out)
            )
            out.rename(old)
        try:
            stage.rename(out)
        except BaseException:
            if old is not None:
                old.rename(out)
            raise
        if old is not None and old.name.startswith("."):
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(stage, ignore_errors=True)
        raise (disk_error(exc, out) or exc) from None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


@contextmanager
def staged_files(out: str | os.PathLike) -> Iterator[Path]:
    """Write a set of files into a hidden staging directory inside ``out``, then move
    each into ``out`` (``os.replace``: a link there is replaced, never written through).
    On an error the staging directory is removed and ``out`` keeps its old files."""
    out = Path(out)
    stage = out / f".staging-{os.getpid()}-{time.monotonic_ns()}"
    try:
        stage.mkdir(parents=True)
    except OSError as exc:
        raise (disk_error(exc, out) or exc) from None
    try:
        yield stage
        for entry in sorted(stage.iterdir()):
            target = out / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(entry, target)
    except OSError as exc:
        raise (disk_error(exc, out) or exc) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _same_file(a: Path, b: Path) -> bool:
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


@contextmanager
def all_or_nothing(paths: list[Path], *, created_dir: Path | None = None) -> Iterator[None]:
    """Files the block changes either all change or none do.

    Each existing file of ``paths`` is kept under a hidden hard link first (no data is
    copied, so this works on a nearly full disk); if the block fails they are put back,
    files it created are removed (and ``created_dir``, a directory the block created),
    and a disk error becomes one line. Each file must itself be replaced atomically.
    """
    import secrets

    saved: dict[Path, Path | None] = {}
    try:
        for p in paths:
            p = Path(p)
            if p.exists() or p.is_symlink():
                keep = p.with_name(f".{p.name[:200]}.keep-{secrets.token_hex(4)}")
                os.link(p, keep, follow_symlinks=False)
                saved[p] = keep
            else:
                saved[p] = None
    except OSError as exc:
        for keep in saved.values():
            if keep is not None:
                keep.unlink(missing_ok=True)
        raise (disk_error(exc) or exc) from None
    try:
        yield
    except BaseException as exc:
        for p, keep in saved.items():
            try:
                if keep is None:
                    p.unlink(missing_ok=True)
                elif _same_file(keep, p):  # never replaced (rename would do nothing)
                    keep.unlink()
                else:
                    os.replace(keep, p)
            except OSError:
                pass
        if created_dir is not None:
            shutil.rmtree(created_dir, ignore_errors=True)
        if isinstance(exc, OSError):
            raise (disk_error(exc) or exc) from None
        raise
    for keep in saved.values():
        if keep is not None:
            keep.unlink(missing_ok=True)


__all__ = [
    "all_or_nothing",
    "DISK_ERRNOS",
    "MARKER",
    "backup_dir",
    "check_output_dir",
    "check_regular",
    "check_writable_parent",
    "disk_error",
    "find_link",
    "marker_kind",
    "prepare_output_dir",
    "read_regular_bytes",
    "removed_on_error",
    "staged_dir",
    "staged_files",
    "write_marker",
]
