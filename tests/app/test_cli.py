"""`tension`: job commands generated from the params models, held against them; option errors; uploads; hints.

Everything but the last test runs without a server and without torch: the commands are driven
through Typer's CliRunner against a fake backend that records what would have been submitted.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shlex
import subprocess
import sys
from enum import Enum
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
import typer
from pydantic import BaseModel, RootModel
from typer.testing import CliRunner

import app.cli as cli
from workers.contract.jobs import PARAMS_BY_KIND
from workers.contract.vocab import JobKind, Objective, Regime

ROOT = Path(__file__).resolve().parents[2]
KINDS = [k.value for k in PARAMS_BY_KIND]
COMMON = {"wait", "as_json", "url", "help"}
WIDE = {"COLUMNS": "200", "TERMINAL_WIDTH": "200", "NO_COLOR": "1"}
runner = CliRunner()


def invoke(*args: str) -> Any:
    return runner.invoke(cli.app, list(args), env=WIDE)


class FakeBackend:
    """Records submissions and uploads; every job runs queued -> running -> succeeded."""

    def __init__(self) -> None:
        self.submitted: list[tuple[str, dict[str, Any]]] = []
        self.uploads: list[tuple[Path, str]] = []
        self.posted: list[tuple[str, dict[str, Any]]] = []
        self.polls = 0
        self.closed = False

    def _job(self, status: str, progress: float) -> dict[str, Any]:
        kind, params = self.submitted[-1]
        return {"id": "j1", "kind": kind, "params": params, "status": status, "progress": progress,
                "message": status, "result_key": "k1", "error": None, "cached": False}

    def submit(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        self.submitted.append((kind, params))
        return self._job("queued", 0.0)

    def job(self, job_id: str) -> dict[str, Any]:
        self.polls += 1
        return self._job("running", 0.5) if self.polls == 1 else self._job("succeeded", 1.0)

    def get(self, path: str) -> dict[str, Any]:
        if path.startswith("/api/studies/"):
            self.polls += 1
            return self._study("running" if self.polls == 1 else "succeeded")
        return {"path": path, "summary": {"n": 1}}

    def _study(self, status: str) -> dict[str, Any]:
        stage = {"name": "train", "title": "Train the three regimes", "status": status, "progress": 0.5,
                 "wall_s": 3.0}
        return {"key": "abc", "preset": self.posted[-1][1]["preset"], "model": "tiny-bert", "status": status,
                "stages": [stage], "url": "http://localhost:8000/studies/abc", "wall_s": 12.0, "error": None}

    def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        self.posted.append((path, body or {}))
        return self._study("running")

    def upload_dataset(self, path: Path, fmt: str = "auto", name: str | None = None,
                       objective: str | None = None) -> dict[str, Any]:
        self.uploads.append((path, fmt))
        return {"id": "abc123", "name": path.name, "format": fmt, "n_pairs": 3, "objectives": ["helpful"],
                "subsets": ["mine"], "source": "dataset:abc123"}

    def datasets(self) -> list[dict[str, Any]]:
        return []

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> FakeBackend:
    fake = FakeBackend()
    monkeypatch.setattr(cli, "connect", lambda settings, url=None: fake)
    monkeypatch.setattr(cli, "POLL_S", 0.0)
    return fake


@pytest.fixture
def no_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """A command that must fail on its options never gets as far as the API."""

    def refuse(settings: Any, url: Any = None) -> Any:
        raise AssertionError("reached the API")

    monkeypatch.setattr(cli, "connect", refuse)


# ================================================================ options held against the params models


def _strip(tp: Any) -> Any:
    while get_origin(tp) in (Annotated, Union, UnionType):
        tp = next(a for a in get_args(tp) if a is not type(None))
    return tp


def _leaves(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Every field a person sets, by path (nested models flattened), with its field info."""
    out: dict[tuple[str, ...], Any] = {}
    for name, field in model.model_fields.items():
        if name in cli.API_FILLED.get(model, ()):
            continue
        tp = _strip(field.annotation)
        if inspect.isclass(tp) and issubclass(tp, BaseModel) and not issubclass(tp, RootModel):
            out |= _leaves(tp, (*prefix, name))
        else:
            out[(*prefix, name)] = field
    return out


