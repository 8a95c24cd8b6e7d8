"""`tension`: the one entry point for people and scripts. Calls the API (or an embedded instance).

One command per job kind (`score`, `train`, `evaluate`, `capture`, `ablate`), its options generated
from the kind's params model in `workers.contract.jobs` (`PARAMS_BY_KIND`), so the command line and
the contract cannot drift apart:

- a field is an option named after it: `max_length` is `--max-length`; a nested model's field is
  prefixed with the field holding it: `dataset.split` is `--dataset-split`;
- an enum is a choice, a list a repeatable option (`--dataset-objectives helpful --dataset-objectives
  harmless`), a bool a `--x/--no-x` flag, a `NeuronIndexSet` JSON (`--neuron-set '{"3": [1, 2]}'`);
- the help is the field's description; an option not given is left out of the params, so the
  model's own default applies (the help shows it);
- fields the API fills itself (`API_FILLED`) have no option;
- a `--dataset-source` naming a file on this machine is uploaded first (POST /api/datasets) and
  replaced by its `dataset:<id>`.

Options become params in `build_params` (pure: no server, no files), which validates them with the
kind's model; an invalid value is a usage error (exit code 2) naming the option. Importing this
module loads neither the services nor torch.
"""

from __future__ import annotations

import inspect
import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from functools import cache
from pathlib import Path
from types import GenericAlias, UnionType
from typing import Annotated, Any, NoReturn, Union, get_args, get_origin

import typer
from pydantic import BaseModel, RootModel, ValidationError

from app.client import ApiError, Backend, EmbeddedBackend, connect, dumps
from app.core.settings import get_settings
from workers.contract.jobs import PARAMS_BY_KIND, AblateParams, DatasetRef, NeuronIndexSet, Params
from workers.contract.vocab import DatasetFormat, JobKind, Objective

app = typer.Typer(help="RM Tension Explorer: reward-model tension, neuron by neuron.", no_args_is_help=True)
jobs_app = typer.Typer(help="List, inspect, cancel and retry jobs.", no_args_is_help=True)
datasets_app = typer.Typer(help="Upload and list preference-pair datasets.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
app.add_typer(datasets_app, name="datasets")
users_app = typer.Typer(help="Users and roles of a shared server (operator commands: they open the metadata "
                             "database directly).", no_args_is_help=True)
app.add_typer(users_app, name="users")

URL = typer.Option(None, "--url", envvar="TENSION_URL", help="server URL; default: local server or embedded")
JSON = typer.Option(False, "--json", help="print machine-readable JSON")
WAIT = typer.Option(True, "--wait/--no-wait", help="wait for the job, with a progress bar on stderr")
RUN_PANEL = "Running"
JOB_URL = typer.Option(None, "--url", envvar="TENSION_URL", help="server URL; default: local server or embedded",
                       rich_help_panel=RUN_PANEL)
JOB_JSON = typer.Option(False, "--json", help="print machine-readable JSON", rich_help_panel=RUN_PANEL)
JOB_WAIT = typer.Option(True, "--wait/--no-wait", help="wait for the job, with a progress bar on stderr",
                        rich_help_panel=RUN_PANEL)


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)


def _api_fail(exc: ApiError) -> NoReturn:
    """A refusal of the request (4xx) is the caller's error, exit code 2; anything else 1."""
    _fail(str(exc), 2 if 400 <= exc.status < 500 else 1)


def _backend(url: str | None) -> Backend:
    try:
        return connect(get_settings(), url)
    except ApiError as exc:
        _fail(str(exc))


@contextmanager
def _session(url: str | None) -> Iterator[Backend]:
    """A backend for one command: closed afterwards, an API refusal turned into a CLI error."""
    backend = _backend(url)
    try:
        yield backend
    except ApiError as exc:
        _api_fail(exc)
    finally:
        backend.close()


# ================================================================== options generated from params models

API_FILLED: dict[type[BaseModel], frozenset[str]] = {
    AblateParams: frozenset({"inputs", "helpful_checkpoint", "harmless_checkpoint"}),
}
"""Fields the API sets itself when it accepts a job: never options."""

