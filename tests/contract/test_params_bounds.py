"""Every number in every params model is bounded and finite; dataset sources and model names never name a path.

Walks the params models themselves, so a field added later without bounds fails here rather than in a
worker: every float refuses NaN and both infinities, every integer refuses 2**70 and -2**70.
"""

from __future__ import annotations

import math
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from workers.contract.jobs import PARAMS_BY_KIND, AblateParams, DatasetRef, check_source
from workers.contract.live import LiveSessionConfig, LiveToggleRequest
from workers.contract.vocab import JobKind
from workers.models.names import UnknownModelError, check_model_name

REQUIRED: dict[JobKind, dict[str, Any]] = {
    JobKind.evaluate: {"checkpoints": ["c"]}, JobKind.capture: {"checkpoint": "c"}, JobKind.ablate: {"checkpoint": "c"}}


def _scalars(annotation: Any) -> set[type]:
    """int / float reachable in an annotation, through Optional, list and Annotated (not into models)."""
    if annotation in (int, float):
        return {annotation}
    return {t for arg in typing.get_args(annotation) for t in _scalars(arg)}


def _numeric_fields(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], type, bool]]:
    """(path, int or float, is a list) of every numeric field, nested models included."""
    out = []
    for name, f in model.model_fields.items():
        ann = f.annotation
        nested = [a for a in (ann, *typing.get_args(ann)) if isinstance(a, type) and issubclass(a, BaseModel)
                  and a.__name__ != "NeuronIndexSet"]
        if nested:
            out += _numeric_fields(nested[0], (*prefix, name))
            continue
        is_list = typing.get_origin(ann) is list or any(typing.get_origin(a) is list for a in typing.get_args(ann))
        for t in _scalars(ann):
            out.append(((*prefix, name), t, is_list))
    return out


def _params(kind: JobKind, path: tuple[str, ...], value: Any) -> dict[str, Any]:
    data: dict[str, Any] = dict(REQUIRED.get(kind, {}))
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return data


CASES = [(kind, path, t, is_list) for kind, model in PARAMS_BY_KIND.items()
         for path, t, is_list in _numeric_fields(model)]


def test_the_walk_finds_the_numbers() -> None:
    found = {(k, ".".join(p)) for k, p, _, _ in CASES}
    assert {(JobKind.train, "learning_rate"), (JobKind.ablate, "scale"), (JobKind.ablate, "percents"),
            (JobKind.score, "dataset.limit"), (JobKind.ablate, "random_seeds"),
            (JobKind.ablate, "limit_per_objective")} <= found


@pytest.mark.parametrize(("kind", "path", "t", "is_list"), CASES, ids=[f"{c[0]}.{'.'.join(c[1])}" for c in CASES])
def test_every_number_is_finite_and_bounded(kind: JobKind, path: tuple[str, ...], t: type, is_list: bool) -> None:
    model = PARAMS_BY_KIND[kind]
    bad: list[Any] = [2**70, -(2**70)] + ([math.nan, math.inf, -math.inf] if t is float else [])
    for value in bad:
        with pytest.raises(ValidationError) as info:
            model.model_validate(_params(kind, path, [value] if is_list else value))
        assert ".".join(path) in str(info.value)


def test_live_messages_refuse_nan() -> None:
    with pytest.raises(ValidationError):
        LiveToggleRequest.model_validate({"neurons": {"0": [1]}, "factor": math.nan})
    with pytest.raises(ValidationError):
        LiveSessionConfig.model_validate({"store_url": "memory://x", "checkpoint": "c" * 65})


@pytest.mark.parametrize("source", [
    "bundled", "hf:Anthropic/hh-rlhf", "hf:Anthropic/hh-rlhf/helpful-base", "dataset:0123abcd",
    "artifact:datasets/0123abcd.jsonl", "root:0/a.jsonl", "root:shared-data/sub/dir/b.json.gz",
])
def test_accepted_sources(source: str) -> None:
    assert DatasetRef(source=source).source == source


@pytest.mark.parametrize("source", [
    "/var/lib/tension/meta.db", "var/meta.db", "meta.db", "./x.jsonl", "~/x.jsonl", "file:///etc/passwd",
    "sqlite:////x/meta.db", "hf:../etc", "hf:a/../../etc", "hf:/etc/passwd", "hf:a", "hf:a/b c",
    "dataset:../x", "artifact:/etc/passwd", "artifact:../x", "root:0/../x.jsonl", "root:0//etc/passwd",
    "root:0/a/./b.jsonl", "root:../x.jsonl", "root:0", "root:0/", "root:0/a\\..\\b.jsonl", "root:0/a\0.jsonl",
    "root:/etc/passwd",
])
def test_refused_sources(source: str) -> None:
    with pytest.raises(ValidationError):
        DatasetRef(source=source)
    with pytest.raises(ValueError):
        check_source(source)


def test_ablate_inputs_are_only_the_apis_arrays() -> None:
    ok = AblateParams(checkpoint="c", inputs="artifact:inputs/0123456789abcdef01234567.npz")
    assert ok.inputs is not None
    for uri in ("artifact:datasets/0123456789abcdef.jsonl", "artifact:jobs/x/manifest.json", "/tmp/x.npz",
                "artifact:inputs/../x.npz", "inputs/abcdef0123.npz"):
        with pytest.raises(ValidationError):
            AblateParams(checkpoint="c", inputs=uri)
    assert sorted(AblateParams.SERVER_FIELDS) == ["harmless_checkpoint", "helpful_checkpoint", "inputs"]


def test_model_names_from_requests_stay_inside_the_roots(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "rm").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (root / "link").symlink_to(tmp_path / "outside")
    roots = [root]
    assert check_model_name("tiny-bert", local_roots=roots) == "registered"
    assert check_model_name("openai-community/gpt2", local_roots=roots) == "hub"
    assert check_model_name(str(root / "rm"), local_roots=roots) == "local"
    for name in (str(tmp_path / "outside"), str(root / "link"), str(root), str(root / "rm" / ".." / "rm"), "/etc",
                 "~", "workers/models", "../x", "rm", str(root / "missing")):
        with pytest.raises(UnknownModelError):
            check_model_name(name, local_roots=roots)
        with pytest.raises(UnknownModelError):
            check_model_name(name, local_roots=[])
    assert check_model_name(str(tmp_path / "outside")) == "local"  # a worker, given a spec, may load any dir