def _command(kind: str) -> Any:
    return typer.main.get_command(cli.app).commands[kind]  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", KINDS)
def test_every_field_has_an_option_and_every_option_a_field(kind: str) -> None:
    fields = _leaves(PARAMS_BY_KIND[JobKind(kind)])
    generated = {opt.name: opt for opt in cli.field_options(kind)}
    seen: set[tuple[str, ...]] = set()
    for param in _command(kind).params:
        if param.name in COMMON:
            continue
        if param.name.startswith("alias__"):
            path = cli.ALIASES[JobKind(kind)][param.opts[0]]
            assert param.hidden and path in fields, param.opts
            continue
        path = tuple(param.name.split("__"))
        assert path in fields, f"option {param.opts[0]} of `tension {kind}` maps to no params field"
        seen.add(path)
        field = fields[path]
        assert param.opts[0] == "--" + "-".join(path).replace("_", "-")
        assert param.required == (field.is_required() and len(path) == 1)
        assert (field.description or "") in param.help.replace("\\", "")
        tp = _strip(field.annotation)
        if get_origin(tp) is list:
            assert param.multiple, f"{param.opts[0]} should be repeatable"
            tp = _strip(get_args(tp)[0])
        if inspect.isclass(tp) and issubclass(tp, Enum):
            assert generated[param.name].type is tp, f"{param.opts[0]} should be a choice of {tp.__name__}"
    assert seen == set(fields), f"`tension {kind}` has no option for {sorted(set(fields) - seen)}"


def test_api_filled_fields_exist_and_have_no_option() -> None:
    for model, names in cli.API_FILLED.items():
        assert names <= set(model.model_fields), f"{model.__name__} no longer has {names - set(model.model_fields)}"
        kind = next(k for k, m in PARAMS_BY_KIND.items() if m is model)
        assert not {p.name for p in _command(kind.value).params} & names


@pytest.mark.parametrize("kind", KINDS)
def test_help_lists_the_options(kind: str) -> None:
    result = invoke(kind, "--help")
    assert result.exit_code == 0, result.output
    for opt in cli.field_options(kind):
        assert opt.flag in result.output, f"`tension {kind} --help` does not list {opt.flag}"
    for flag in ("--json", "--no-wait", "--url"):
        assert flag in result.output


# ================================================================ the pure builder


def test_builder_lays_options_over_the_nested_default() -> None:
    values = {"regime": Regime.helpful, "seed": 3, "dataset__limit": 8, "learning_rate": None,
              "dataset__objectives": [Objective.harmless], "dataset__subsets": []}
    assert cli.params_dict("train", values) == {"regime": "helpful", "seed": 3,
                                                "dataset": {"split": "train", "limit": 8, "objectives": ["harmless"]}}
    params = cli.build_params("train", values)
    assert params.dataset.split == "train" and params.dataset.limit == 8  # type: ignore[attr-defined]
    assert cli.params_json(params) == {"regime": "helpful", "seed": 3,
                                       "dataset": {"split": "train", "limit": 8, "objectives": ["harmless"]}}


def test_builder_parses_json_and_lists_and_leaves_out_what_was_not_given() -> None:
    assert cli.params_dict("score", {}) == {}
    assert cli.params_json(cli.build_params("score", {"model": None, "dataset__source": None})) == {}
    params = cli.build_params("ablate", {"checkpoint": "ck1", "neuron_set": '{"3": [2, 1, 2], "0": []}',
                                         "percents": (5.0, 10.0), "random_seeds": [7], "experiment": "single"})
    assert cli.params_json(params) == {"checkpoint": "ck1", "experiment": "single", "neuron_set": {"3": [1, 2]},
                                       "percents": [5.0, 10.0], "random_seeds": [7]}
    assert cli.params_dict("evaluate", {"checkpoints": ["a", "b"], "dataset__source": "hf:org/pairs"}) == {
        "checkpoints": ["a", "b"], "dataset": {"source": "hf:org/pairs"}}