ALIASES: dict[JobKind, dict[str, tuple[str, ...]]] = {
    JobKind.score: {"--source": ("dataset", "source"), "--format": ("dataset", "format"),
                    "--split": ("dataset", "split"), "--objective": ("dataset", "objectives"),
                    "--limit": ("dataset", "limit")},
}
"""Hidden second names of generated options: what `tension score` called them before, so scripts keep working."""

COMMON_FLAGS = frozenset({"--json", "--wait", "--no-wait", "--url", "--help"})
"""Flags every job command has; no params field may be named like one."""

_SCALARS = (bool, int, float, str)
_METAVAR = {str: "TEXT", int: "INTEGER", float: "FLOAT"}


@dataclass(frozen=True)
class FieldOption:
    """One command-line option standing for one params field (a nested field's path has several parts)."""

    path: tuple[str, ...]
    owner: type[BaseModel]
    """The model that declares the field (`DatasetRef` for `dataset.source`)."""
    type: Any
    """What the command line converts a value to: a scalar or an enum; `str` for JSON."""
    multiple: bool
    is_json: bool
    """Given as JSON text (a `NeuronIndexSet` or another mapping)."""
    required: bool
    description: str
    default: Any
    json_example: bool = False

    @property
    def name(self) -> str:
        """The command function's parameter name: `dataset__source`."""
        return "__".join(self.path)

    @property
    def flag(self) -> str:
        return "--" + "-".join(self.path).replace("_", "-")

    @property
    def help(self) -> str:
        text = self.description
        if self.owner is DatasetRef and self.path[-1] == "source":
            text += ", or a file on this machine (uploaded first)"
        if self.multiple:
            text += " (repeatable)"
        if self.is_json:
            text += " (JSON object, e.g. '{\"3\": [1, 2]}')" if self.json_example else " (JSON object)"
        shown = _shown_default(self.default)
        if shown and not self.required:
            text += f" [default: {shown}]"
        return text.strip()


def _strip(tp: Any) -> Any:
    """`Annotated[X, ...]` and `X | None` -> X."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, UnionType):
            rest = [a for a in get_args(tp) if a is not type(None)]
            if len(rest) != 1:
                return tp
            tp = rest[0]
        else:
            return tp


def _is_scalar(tp: Any) -> bool:
    return inspect.isclass(tp) and (issubclass(tp, Enum) or tp in _SCALARS)


def _is_nested(tp: Any) -> bool:
    return inspect.isclass(tp) and issubclass(tp, BaseModel) and not issubclass(tp, RootModel)


def _option_type(model: type[BaseModel], name: str, tp: Any) -> tuple[Any, bool, bool]:
    """(type, multiple, is_json) of a field's option; TypeError for a type the command line cannot take.

    A mapping (`NeuronIndexSet`, `dict[...]`) is taken as JSON text (type `str`), validated by the model.
    """
    if get_origin(tp) is list and _is_scalar(elem := _strip(get_args(tp)[0])):
        return elem, True, False
    if _is_scalar(tp):
        return tp, False, False
    if get_origin(tp) is dict or (inspect.isclass(tp) and issubclass(tp, RootModel)):
        return str, False, True
    raise TypeError(f"{model.__name__}.{name}: no command-line option for type {tp!r}; "
                    "teach app/cli.py's _option_type, or list the field in API_FILLED")


def _shown_default(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, list | tuple):
        return ", ".join(_shown_default(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, RootModel):
        return json.dumps(value.model_dump(mode="json"))
    return str(value)


def _walk(model: type[BaseModel], prefix: tuple[str, ...], defaults: BaseModel | None,
          required: bool) -> list[FieldOption]:
    out: list[FieldOption] = []
    for name, field in model.model_fields.items():
        if name in API_FILLED.get(model, ()):
            continue
        path = (*prefix, name)
        if defaults is not None:
            default = getattr(defaults, name)
        else:
            default = None if field.is_required() else field.get_default(call_default_factory=True)
        tp = _strip(field.annotation)
        if _is_nested(tp):
            out += _walk(tp, path, default if isinstance(default, BaseModel) else None,
                         required and field.is_required())
            continue
        opt_type, multiple, is_json = _option_type(model, name, tp)
        out.append(FieldOption(path=path, owner=model, type=opt_type, multiple=multiple, is_json=is_json,
                               required=required and field.is_required(), description=field.description or "",
                               default=default, json_example=tp is NeuronIndexSet))
    return out


@cache
def field_options(kind: JobKind | str) -> tuple[FieldOption, ...]:
    """Every option of `tension <kind>`, one per field of its params model (nested models flattened)."""
    options = tuple(_walk(PARAMS_BY_KIND[JobKind(kind)], (), None, True))
    for opt in options:
        if opt.flag in COMMON_FLAGS:
            raise TypeError(f"{kind} params field {'.'.join(opt.path)} clashes with the common option {opt.flag}")
    return options


def option_flags(kind: JobKind | str, opt: FieldOption) -> tuple[str, ...]:
    """The option's flag, then its hidden aliases."""
    return (opt.flag, *(a for a, path in ALIASES.get(JobKind(kind), {}).items() if path == opt.path))


