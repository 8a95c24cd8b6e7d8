"""Job params are fully typed, specs carry no local paths, result keys cover the worker code."""

from __future__ import annotations

import typing
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from workers.contract.jobs import PARAMS_BY_KIND, AblateParams, DatasetRef, JobSpec, NeuronIndexSet, result_key
from workers.contract.version import code_version
from workers.contract.vocab import JobKind


def _free_form(annotation: Any, seen: set[type]) -> list[str]:
    """Every `Any` (a free-form dict value included) reachable from a params annotation."""
    if annotation is Any:
        return ["Any"]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation in seen:
            return []
        seen.add(annotation)
        return [f"{annotation.__name__}.{n}: {p}" for n, f in annotation.model_fields.items()
                for p in _free_form(f.annotation, seen)]
    return [p for arg in typing.get_args(annotation) for p in _free_form(arg, seen)]


@pytest.mark.parametrize("kind", list(JobKind))
def test_no_free_form_field_in_any_params_model(kind: JobKind) -> None:
    assert _free_form(PARAMS_BY_KIND[kind], set()) == []


def test_the_checker_sees_a_free_form_dict() -> None:
    class Loose(BaseModel):
        extra: dict[str, Any]

    assert _free_form(Loose, set()) == ["Loose.extra: Any"]


@pytest.mark.parametrize("source", ["/etc/passwd", "var/meta.db", "./x.jsonl", "file:///x", "s3://b/k",
                                    "artifact:/abs", "artifact:a/../b", "dataset:../../x", "hf: spaced id"])
def test_dataset_sources_are_never_paths(source: str) -> None:
    with pytest.raises(ValidationError, match="source"):
        DatasetRef(source=source)


def test_neuron_sets_are_validated_once() -> None:
    assert NeuronIndexSet.model_validate({"3": [5, 1, 1], "0": []}).layers == {3: [1, 5]}
    for bad in ({"-1": [0]}, {"0": [-2]}, {"x": [1]}, {"0": [1e999]}, {"0": ["a"]}, {"99999": [0]}):
        with pytest.raises(ValidationError):
            NeuronIndexSet.model_validate(bad)
    with pytest.raises(ValueError, match="out of range: the model has 2 layers"):
        NeuronIndexSet.model_validate({"2": [0]}).check_shape(2, 16)


def test_spec_params_are_typed_by_kind_and_round_trip() -> None:
    spec = JobSpec.model_validate({"job_id": "j", "kind": "ablate", "result_key": "k", "code_version": "c",
                                   "store_url": "memory://s", "output": "jobs/j",
                                   "params": {"checkpoint": "ck", "neuron_set": {"1": [2]}, "scale": 0.5}})
    assert isinstance(spec.params, AblateParams) and spec.params.neuron_set is not None
    again = JobSpec.model_validate_json(spec.model_dump_json())
    assert again == spec and isinstance(again.params, AblateParams)
    with pytest.raises(ValidationError):
        JobSpec.model_validate({**spec.model_dump(), "params": {"checkpoint": "ck", "extra": {"x": 1}}})
    with pytest.raises(ValidationError):
        JobSpec.model_validate({**spec.model_dump(), "output": "/abs/path"})


def test_result_key_changes_with_the_worker_code() -> None:
    params = {"model": "tiny-gpt2"}
    assert result_key("score", params, "rev", "code-a") != result_key("score", params, "rev", "code-b")
    assert result_key("score", params, "rev", "code-a") == result_key("score", params, "rev", "code-a")
    assert len(code_version()) == 16 and code_version() == code_version()


def test_code_version_is_a_hash_of_the_worker_sources(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from workers.contract import version

    copy = tmp_path / "workers"
    shutil.copytree(version.WORKERS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__", "bundled"))
    monkeypatch.setattr(version, "WORKERS_DIR", copy)
    version.code_version.cache_clear()
    try:
        before = version.code_version()
        (copy / "neurons" / "selection.py").write_text((copy / "neurons" / "selection.py").read_text() + "\n# x\n")
        version.code_version.cache_clear()
        assert version.code_version() != before
    finally:
        version.code_version.cache_clear()