@pytest.mark.parametrize(("kind", "values", "flag"), [
    ("train", {"max_length": 3}, "'--max-length'"),
    ("score", {"dataset__limit": 0}, "'--dataset-limit'"),
    ("capture", {"checkpoint": "c", "dataset__source": "/srv/data.jsonl"}, "'--dataset-source'"),
    ("ablate", {"checkpoint": "c", "neuron_set": "{not json"}, "'--neuron-set'"),
    ("ablate", {"checkpoint": "c", "neuron_set": '{"-1": [0]}'}, "'--neuron-set'"),
])
def test_builder_names_the_option_of_a_bad_value(kind: str, values: dict[str, Any], flag: str) -> None:
    with pytest.raises(typer.BadParameter) as err:
        cli.build_params(kind, values)
    assert flag in err.value.format_message()


# ================================================================ commands: errors, submission, upload, submit


@pytest.mark.parametrize(("args", "flag"), [
    (["train", "--regime", "nonsense"], "--regime"),
    (["train", "--max-length", "3"], "--max-length"),
    (["train", "--max-length", "3", "--eval-fraction", "2"], "--eval-fraction"),
    (["score", "--limit", "0"], "--dataset-limit"),
    (["evaluate"], "--checkpoints"),
    (["ablate", "--checkpoint", "c", "--neuron-set", "{not json"], "--neuron-set"),
    (["capture", "--checkpoint", "c", "--dataset-source", "./no_such_pairs.jsonl"], "--dataset-source"),
    (["submit", "train", "{not json"], "PARAMS"),
    (["submit", "nonsense", "{}"], "kind"),
])
def test_a_bad_value_exits_2_naming_the_option(no_backend: None, args: list[str], flag: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert flag in result.output and "Traceback" not in result.output


def test_options_are_submitted_as_params_with_progress_and_json(backend: FakeBackend) -> None:
    result = invoke("train", "--model", "tiny-gpt2", "--regime", "harmless", "--epochs", "0.5",
                    "--dataset-objectives", "helpful", "--dataset-objectives", "harmless", "--dataset-limit", "4",
                    "--json")
    assert result.exit_code == 0, result.output
    assert backend.submitted == [("train", {"model": "tiny-gpt2", "regime": "harmless", "epochs": 0.5, "dataset": {
        "split": "train", "objectives": ["helpful", "harmless"], "limit": 4}})]
    out = json.loads(result.stdout)
    assert out["job"]["status"] == "succeeded" and out["result"]["path"] == "/api/results/k1"
    assert "100%" in result.stderr and backend.closed


def test_score_keeps_its_old_option_names(backend: FakeBackend) -> None:
    result = invoke("score", "--model", "tiny-bert", "--limit", "16", "--objective", "helpful", "--split", "all")
    assert result.exit_code == 0, result.output
    assert backend.submitted == [("score", {"model": "tiny-bert", "dataset": {
        "limit": 16, "objectives": ["helpful"], "split": "all"}})]
    assert "job j1 succeeded" in result.stdout


def test_a_local_file_is_uploaded_and_named_by_its_dataset_id(backend: FakeBackend, tmp_path: Path) -> None:
    pairs = tmp_path / "my_pairs.jsonl"
    pairs.write_text('{"pair_id": "p1"}\n')
    result = invoke("score", "--dataset-source", str(pairs), "--dataset-format", "canonical", "--no-wait", "--json")
    assert result.exit_code == 0, result.output
    assert backend.uploads == [(pairs, "canonical")]
    assert backend.submitted == [("score", {"dataset": {"source": "dataset:abc123", "format": "canonical"}})]
    assert json.loads(result.stdout)["job"]["status"] == "queued" and backend.polls == 0


def test_bad_options_are_refused_before_a_file_is_uploaded(backend: FakeBackend, tmp_path: Path) -> None:
    pairs = tmp_path / "my_pairs.jsonl"
    pairs.write_text("{}\n")
    result = invoke("score", "--dataset-source", str(pairs), "--max-length", "3")
    assert result.exit_code == 2 and backend.uploads == [] and backend.submitted == []


def test_submit_still_takes_json(backend: FakeBackend) -> None:
    result = invoke("submit", "ablate", '{"checkpoint": "c", "experiment": "A"}', "--no-wait")
    assert result.exit_code == 0, result.output
    assert backend.submitted == [("ablate", {"checkpoint": "c", "experiment": "A"})]


def test_datasets_add_uploads_with_its_format(backend: FakeBackend, tmp_path: Path) -> None:
    pairs = tmp_path / "hh.jsonl"
    pairs.write_text("{}\n")
    result = invoke("datasets", "add", str(pairs), "--format", "hh-rlhf", "--json")
    assert result.exit_code == 0, result.output
    assert backend.uploads == [(pairs, "hh-rlhf")] and json.loads(result.stdout)["source"] == "dataset:abc123"
    assert invoke("datasets", "list").exit_code == 0


# ================================================================ every `tension ...` named anywhere exists


def _mentions() -> list[tuple[str, str, str | None]]:
    """(file, command, subcommand) for backticked `tension ...` in app/ and README, and README's shell lines."""
    found = []
    files = [*sorted((ROOT / "app").rglob("*.py")), ROOT / "README.md"]
    for f in files:
        text = f.read_text()
        patterns = [r"`tension ([a-z][\w-]*)(?: ([a-z][\w-]*))?"]
        if f.suffix == ".md":
            patterns.append(r"^tension ([a-z][\w-]*)(?: ([a-z][\w-]*))?")
        for pattern in patterns:
            for m in re.finditer(pattern, text, re.M):
                found.append((str(f.relative_to(ROOT)), m.group(1), m.group(2)))
    return found


def test_every_tension_command_mentioned_exists() -> None:
    group = typer.main.get_command(cli.app)
    mentions = _mentions()
    assert len(mentions) > 5
    for where, name, sub in mentions:
        command = group.commands.get(name)  # type: ignore[attr-defined]
        assert command is not None, f"{where} names `tension {name}`, which does not exist"
        if sub is not None and hasattr(command, "commands"):
            assert sub in command.commands, f"{where} names `tension {name} {sub}`, which does not exist"


def _readme_job_lines() -> list[str]:
    section = (ROOT / "README.md").read_text().split("## The command line", 1)[1].split("\n## ", 1)[0]
    lines = [ln.split("  #", 1)[0].strip() for ln in section.splitlines() if ln.startswith("tension ")]
    return [ln for ln in lines if ln.split()[1] in {*KINDS, "submit"} and "./" not in ln]


@pytest.mark.parametrize("line", _readme_job_lines())
def test_readme_job_examples_are_accepted(backend: FakeBackend, line: str) -> None:
    result = invoke(*shlex.split(line)[1:])
    assert result.exit_code == 0, result.output
    assert len(backend.submitted) == 1


def test_importing_the_cli_loads_neither_torch_nor_the_services() -> None:
    code = ("import sys, app.cli; "
            "print(','.join(m for m in ('torch', 'transformers', 'duckdb', 'app.main') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == ""


# ================================================================ end to end, embedded (no server answers)


@pytest.mark.slow
def test_score_embedded_end_to_end(tmp_path: Path) -> None:
    env = {**os.environ, "TENSION_PORT": "1", "TENSION_DATA_DIR": str(tmp_path / "var"), "TENSION_DEVICE": "cpu",
           "TENSION_URL": ""}
    out = subprocess.run([sys.executable, "-m", "app.cli", "score", "--model", "tiny-gpt2", "--dataset-limit", "2",
                          "--max-length", "32", "--json"], capture_output=True, text=True, cwd=ROOT, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    data = json.loads(out.stdout)
    assert data["job"]["status"] == "succeeded"
    assert data["job"]["params"]["dataset"]["limit"] == 2
    assert len(data["result"]["rows"]) == 2 * 2 * 2  # pairs per objective x objectives x sides
    assert "100%" in out.stderr


# ================================================================ the study command


def test_study_posts_the_preset_and_seeds_and_follows_the_stages(backend: FakeBackend,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli.time, "sleep", lambda s: None)
    result = invoke("study", "--preset", "smoke", "--seed", "1", "--seed", "2")
    assert result.exit_code == 0, result.output
    assert backend.posted == [("/api/studies", {"preset": "smoke", "seeds": [1, 2]})]
    assert "study abc succeeded in 12 s: http://localhost:8000/studies/abc" in result.output
    assert "Train the three regimes: running 50% (3 s)" in result.output


def test_study_refuses_an_unknown_preset_by_name(no_backend: None) -> None:
    result = invoke("study", "--preset", "huge")
    assert result.exit_code != 0 and "--preset: 'huge' is not one of smoke, demo, paper" in result.output