def _alias_name(flag: str) -> str:
    return "alias__" + flag[2:].replace("-", "_")


def _merge_aliases(kind: JobKind, values: dict[str, Any]) -> None:
    """Move values given under an alias to the option's own name."""
    by_path = {opt.path: opt for opt in field_options(kind)}
    for flag, path in ALIASES.get(kind, {}).items():
        value, opt = values.pop(_alias_name(flag), None), by_path[path]
        if value is None or (opt.multiple and not value):
            continue
        if values.get(opt.name) not in (None, [], ()):
            raise typer.BadParameter(f"{opt.flag} and {flag} name the same option; give one",
                                     param_hint=_hint(kind, opt))
        values[opt.name] = value


def _hint(kind: JobKind | str, opt: FieldOption) -> str:
    return " / ".join(f"'{f}'" for f in option_flags(kind, opt))


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def _nested_default(model: type[BaseModel], path: tuple[str, ...]) -> dict[str, Any]:
    """What a nested field holds when not given, as a dict to lay options over (train's dataset: the train split)."""
    for part in path[:-1]:
        model = _strip(model.model_fields[part].annotation)
    field = model.model_fields[path[-1]]
    default = None if field.is_required() else field.get_default(call_default_factory=True)
    return default.model_dump(mode="json", exclude_defaults=True) if isinstance(default, BaseModel) else {}


