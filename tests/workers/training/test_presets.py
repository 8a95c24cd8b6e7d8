"""Presets carry the paper's recipe and a CPU demo; request fields override them one by one."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest

from workers.contract.jobs import DatasetRef, TrainParams
from workers.jobs.train import training_dataset_ref
from workers.training.presets import PRESETS, resolve_settings


def test_paper_preset_is_the_method_recipe() -> None:
    p = PRESETS["paper"]
    assert (p.learning_rate, p.lr_scheduler, p.warmup_ratio, p.weight_decay) == (1e-4, "linear", 0.0, 0.0)
    assert (p.epochs, p.batch_size, p.max_length, p.truncation) == (2.0, 16, 1024, "drop")
    assert p.bf16 and p.append_eos and p.freeze_layers == 0 and p.max_pairs_per_objective is None


def test_demo_preset_is_cpu_sized() -> None:
    """What bench/results/train.md chose: one epoch of up to 1,000 pairs per objective at 128 tokens, nothing
    frozen, two evaluations and none at step 0, bf16 autocast where the CPU has it natively."""
    d = PRESETS["demo"]
    assert d.max_length <= 128 and d.truncation == "left" and d.epochs == 1.0
    assert d.max_pairs_per_objective is not None and d.max_pairs_per_objective <= 1000
    assert d.freeze_layers == 0 and not d.eval_on_start and d.evals_per_epoch <= 2 and d.cpu_bf16


def test_bf16_on_a_cpu_only_when_asked_and_native() -> None:
    from types import SimpleNamespace

    from workers.training.trainer import _device_flags, cpu_has_native_bf16

    cpu = SimpleNamespace(device="cpu")
    assert _device_flags(cpu) == (True, False)  # type: ignore[arg-type]
    assert _device_flags(cpu, cpu_bf16=True) == (True, cpu_has_native_bf16())  # type: ignore[arg-type]
    assert not PRESETS["paper"].cpu_bf16 and not PRESETS["custom"].cpu_bf16 and not PRESETS["smoke"].cpu_bf16


def test_overrides_win_over_the_preset() -> None:
    s = resolve_settings(TrainParams(preset="demo", learning_rate=2e-4, epochs=0.5, batch_size=8,
                                     max_length=64, freeze_layers=0, eval_fraction=0.2))
    got = (s.preset, s.learning_rate, s.epochs, s.batch_size, s.max_length, s.freeze_layers, s.eval_fraction)
    assert got == ("demo", 2e-4, 0.5, 8, 64, 0, 0.2)
    assert resolve_settings(TrainParams(preset="paper")) == replace(PRESETS["paper"], eval_fraction=0.1)


@pytest.mark.parametrize("field,value", [("learning_rate", -1.0), ("epochs", 0.0), ("batch_size", 0),
                                         ("max_length", 4), ("freeze_layers", -1), ("eval_fraction", 1.0)])
def test_invalid_settings_are_refused_before_any_model_loads(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        resolve_settings(TrainParams(**{field: value}))


def test_dataset_ref_defaults_to_train_split_regime_objectives_and_preset_cap() -> None:
    params = TrainParams.model_validate({"regime": "harmless", "preset": "demo",
                                         "dataset": {"source": "bundled"}})
    ref = training_dataset_ref(params, resolve_settings(params))
    assert ref.split == "train"  # DatasetRef alone would default to 'test'
    assert ref.objectives == ["harmless"]
    assert ref.limit == PRESETS["demo"].max_pairs_per_objective


def test_dataset_ref_keeps_what_the_request_named() -> None:
    params = TrainParams(regime="mixed", preset="demo", dataset=DatasetRef(split="test", limit=7))
    ref = training_dataset_ref(params, resolve_settings(params))
    assert (ref.split, ref.limit, ref.objectives) == ("test", 7, ["helpful", "harmless"])
    assert training_dataset_ref(TrainParams(preset="paper"), PRESETS["paper"]).limit is None


def test_regime_without_its_objective_is_an_error() -> None:
    params = TrainParams(regime="helpful", dataset=DatasetRef(split="train", objectives=["harmless"]))
    with pytest.raises(ValueError, match="helpful"):
        training_dataset_ref(params, resolve_settings(params))


def test_presets_and_job_validation_do_not_import_torch() -> None:
    code = ("import sys, workers.training.presets, workers.jobs.train; "
            "print(','.join(m for m in ('torch', 'transformers', 'trl') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
