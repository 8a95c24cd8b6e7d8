"""The artifact store: checkpoints, datasets, job inputs and job outputs, behind fsspec.

Both planes use it: the API writes uploaded datasets and job inputs and reads job outputs; a worker
reads its inputs and writes its outputs, knowing only the store's URL (a local directory by default,
any fsspec URL by setting: `s3://bucket/prefix`, `memory://…`, a shared mount). Keys are relative
(`workers.contract.artifacts.check_key`), so nothing outside the store is reachable through one.
Torch-free.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from workers.contract.artifacts import check_key


class ArtifactStore:
    """A directory-like store at `url`. Writes of single files are atomic (temp key, then move)."""

    def __init__(self, url: str | os.PathLike[str]) -> None:
        url = str(url)
        if "://" not in url:
            url = Path(url).resolve().as_uri()
        self.url = url.rstrip("/")
        self.fs, root = fsspec.core.url_to_fs(self.url)
        self.root = root.rstrip("/")
        if self.is_local:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"ArtifactStore({self.url!r})"

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def _path(self, key: str) -> str:
        return f"{self.root}/{check_key(key)}"

    # -- single files -------------------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._path(key)))

    def read_bytes(self, key: str) -> bytes:
        return bytes(self.fs.cat_file(self._path(key)))

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex[:8]}.part"
        self.fs.pipe_file(tmp, data)
        self.fs.mv(tmp, path)

    def read_json(self, key: str) -> Any:
        """The parsed JSON at `key`, or None when it is missing or not (yet) valid JSON."""
        try:
            return json.loads(self.read_bytes(key))
        except (FileNotFoundError, ValueError, OSError):
            return None

    def write_json(self, key: str, obj: Any) -> None:
        self.write_bytes(key, json.dumps(obj, default=float).encode())

    def put_file(self, local: str | os.PathLike[str], key: str) -> None:
        path = self._path(key)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex[:8]}.part"
        self.fs.put_file(str(local), tmp)
        self.fs.mv(tmp, path)

    def delete(self, key: str) -> None:
        path = self._path(key)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    # -- directories (checkpoints) ------------------------------------------------------------------
    def local_dir(self, key: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
        """A local directory holding the tree at `key`: the store's own for a local store, else a
        download into `cache_dir` (default: a per-store cache under the system temp directory)."""
        path = self._path(key)
        if self.is_local:
            if not Path(path).is_dir():
                raise FileNotFoundError(f"artifact {key!r} not found in {self.url}")
            return Path(path)
        cache = Path(cache_dir or Path(tempfile.gettempdir()) / "tension-artifacts") / key
        if not (cache / ".complete").is_file():
            if not self.fs.exists(path):
                raise FileNotFoundError(f"artifact {key!r} not found in {self.url}")
            shutil.rmtree(cache, ignore_errors=True)
            cache.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get(path + "/", str(cache) + "/", recursive=True)
            (cache / ".complete").touch()
        return cache

    def local_file(self, key: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
        """A local path of the file at `key` (the store's own, or a cached download)."""
        path = self._path(key)
        if self.is_local:
            if not Path(path).is_file():
                raise FileNotFoundError(f"artifact {key!r} not found in {self.url}")
            return Path(path)
        cache = Path(cache_dir or Path(tempfile.gettempdir()) / "tension-artifacts") / key
        if not cache.is_file():
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(cache.name + ".part")
            self.fs.get_file(path, str(tmp))
            tmp.replace(cache)
        return cache

    def staging_dir(self, key: str) -> Path:
        """A local directory to build the tree for `key` in before `put_dir`: inside a local store (so the
        publish is a rename), else a temporary directory."""
        if self.is_local:
            d = Path(f"{self._path(key)}.{uuid.uuid4().hex[:8]}.staging")
            d.mkdir(parents=True)
            return d
        return Path(tempfile.mkdtemp(prefix="tension-stage-"))

    def publish_staged(self, staged: Path, key: str) -> None:
        """Move a `staging_dir` into place at `key` (atomic on a local store) and clean the staging copy."""
        path = self._path(key)
        if self.is_local:
            if Path(path).exists():
                shutil.rmtree(staged, ignore_errors=True)
                return
            os.replace(staged, path)
            return
        self.fs.put(str(staged) + "/", path + "/", recursive=True)
        shutil.rmtree(staged, ignore_errors=True)