def params_dict(kind: JobKind | str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Option values (by parameter name) -> the nested params dict, not yet validated.

    Only options given appear (None and an empty repeatable count as not given); a nested model
    given any option starts from the field's own default, so `train --dataset-limit 8` keeps the
    train split. JSON options are parsed here; bad JSON is a usage error naming the option.
    """
    kind = JobKind(kind)
    model = PARAMS_BY_KIND[kind]
    out: dict[str, Any] = {}
    for opt in field_options(kind):
        value = values.get(opt.name)
        if value is None or (opt.multiple and not value):
            continue
        if opt.is_json:
            try:
                value = json.loads(value) if isinstance(value, str) else value
            except json.JSONDecodeError as exc:
                raise typer.BadParameter(f"not valid JSON: {exc}", param_hint=_hint(kind, opt)) from None
        elif opt.multiple:
            value = [_plain(v) for v in value]
        else:
            value = _plain(value)
        node = out
        for depth, part in enumerate(opt.path[:-1], start=1):
            node = node.setdefault(part, _nested_default(model, opt.path[:depth]))
        node[opt.path[-1]] = value
    return out


def build_params(kind: JobKind | str, values: Mapping[str, Any]) -> Params:
    """Option values -> the kind's validated params; an invalid value is a usage error naming its option."""
    kind = JobKind(kind)
    raw = params_dict(kind, values)
    try:
        return PARAMS_BY_KIND[kind].model_validate(raw)
    except ValidationError as exc:
        raise _usage_error(kind, exc) from None


def _usage_error(kind: JobKind, exc: ValidationError) -> typer.BadParameter:
    by_path = {opt.path: opt for opt in field_options(kind)}
    problems: list[tuple[str, str]] = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        opt = next((by_path[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in by_path), None)
        where = _hint(kind, opt) if opt else (f"'{'.'.join(loc)}'" if loc else "the parameters")
        problems.append((where, str(err["msg"]).removeprefix("Value error, ")))
    if len(problems) == 1:
        return typer.BadParameter(problems[0][1], param_hint=problems[0][0])
    return typer.BadParameter("".join(f"\n  {where}: {message}" for where, message in problems))


def params_json(params: Params) -> dict[str, Any]:
    """What is sent to the API: the validated params, only the fields given (the server fills the rest)."""
    return params.model_dump(mode="json", exclude_unset=True)


_SOURCE_SCHEMES = ("hf:", "dataset:", "artifact:", "root:")


def local_dataset_files(kind: JobKind | str, values: Mapping[str, Any]) -> dict[str, Path]:
    """The dataset-source options whose value is a file on this machine: uploaded before the job is submitted.

    A value that looks like a path but names no file is a usage error (the server never reads paths).
    """
    out: dict[str, Path] = {}
    for opt in field_options(kind):
        value = values.get(opt.name)
        if opt.owner is not DatasetRef or opt.path[-1] != "source" or not isinstance(value, str):
            continue
        if value == "bundled" or value.startswith(_SOURCE_SCHEMES):
            continue
        path = Path(value).expanduser()
        if path.is_file():
            out[opt.name] = path
        elif "/" in value or "\\" in value or path.suffix:
            raise typer.BadParameter(f"no such file: {value}", param_hint=_hint(kind, opt))
    return out


def _upload(backend: Backend, path: Path, fmt: Any, objective: Any = None) -> str:
    ds = backend.upload_dataset(path, str(_plain(fmt) or DatasetFormat.auto), objective=_plain(objective))
    typer.echo(f"uploaded {path.name}: {ds['n_pairs']} pairs as {ds['source']}", err=True)
    return str(ds["source"])


# ================================================================== running a job


POLL_S = 0.5
"""Seconds between two looks at a running job's progress."""


def wait_for(backend: Backend, job: dict[str, Any], quiet: bool) -> dict[str, Any]:
    """Poll a job to its end, with a progress bar on stderr."""
    from tqdm import tqdm

    bar = None if quiet else tqdm(total=100, desc=f"{job['kind']} {job['id']}", file=sys.stderr,
                                  bar_format="{l_bar}{bar}| {n:.0f}% {postfix}")
    try:
        while job["status"] in ("queued", "running"):
            time.sleep(POLL_S)
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


def _wait_or_detach(backend: Backend, job: dict[str, Any]) -> dict[str, Any]:
    try:
        return wait_for(backend, job, quiet=False)
    except KeyboardInterrupt:
        typer.echo(f"\njob {job['id']} goes on; `tension jobs show {job['id']}` follows it, "
                   f"`tension jobs cancel {job['id']}` stops it", err=True)
        raise typer.Exit(130) from None


def _report(backend: Backend, job: dict[str, Any], *, as_json: bool, wait: bool, result_path: str | None) -> None:
    if wait:
        job = _wait_or_detach(backend, job)
    elif isinstance(backend, EmbeddedBackend) and job["status"] in ("queued", "running"):
        typer.echo(f"note: no server answers, so job {job['id']} waits in the queue until `tension serve` runs",
                   err=True)
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


RESULT_PATHS: dict[JobKind, str] = {JobKind.score: "/api/results/{key}/rewards"}
"""Where a finished job's result is read (default: its manifest, /api/results/{key})."""


def run_job(kind: str, params: dict[str, Any], *, url: str | None, as_json: bool, wait: bool,
            result_path: str | None = "/api/results/{key}") -> None:
    """Submit params as they are (the API validates them), then report like every job command."""
    with _session(url) as backend:
        _report(backend, backend.submit(kind, params), as_json=as_json, wait=wait, result_path=result_path)


def _run_kind(kind: JobKind, values: dict[str, Any]) -> None:
    as_json, wait, url = values.pop("as_json"), values.pop("wait"), values.pop("url")
    _merge_aliases(kind, values)
    files = local_dataset_files(kind, values)
    params = build_params(kind, {**values, **dict.fromkeys(files, "bundled")})  # refuse bad options before uploading
    with _session(url) as backend:
        if files:
            for name, path in files.items():
                prefix = name.removesuffix("source")  # the same dataset's --...-format and --...-objective
                values[name] = _upload(backend, path, values.get(prefix + "format"), values.get(prefix + "objective"))
            params = build_params(kind, values)
        job = backend.submit(kind.value, params_json(params))
        _report(backend, job, as_json=as_json, wait=wait,
                result_path=RESULT_PATHS.get(kind, "/api/results/{key}"))


def _escape(text: str) -> str:
    """Help text goes through Rich markup when Typer uses Rich: `[default: 8]` must stay literal."""
    if not getattr(typer.core, "HAS_RICH", False):
        return text
    from rich.markup import escape

    return escape(text)


def _job_command(kind: JobKind) -> Callable[..., None]:
    """The function Typer makes `tension <kind>` from: one keyword parameter per field option."""
    params: list[inspect.Parameter] = []
    for opt in field_options(kind):
        flag = f"{opt.flag}/--no-{opt.flag[2:]}" if opt.type is bool and not opt.multiple else opt.flag
        panel = opt.path[0].replace("_", " ").capitalize() if len(opt.path) > 1 else "Parameters"
        annotation: Any = GenericAlias(list, (opt.type,)) if opt.multiple else opt.type
        if not opt.required:
            annotation = annotation | None
        for name, flags, hidden in ((opt.name, (flag,), False),
                                    *((_alias_name(a), (a,), True) for a in option_flags(kind, opt)[1:])):
            info = typer.Option(... if opt.required and not hidden else None, *flags, help=_escape(opt.help),
                                show_default=False, hidden=hidden, rich_help_panel=panel,
                                metavar="JSON" if opt.is_json else _METAVAR.get(opt.type))
            params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info,
                                            annotation=annotation if not hidden else annotation | None))
    for name, info, annotation in (("wait", JOB_WAIT, bool), ("as_json", JOB_JSON, bool), ("url", JOB_URL, str | None)):
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation))

    def command(**values: Any) -> None:
        _run_kind(kind, values)

    command.__name__ = kind.value
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command


