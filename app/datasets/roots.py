"""Data roots: directories an operator lists (TENSION_DATA_ROOTS) whose dataset files a request may import.

The only files on the server a request can name. A reference is a root (its index or directory name) and
a relative path; it is resolved with symlinks followed and must stay inside the resolved root, be a regular
file with a dataset suffix, and be none of this server's own files (the metadata and statistics stores,
their journals, the secret key, anything under the data, artifact or log directories), compared by inode
as well as by path, all before the file is opened. What is imported goes through the upload path into the
artifact store, so workers only ever see artifact URIs.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from app.core.errors import Invalid, NotFound
from app.core.settings import Settings
from workers.contract.jobs import check_root_path

ALLOWED_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")
MAX_LISTED = 1000
"""Most files listed per root (the listing says when it stopped)."""
MAX_VISITED = 20_000
"""Most directory entries looked at per root while listing."""
MAX_DEPTH = 6
"""Deepest sub-directory listed."""


@dataclass(frozen=True)
class DataRoot:
    index: int
    name: str
    path: Path
    """Resolved; never shown to a requester (the index and the directory's name are)."""


@dataclass(frozen=True)
class _Protected:
    paths: tuple[Path, ...]
    dirs: tuple[Path, ...]
    inodes: frozenset[tuple[int, int]]

    def covers(self, target: Path, st: os.stat_result) -> bool:
        return ((st.st_dev, st.st_ino) in self.inodes or target in self.paths
                or any(target == d or target.is_relative_to(d) for d in self.dirs))


def allowed_suffix(filename: str) -> str | None:
    """The dataset suffix a file name ends with, or None."""
    return next((suf for suf in ALLOWED_SUFFIXES if filename.lower().endswith(suf)), None)


def data_roots(settings: Settings) -> list[DataRoot]:
    """The configured roots that exist, each under its index in TENSION_DATA_ROOTS."""
    out = []
    for i, raw in enumerate(settings.data_roots):
        try:
            path = Path(raw).expanduser().resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if path.is_dir():
            out.append(DataRoot(index=i, name=path.name or str(i), path=path))
    return out


def find_root(settings: Settings, root: str) -> DataRoot:
    """A root by its index or its directory's name."""
    roots = data_roots(settings)
    if not roots:
        raise NotFound("this server has no data roots (the operator sets TENSION_DATA_ROOTS); upload the file "
                       "instead (POST /api/datasets)")
    found = [r for r in roots if (str(r.index) == root if root.isdigit() else r.name == root)]
    if len(found) > 1:
        raise Invalid(f"root: {len(found)} data roots are named {root!r}; name it by index "
                      f"({', '.join(str(r.index) for r in found)})")
    if not found:
        known = ", ".join(f"{r.index} ({r.name})" for r in roots)
        raise NotFound(f"root: no data root {root[:100]!r}; the roots are {known}")
    return found[0]


def _protected(settings: Settings) -> _Protected:
    """This server's own files: never read as a dataset, whatever links point at them."""
    paths = [settings.resolved_duckdb_path, Path(f"{settings.resolved_duckdb_path}.wal"),
             settings.data_dir.resolve() / "secret_key"]
    url = settings.resolved_database_url
    if url.startswith("sqlite:///"):
        db = Path(url[len("sqlite:///"):].split("?", 1)[0]).resolve()
        paths += [db, *(Path(f"{db}{ext}") for ext in ("-wal", "-shm", "-journal"))]
    inodes = set()
    for p in paths:
        try:
            st = os.stat(p)  # a stat opens nothing (closing a descriptor would drop SQLite's locks)
        except OSError:
            continue
        inodes.add((st.st_dev, st.st_ino))
    dirs = (settings.data_dir.resolve(), settings.resolved_artifact_dir, settings.log_dir)
    return _Protected(paths=tuple(paths), dirs=dirs, inodes=frozenset(inodes))


def resolve_file(settings: Settings, root: str, path: str) -> tuple[DataRoot, Path, os.stat_result]:
    """(root, resolved file, its stat) for a reference; 422/404 naming the problem. Opens nothing."""
    try:
        check_root_path(root, path)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    r = find_root(settings, root)
    if allowed_suffix(path) is None:
        raise Invalid(f"path: {path[:200]!r} is not a dataset file; use one of {', '.join(ALLOWED_SUFFIXES)}")
    try:
        target = (r.path / path).resolve(strict=True)
    except (OSError, RuntimeError):
        raise NotFound(f"path: no file {path[:200]!r} in data root {r.index} ({r.name})") from None
    if not target.is_relative_to(r.path):
        raise Invalid(f"path: {path[:200]!r} leads outside data root {r.index} ({r.name}) through a link")
    try:
        st = os.stat(target)
    except OSError:
        raise NotFound(f"path: no file {path[:200]!r} in data root {r.index} ({r.name})") from None
    if not stat.S_ISREG(st.st_mode) or allowed_suffix(target.name) is None:
        raise Invalid(f"path: {path[:200]!r} in data root {r.index} ({r.name}) is not a dataset file")
    if _protected(settings).covers(target, st):
        raise Invalid(f"path: {path[:200]!r} is one of this server's own files; it is never read as a dataset")
    return r, target, st


def open_checked(target: Path, st: os.stat_result) -> BinaryIO:
    """Open the file `resolve_file` checked, refusing it if it was swapped for another since."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(target, flags)
    now = os.fstat(fd)
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(now.st_mode):
        os.close(fd)
        raise Invalid("path: the file changed while it was being opened; try again")
    return os.fdopen(fd, "rb")


def list_files(settings: Settings, r: DataRoot) -> tuple[list[str], bool]:
    """(relative paths of the dataset files a request may import from `r`, whether the list was cut short)."""
    protected = _protected(settings)
    out: list[str] = []
    for rel in _walk(r.path, protected):
        out.append(rel)
        if len(out) >= MAX_LISTED:
            return out, True
    return out, False


def _walk(base: Path, protected: _Protected) -> Iterator[str]:
    visited = 0
    stack: list[tuple[Path, int]] = [(base, 0)]
    while stack:
        directory, depth = stack.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name, reverse=True)
        except OSError:
            continue
        files, subdirs = [], []
        for entry in entries:
            visited += 1
            if visited > MAX_VISITED:
                return
            if entry.name.startswith("."):
                continue
            full = Path(entry.path)
            try:
                target = full.resolve(strict=True)
                st = os.stat(target)
            except (OSError, RuntimeError):
                continue
            if not target.is_relative_to(base) or protected.covers(target, st):
                continue
            if stat.S_ISDIR(st.st_mode) and not entry.is_symlink() and depth < MAX_DEPTH:
                subdirs.append((full, depth + 1))
            elif stat.S_ISREG(st.st_mode) and allowed_suffix(entry.name) is not None:
                rel = full.relative_to(base).as_posix()
                try:
                    check_root_path("0", rel)
                except ValueError:
                    continue
                files.append(rel)
        yield from sorted(files)
        stack.extend(subdirs)
