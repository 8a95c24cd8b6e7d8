"""`tension`: the one entry point for people and scripts. Calls the API (or an embedded instance)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import typer

from app.client import Backend, connect, dumps
from app.jobs.service import JobError
from app.settings import get_settings

app = typer.Typer(help="RM Tension Explorer: reward-model tension, neuron by neuron.", no_args_is_help=True)
jobs_app = typer.Typer(help="List, inspect, cancel and retry jobs.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")

URL = typer.Option(None, "--url", envvar="TENSION_URL", help="server URL; default: local server or embedded")
JSON = typer.Option(False, "--json", help="print machine-readable JSON")


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)


def _backend(url: str | None) -> Backend:
    try:
        return connect(get_settings(), url)
    except JobError as exc:
        _fail(str(exc))
        raise


@app.command()
def serve(host: str = typer.Option(None), port: int = typer.Option(None)) -> None:
    """Start the API and UI (embedded default: SQLite, DuckDB file, local worker processes)."""
    import uvicorn

    from app.main import create_app

    settings = get_settings()
    uvicorn.run(create_app(settings), host=host or settings.host, port=port or settings.port, log_level="info")


@app.command()
def migrate() -> None:
    """Apply the metadata (Alembic) and DuckDB schema migrations."""
    from app.migrate import upgrade_metadata
    from app.store import StatsStore

    s = get_settings()
    s.ensure_dirs()
    rev = upgrade_metadata(s.resolved_database_url)
    store = StatsStore(s.resolved_duckdb_path)
    typer.echo(f"metadata schema {rev}; duckdb schema {store.schema_version}")
    store.close()


def wait_for(backend: Backend, job: dict[str, Any], quiet: bool) -> dict[str, Any]:
    """Poll a job to its end, with a progress bar on stderr."""
    from tqdm import tqdm

    bar = None if quiet else tqdm(total=100, desc=f"{job['kind']} {job['id']}", file=sys.stderr,
                                  bar_format="{l_bar}{bar}| {n:.0f}% {postfix}")
    try:
        while job["status"] in ("queued", "running"):
            time.sleep(0.5)
            job = backend.job(job["id"])
            if bar is not None:
                bar.n = round(100 * job["progress"], 1)
                bar.set_postfix_str(job["message"][:60])
        if bar is not None:
            bar.n = 100 if job["status"] == "succeeded" else bar.n
            bar.refresh()
    finally:
        if bar is not None:
            bar.close()
    return job


def run_job(kind: str, params: dict[str, Any], *, url: str | None, as_json: bool, wait: bool,
            result_path: str | None = "/api/results/{key}") -> None:
    backend = _backend(url)
    try:
        job = backend.submit(kind, params)
        if wait:
            job = wait_for(backend, job, quiet=False)
        out: dict[str, Any] = {"job": job}
        if job["status"] == "succeeded" and result_path:
            out["result"] = backend.get(result_path.format(key=job["result_key"]))
        if as_json:
            typer.echo(dumps(out))
        else:
            typer.echo(f"job {job['id']} {job['status']}" + (" (cached)" if job.get("cached") else ""))
            if job.get("error"):
                typer.echo(job["error"])
            if "result" in out:
                typer.echo(f"result key {job['result_key']}; summary: {json.dumps(out['result'].get('summary'))}")
        if job["status"] in ("failed", "cancelled"):
            raise typer.Exit(1)
    except JobError as exc:
        _fail(str(exc), 2)
    finally:
        backend.close()


@app.command()
def score(
    model: str = typer.Option("minilm-l6", help="registered name, Hugging Face id or local path"),
    checkpoint: str = typer.Option(None, help="a trained checkpoint id"),
    source: str = typer.Option("bundled", help="'bundled', a file, 'dataset:<id>' or 'hf:<id>'"),
    fmt: str = typer.Option("auto", "--format"),
    split: str = typer.Option("test"),
    objective: list[str] = typer.Option(["helpful", "harmless"]),
    limit: int = typer.Option(None, help="pairs per objective"),
    max_length: int = typer.Option(128),
    batch_size: int = typer.Option(16),
    wait: bool = typer.Option(True, help="wait for the job and show progress"),
    as_json: bool = JSON,
    url: str = URL,
) -> None:
    """Reward every chosen and rejected text of a dataset with one model."""
    params = {"model": model, "checkpoint": checkpoint, "max_length": max_length, "batch_size": batch_size,
              "dataset": {"source": source, "format": fmt, "split": split, "objectives": objective,
                          "limit": limit}}
    run_job("score", params, url=url, as_json=as_json, wait=wait, result_path="/api/results/{key}/rewards")


@app.command()
def submit(kind: str, params: str = typer.Argument("{}", help="parameters as JSON"),
           wait: bool = typer.Option(True), as_json: bool = JSON, url: str = URL) -> None:
    """Submit any job kind with JSON parameters (train, evaluate, capture, ablate, score)."""
    try:
        parsed = json.loads(params)
    except json.JSONDecodeError as exc:
        _fail(f"parameters are not valid JSON: {exc}", 2)
    run_job(kind, parsed, url=url, as_json=as_json, wait=wait)


@app.command()
def study(
    model: str = typer.Option("minilm-l6"),
    preset: str = typer.Option("demo"),
    seed: list[int] = typer.Option([0], help="repeat for several seeds"),
    train_limit: int = typer.Option(None, help="training pairs per objective (default: the preset's)"),
    eval_limit: int = typer.Option(None, help="test pairs per objective (default: all)"),
    capture_limit: int = typer.Option(256, help="training pairs per objective streamed for capture"),
    max_length: int = typer.Option(128),
    ablate: bool = typer.Option(True, help="run ablation experiments A-C"),
    ablate_limit: int = typer.Option(64, help="test pairs per objective probed by the ablation experiments"),
    dose_percent: list[float] = typer.Option(None, help="experiment A's grid (default 0,2,...,30,100)"),
    random_seed: list[int] = typer.Option([0, 1, 2], help="seeds of the random control sets"),
    as_json: bool = JSON,
    url: str = URL,
) -> None:
    """Train the three regimes, evaluate, capture and ablate: the whole study, each step a cached job."""
    from app.study import run_study

    backend = _backend(url)
    try:
        out = run_study(backend, lambda b, j: wait_for(b, j, quiet=False), model=model, preset=preset,
                        seeds=seed, train_limit=train_limit, eval_limit=eval_limit, capture_limit=capture_limit,
                        max_length=max_length, ablate=ablate, ablate_limit=ablate_limit,
                        dose_percents=dose_percent or None, random_seeds=random_seed,
                        log=lambda m: typer.echo(m, err=True))
    except (RuntimeError, JobError) as exc:
        _fail(str(exc))
    finally:
        backend.close()
    typer.echo(dumps(out) if as_json else f"study done: evaluation {out['evaluation']}")


@jobs_app.command("list")
def jobs_list(status: str = typer.Option(None), kind: str = typer.Option(None), limit: int = 50,
              as_json: bool = JSON, url: str = URL) -> None:
    backend = _backend(url)
    try:
        rows = backend.jobs(status, kind, limit)
    finally:
        backend.close()
    if as_json:
        typer.echo(dumps(rows))
        return
    for j in rows:
        typer.echo(f"{j['id']}  {j['kind']:<9} {j['status']:<10} {100 * j['progress']:5.1f}%  "
                   f"{(j['error'] or j['message'])[:70]}")


def _one(action: str, job_id: str, as_json: bool, url: str | None) -> None:
    backend = _backend(url)
    try:
        job = getattr(backend, action)(job_id)
    except JobError as exc:
        _fail(str(exc), 2)
    finally:
        backend.close()
    typer.echo(dumps(job) if as_json else f"job {job['id']} {job['status']}: {job['error'] or job['message']}")


@jobs_app.command("show")
def jobs_show(job_id: str, as_json: bool = JSON, url: str = URL) -> None:
    _one("job", job_id, as_json, url)


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, as_json: bool = JSON, url: str = URL) -> None:
    _one("cancel", job_id, as_json, url)


@jobs_app.command("retry")
def jobs_retry(job_id: str, as_json: bool = JSON, url: str = URL) -> None:
    _one("retry", job_id, as_json, url)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