for _kind in PARAMS_BY_KIND:
    _doc = inspect.cleandoc(PARAMS_BY_KIND[_kind].__doc__ or "")
    app.command(_kind.value, help=_escape(_doc), rich_help_panel="Jobs")(_job_command(_kind))


# ================================================================== other commands


@app.command(rich_help_panel="Jobs")
def submit(kind: JobKind = typer.Argument(..., help="job kind"),
           params: str = typer.Argument("{}", help="parameters as JSON"),
           wait: bool = WAIT, as_json: bool = JSON, url: str = URL) -> None:
    """Submit any job kind with JSON parameters, validated by the API."""
    try:
        parsed = json.loads(params)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}", param_hint="'PARAMS'") from None
    if not isinstance(parsed, dict):
        raise typer.BadParameter("a JSON object is needed", param_hint="'PARAMS'")
    run_job(kind.value, parsed, url=url, as_json=as_json, wait=wait,
            result_path=RESULT_PATHS.get(kind, "/api/results/{key}"))


@app.command()
def serve(host: str = typer.Option(None), port: int = typer.Option(None)) -> None:
    """Start the API and UI (embedded default: SQLite, DuckDB file, local worker processes)."""
    import uvicorn

    from app.main import create_app

    settings = get_settings()
    settings = settings.model_copy(update={"host": host or settings.host, "port": port or settings.port})
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info",
                proxy_headers=False)


