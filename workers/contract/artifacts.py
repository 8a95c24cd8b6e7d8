"""What crosses between the planes besides job specs: artifact references and worker reports.

An artifact is addressed by a *key* relative to the artifact store (`checkpoints/<id>`,
`datasets/<rev>.jsonl`, `inputs/<sha>.npz`, `jobs/<id>/manifest.json`), written in specs and rows
as the URI `artifact:<key>`. The store itself is any fsspec URL chosen by settings, so the same spec
runs on the API's machine or on a Ray node that shares no disk with it. Absolute local paths never
appear here.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from workers.contract.vocab import JobKind

ARTIFACT_SCHEME = "artifact:"
_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.=-]*(/[A-Za-z0-9_][A-Za-z0-9_.=-]*)*$")


def check_key(key: str) -> str:
    """A store-relative key: no scheme, no leading slash, no `..`, no odd characters."""
    if not _KEY.match(key) or any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"not an artifact key: {key!r} (relative, letters/digits/._-= and '/')")
    return key


ArtifactKey = Annotated[str, AfterValidator(check_key)]


def artifact_uri(key: str) -> str:
    return ARTIFACT_SCHEME + check_key(key)


def key_of(uri: str) -> str:
    """The key of an `artifact:<key>` URI; refuses anything else (a path, another scheme)."""
    if not uri.startswith(ARTIFACT_SCHEME):
        raise ValueError(f"not an artifact URI: {uri!r} (expected 'artifact:<key>')")
    return check_key(uri[len(ARTIFACT_SCHEME):])


def _check_uri(uri: str) -> str:
    key_of(uri)
    return uri


ArtifactURI = Annotated[str, AfterValidator(_check_uri)]


def checkpoint_key(checkpoint_id: str) -> str:
    """Where a checkpoint id lives in the store: the one convention both planes share."""
    return check_key(f"checkpoints/{checkpoint_id}")


def job_key(job_id: str) -> str:
    """The store prefix a job writes its progress, manifest and tables under."""
    return check_key(f"jobs/{job_id}")


class Message(BaseModel):
    """Base of every message on the wire between the planes: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ProgressReport(Message):
    """`<job>/progress.json`, rewritten atomically by the worker and polled by the API."""

    fraction: float = Field(0.0, ge=0.0, le=1.0)
    message: str = ""
    heartbeat: float = Field(0.0, description="unix time of the last report")
    metrics: dict[str, float | int | str | None] = Field(default_factory=dict)


class ErrorReport(Message):
    """`<job>/error.json`, written by a worker that failed: the cause, not just a dead process."""

    error: str
    elapsed_s: float = 0.0


class ResultTable(Message):
    """One file of results, bound for one DuckDB table."""

    table: str
    key: ArtifactKey = Field(..., description="store key of the Parquet file")
    rows: int


class ResultManifest(Message):
    """`<job>/manifest.json`: written last, so its presence means every table is complete."""

    job_id: str
    kind: JobKind
    result_key: str
    tables: list[ResultTable] = Field(default_factory=list)
    summary: dict[str, Any] = Field(default_factory=dict)
    checkpoint: str | None = Field(None, description="checkpoint id produced by a training job")


class WorkerRuntime(Message):
    """`<job>/runtime.json`: where the worker ran and what it used, written at its start (the node) and again at
    its end, success or failure (the peaks). The API keeps it on the job, so a slow or killed job can be traced
    to a machine."""

    hostname: str
    node_ip: str | None = Field(None, description="the address the node reaches its cluster (or the network) from")
    pid: int
    python: str = Field(..., description="the interpreter's version")
    code_path: str = Field(..., description="the directory `workers` was imported from (a shipped copy under Ray)")
    code_version: str
    ray_submission_id: str | None = Field(None, description="the Ray job's submission id when run by Ray")
    cuda_visible_devices: str | None = None
    device: str | None = Field(None, description="the torch accelerator's name when the job used one")
    peak_rss_bytes: int | None = Field(None, description="largest resident set of the worker or a process it "
                                                          "waited for (unset at start)")
    peak_gpu_bytes: int | None = Field(None, description="torch.cuda.max_memory_allocated at the end")
    finished: bool = Field(False, description="the end-of-job record (peaks are final)")


PROGRESS_FILE = "progress.json"
MANIFEST_FILE = "manifest.json"
ERROR_FILE = "error.json"
SPEC_FILE = "spec.json"
RUNTIME_FILE = "runtime.json"
