"""The train job end to end through the runner, and the checkpoint it leaves behind."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from workers.contract.artifacts import ResultManifest
from workers.contract.jobs import JobSpec
from workers.contract.version import code_version
from workers.contract.vocab import JobKind
from workers.data.loaders import write_pairs_jsonl
from workers.data.text import pair_texts
from workers.models.registry import load_reward_model
from workers.models.scoring import score_texts
from workers.runner import run
from workers.storage import ArtifactStore

pytestmark = pytest.mark.usefixtures("one_thread")


def _spec(tmp_path: Path, data: str, key: str = "ckpt-mixed-0", **params: Any) -> JobSpec:
    base = {"model": "tiny-gpt2", "regime": "mixed", "preset": "custom", "seed": 0,
            "dataset": {"source": data}, "learning_rate": 1e-2, "epochs": 2, "max_length": 48}
    base.update(params)
    return JobSpec.model_validate({
        "job_id": f"job-{key}", "kind": JobKind.train, "params": base, "result_key": key, "device": "cpu",
        "code_version": code_version(), "store_url": str(tmp_path / "artifacts"), "output": f"jobs/{key}"})


@pytest.fixture
def data_file(tmp_path: Path, pairs_factory: Any) -> str:
    """The pairs as an artifact of the store (where the API puts uploads); returns its URI."""
    path = tmp_path / "pairs.jsonl"
    write_pairs_jsonl(pairs_factory(32) + pairs_factory(4, seed=9, split="test"), path)
    ArtifactStore(tmp_path / "artifacts").put_file(path, "datasets/pairs.jsonl")
    return "artifact:datasets/pairs.jsonl"


def test_train_job_writes_manifest_checkpoint_and_history(tmp_path: Path, data_file: str) -> None:
    spec = _spec(tmp_path, data_file)
    manifest = run(spec)
    out = tmp_path / "artifacts" / spec.output
    assert ResultManifest.model_validate_json((out / "manifest.json").read_text()) == manifest
    assert manifest.checkpoint == spec.result_key and manifest.kind == JobKind.train
    (table,) = manifest.tables
    history = pq.read_table(tmp_path / "artifacts" / table.key)
    assert table.table == "training_history" and table.rows == history.num_rows > 0
    assert history.column_names == ["checkpoint", "step", "epoch", "train_loss", "train_acc", "eval_loss",
                                    "eval_acc"]
    assert set(history.column("checkpoint").to_pylist()) == {spec.result_key}
    s = manifest.summary
    assert (s["regime"], s["model"], s["seed"], s["preset"]) == ("mixed", "tiny-gpt2", 0, "custom")
    assert s["n_train"] + s["n_eval"] == 64  # only the train split was loaded (the 8 test pairs stay out)
    assert s["final_eval_loss"] < 0.5 and s["settings"]["learning_rate"] == 1e-2 and s["wall_s"] > 0

    ckpt = tmp_path / "artifacts" / "checkpoints" / spec.result_key
    assert sorted(p.name for p in ckpt.parent.iterdir()) == [spec.result_key]  # no temp dirs left behind
    meta = json.loads((ckpt / "meta.json").read_text())
    got = (meta["base_model"], meta["regime"], meta["seed"], meta["preset"])
    assert got == ("tiny-gpt2", "mixed", 0, "custom")
    assert meta["settings"]["max_length"] == 48 and len(meta["data_revision"]) == 16
    assert json.loads((out / "progress.json").read_text())["fraction"] == 1.0


def test_checkpoint_reloads_with_the_same_rewards(tmp_path: Path, pairs_factory: Any) -> None:
    from workers.jobs.train import save_checkpoint_atomic
    from workers.training.presets import PRESETS
    from workers.training.trainer import train_reward_model

    loaded = load_reward_model("tiny-llama", device="cpu", seed=3)
    pairs = pairs_factory(16)
    settings = replace(PRESETS["custom"], epochs=1.0, max_length=48)
    train_reward_model(loaded, pairs, settings, regime="harmless", seed=3)
    texts = [t for p in pairs for t in pair_texts(p)]
    before = score_texts(loaded, texts, max_length=48)
    final = tmp_path / "artifacts" / "checkpoints" / "k"
    store = ArtifactStore(tmp_path / "artifacts")
    save_checkpoint_atomic(loaded, store, "k", {"regime": "harmless", "seed": 3})
    save_checkpoint_atomic(loaded, store, "k", {"regime": "harmless", "seed": 3})  # same key again: kept whole
    assert sorted(p.name for p in final.parent.iterdir()) == ["k"]
    again = load_reward_model("ignored", checkpoint_dir=final, device="cpu")
    assert again.name == "tiny-llama"
    np.testing.assert_allclose(score_texts(again, texts, max_length=48), before, atol=1e-5)


def test_train_job_rejects_bad_params_before_loading_anything(tmp_path: Path, data_file: str) -> None:
    with pytest.raises(ValueError, match="learning_rate"):
        run(_spec(tmp_path, data_file, learning_rate=0.0))
    assert not (tmp_path / "artifacts" / "checkpoints").exists()