@app.command()
def migrate() -> None:
    """Apply the metadata (Alembic) and DuckDB schema migrations."""
    from app.core.migrate import upgrade_metadata
    from app.core.store import StatsStore

    s = get_settings()
    s.ensure_dirs()
    rev = upgrade_metadata(s.resolved_database_url)
    store = StatsStore(s.resolved_duckdb_path)
    typer.echo(f"metadata schema {rev}; duckdb schema {store.schema_version}")
    store.close()


@app.command(rich_help_panel="Jobs")
def study(
    preset: str = typer.Option("demo", help="smoke (tiny model, tests), demo (MiniLM, 2 CPU cores) or paper (GPU)"),
    model: str = typer.Option(None, help="a bundled model name or a Hugging Face id (default: the preset's)"),
    seed: list[int] = typer.Option(None, help="training seeds, repeat for several (default: the preset's)"),
    wait: bool = typer.Option(True, help="follow the study's stages until it ends"),
    as_json: bool = JSON,
    url: str = URL,
) -> None:
    """Start (or resume) a whole study: train the three regimes, evaluate, capture, ablate, report.

    Every stage is a cached job, so running the same command again reuses finished work; the study's page is
    /studies/KEY and its report the home page.
    """
    if preset not in ("smoke", "demo", "paper"):
        _fail(f"--preset: {preset!r} is not one of smoke, demo, paper")
    with _session(url) as backend:
        body: dict[str, Any] = {"preset": preset, "model": model, "seeds": list(seed) if seed else None}
        out = backend.post("/api/studies", {k: v for k, v in body.items() if v is not None})
        typer.echo(f"study {out['key']} ({out['preset']}, {out['model']}): {out['url']}", err=True)
        shown: dict[str, str] = {}
        try:
            while wait and out["status"] == "running":
                for st in out["stages"]:
                    line = f"{st['status']} {st['progress']:.0%}"
                    if st["status"] != "waiting" and shown.get(st["name"]) != line:
                        shown[st["name"]] = line
                        wall = f" ({st['wall_s']:.0f} s)" if st.get("wall_s") is not None else ""
                        typer.echo(f"  {st['title']}: {line}{wall}", err=True)
                time.sleep(POLL_S * 4)
                out = backend.get(f"/api/studies/{out['key']}")
        except KeyboardInterrupt:
            typer.echo(f"\nstudy {out['key']} goes on; `tension study` with the same options follows it again",
                       err=True)
            raise typer.Exit(130) from None
    if out["status"] in ("failed", "cancelled"):
        _fail(f"study {out['key']} {out['status']}: {out.get('error')}")
    wall = f" in {out['wall_s']:.0f} s" if out.get("wall_s") is not None else ""
    typer.echo(dumps(out) if as_json else f"study {out['key']} {out['status']}{wall}: {out['url']}")


@jobs_app.command("list")
def jobs_list(status: str = typer.Option(None), kind: str = typer.Option(None), limit: int = 50,
              as_json: bool = JSON, url: str = URL) -> None:
    """The newest jobs, optionally of one status or kind."""
    with _session(url) as backend:
        rows = backend.jobs(status, kind, limit)
    if as_json:
        typer.echo(dumps(rows))
        return
    for j in rows:
        typer.echo(f"{j['id']}  {j['kind']:<9} {j['status']:<10} {100 * j['progress']:5.1f}%  "
                   f"{(j['error'] or j['message'])[:70]}")


def _one(action: str, job_id: str, as_json: bool, url: str | None) -> None:
    with _session(url) as backend:
        job = getattr(backend, action)(job_id)
    typer.echo(dumps(job) if as_json else f"job {job['id']} {job['status']}: {job['error'] or job['message']}")


@jobs_app.command("show")
def jobs_show(job_id: str, as_json: bool = JSON, url: str = URL) -> None:
    """One job: status, progress, error."""
    _one("job", job_id, as_json, url)


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, as_json: bool = JSON, url: str = URL) -> None:
    """Stop a queued or running job."""
    _one("cancel", job_id, as_json, url)


@jobs_app.command("retry")
def jobs_retry(job_id: str, as_json: bool = JSON, url: str = URL) -> None:
    """Run a failed or cancelled job again."""
    _one("retry", job_id, as_json, url)


def _dataset_line(ds: dict[str, Any]) -> str:
    return (f"{ds['source']:<26} {ds['n_pairs']:>8} pairs  {','.join(ds['objectives']):<17} "
            f"{ds['format']:<11} {ds['name']}")


@datasets_app.command("add")
def datasets_add(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="a .jsonl, .json or .parquet"),
    fmt: DatasetFormat = typer.Option(DatasetFormat.auto, "--format", help="layout of the file"),
    name: str = typer.Option(None, help="display name (default: the file's name)"),
    objective: Objective = typer.Option(None, help="objective of records that name none"),
    as_json: bool = JSON,
    url: str = URL,
) -> None:
    """Upload a file of preference pairs (validated line by line); jobs name it `dataset:<id>`."""
    with _session(url) as backend:
        ds = backend.upload_dataset(file, fmt.value, name, objective.value if objective else None)
    typer.echo(dumps(ds) if as_json else _dataset_line(ds))


@datasets_app.command("list")
def datasets_list(as_json: bool = JSON, url: str = URL) -> None:
    """Uploaded datasets, with the `dataset:<id>` source a job names them by."""
    with _session(url) as backend:
        rows = backend.datasets()
    if as_json:
        typer.echo(dumps(rows))
        return
    for ds in rows:
        typer.echo(_dataset_line(ds))


@app.command("export")
def export(checkpoint: str = typer.Argument(..., help="checkpoint id, or a unique prefix of one"),
           directory: Path = typer.Argument(..., help="directory to write: new, or empty"),
           as_json: bool = JSON) -> None:
    """Write a checkpoint as a directory plain `transformers` loads and scores like this product: model,
    tokenizer, README.md (how to score) and tension_export.json (base model, regime, seed). Operator command:
    it reads the metadata database and artifact store of this machine's settings."""
    import os
    import subprocess

    from sqlalchemy import select

    from app.core.db import Checkpoint
    from workers.contract.artifacts import key_of

    target = directory.expanduser().resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise typer.BadParameter(f"{directory} already exists and is not an empty directory", param_hint="'DIRECTORY'")
    settings = get_settings()
    db = _operator_db()
    try:
        with db.session() as s:
            exact = s.get(Checkpoint, checkpoint)
            rows = [exact] if exact is not None else []
            if exact is None and checkpoint:  # a prefix, as pages show ids
                by_prefix = select(Checkpoint).where(Checkpoint.id.startswith(checkpoint, autoescape=True)).limit(2)
                rows = list(s.scalars(by_prefix))
            found = [(r.id, r.path) for r in rows]
    finally:
        db.dispose()
    if len(found) != 1:
        raise typer.BadParameter(f"{checkpoint!r} starts several checkpoint ids; give more of it" if found
                                 else f"unknown checkpoint {checkpoint!r}", param_hint="'CHECKPOINT'")
    ck_id, path = found[0]
    command = [settings.python or sys.executable, "-m", "workers.export", str(target), "--checkpoint", ck_id,
               "--key", key_of(path), "--store", settings.resolved_artifact_store]
    typer.echo(f"exporting checkpoint {ck_id} to {target}", err=True)
    done = subprocess.run(command, capture_output=True, text=True, cwd=str(Path(__file__).resolve().parents[1]),
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"}, check=False)
    if done.returncode != 0:
        errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error: ")]
        _fail(errors[-1].removeprefix("error: ") if errors else
              f"export failed (exit status {done.returncode}):\n{done.stderr[-3000:]}", 2 if errors else 1)
    info = json.loads(done.stdout.strip().splitlines()[-1])
    if as_json:
        typer.echo(dumps(info))
        return
    typer.echo(f"exported {ck_id} ({info['base_model']}, regime {info['regime']}, seed {info['seed']}) to {target}; "
               f"plain transformers matches the product's rewards to {info['verified']['max_abs_diff']:.1e}")


def main() -> None:
    app()


def _operator_db():  # type: ignore[no-untyped-def]
    """The metadata database, migrated: user commands are run by the operator on the server's machine."""
    from app.core.db import Database
    from app.core.migrate import upgrade_metadata

    s = get_settings()
    s.ensure_dirs()
    upgrade_metadata(s.resolved_database_url)
    return Database(s.resolved_database_url)


def _read_password(password_stdin: bool, no_password: bool) -> str | None:
    if no_password:
        return None
    if password_stdin:
        return sys.stdin.readline().rstrip("\n")
    return str(typer.prompt("password (for the browser login)", hide_input=True, confirmation_prompt=True))


@users_app.command("add")
def users_add(name: str = typer.Argument(..., help="user name: letters, digits, '.', '_', '-'"),
              role: str = typer.Option("researcher", help="viewer (read) or researcher (read, launch, upload, "
                                                          "share)"),
              password_stdin: bool = typer.Option(False, "--password-stdin", help="read the password from stdin"),
              no_password: bool = typer.Option(False, "--no-password", help="token only, no browser login"),
              ) -> None:
    """Add a user; prints their API token once (it is stored only hashed)."""
    from app.auth import users
    from app.auth.schemas import Role
    from app.core.errors import AppError

    if role not in {r.value for r in Role}:
        raise typer.BadParameter(f"{role!r}: use one of {', '.join(r.value for r in Role)}", param_hint="'--role'")
    db = _operator_db()
    try:
        _, token = users.add_user(db, name, Role(role), _read_password(password_stdin, no_password))
    except AppError as exc:
        _fail(exc.message)
    finally:
        db.dispose()
    typer.echo(f"user {name} ({role}) added. API token (shown once; send as `Authorization: Bearer ...` or set "
               f"TENSION_TOKEN):\n{token}")


@users_app.command("list")
def users_list(as_json: bool = JSON) -> None:
    """Every user, their role and when their token was made (never the token)."""
    from app.auth import users
    from app.auth.schemas import UserOut

    db = _operator_db()
    try:
        rows = [UserOut(name=u.name, role=u.role, active=u.active, has_password=bool(u.password_hash),  # type: ignore[arg-type]
                        token_created_at=u.token_created_at, created_at=u.created_at) for u in users.list_users(db)]
    finally:
        db.dispose()
    if as_json:
        typer.echo(dumps([r.model_dump(mode="json") for r in rows]))
        return
    for r in rows:
        typer.echo(f"{r.name:<24} {r.role:<11} password={'yes' if r.has_password else 'no ':<3} "
                   f"token made {r.token_created_at:%Y-%m-%d %H:%M}" if r.token_created_at else r.name)


@users_app.command("remove")
def users_remove(name: str) -> None:
    """Remove a user: their token and sessions stop working; what they made stays credited to them."""
    from app.auth import users
    from app.core.errors import AppError

    db = _operator_db()
    try:
        users.remove_user(db, name)
    except AppError as exc:
        _fail(exc.message)
    finally:
        db.dispose()
    typer.echo(f"user {name} removed")


@app.command("token")
def token(name: str = typer.Argument(..., help="the user whose token to rotate"),
          password: bool = typer.Option(False, "--password", help="also set a new password (prompted)")) -> None:
    """Make a new API token for NAME (the old one stops working at once); prints it once."""
    from app.auth import users
    from app.core.errors import AppError

    db = _operator_db()
    try:
        new = users.rotate_token(db, name)
        if password:
            users.set_password(db, name, str(typer.prompt("new password", hide_input=True, confirmation_prompt=True)))
    except AppError as exc:
        _fail(exc.message)
    finally:
        db.dispose()
    typer.echo(f"new API token for {name} (shown once; the old one no longer works):\n{new}")


if __name__ == "__main__":
    main()
