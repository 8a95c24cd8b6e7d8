"""`workers.export` and `tension export`: an exported checkpoint scores with plain `transformers` exactly as
the product scores it, for an encoder (BERT) and two decoders (GPT-2, Llama); what is refused, and how.

Checkpoints are made the way the train job saves them (`save_checkpoint_atomic` into an artifact store),
from a seeded tiny model whose weights are nudged as a stand-in for fine-tuning.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from typer.testing import CliRunner

from workers.contract.artifacts import checkpoint_key
from workers.data.text import format_text
from workers.export import EXPORT_META, ExportError, export_checkpoint, main
from workers.jobs.train import save_checkpoint_atomic
from workers.models.registry import LoadedModel, load_reward_model
from workers.models.scoring import score_texts
from workers.storage import ArtifactStore

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

FAMILIES = ["tiny-bert", "tiny-gpt2", "tiny-llama"]
MAX_LENGTH = 48
#: Preference pairs of different lengths; the last chosen text is longer than MAX_LENGTH (left truncation).
PAIRS = [
    ("How do I bake bread?", "Mix flour, water, salt and yeast, knead, let it rise, bake.", "No idea."),
    ("hi", "Hello!", "Go away, I am busy with something much more important than you."),
    ("\n\nHuman: Tell me a story.\n\nAssistant: About what?\n\nHuman: A robot.",
     "Once upon a time there was a small robot who liked bread. " * 6, "No."),
]
TEXTS = [format_text(p, r) for p, c, rj in PAIRS for r in (c, rj)]


pytestmark = pytest.mark.usefixtures("one_thread")


def fine_tuned(name: str, seed: int = 3) -> LoadedModel:
    """A tiny RM whose body and head moved away from their seeded init, as training moves them."""
    loaded = load_reward_model(name, device="cpu", seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in loaded.model.named_parameters():
            scale = 50.0 if pname.startswith(("score", "classifier")) else 1.0
            p.mul_(scale).add_(0.02 * torch.randn(p.shape, generator=gen))
    return loaded


def save_like_training(store: ArtifactStore, name: str, checkpoint: str, seed: int = 3) -> Path:
    meta = {"checkpoint": checkpoint, "base_model": name, "regime": "helpful", "seed": seed, "preset": "custom",
            "settings": {"max_length": MAX_LENGTH, "truncation": "left"}}
    save_checkpoint_atomic(fine_tuned(name, seed), store, checkpoint, meta)
    return store.local_dir(checkpoint_key(checkpoint))


def product_rewards(checkpoint_dir: Path, texts: list[str] = TEXTS) -> np.ndarray:
    """What a score or evaluate job computes for these texts."""
    loaded = load_reward_model("ignored", checkpoint_dir=checkpoint_dir, device="cpu")
    return score_texts(loaded, texts, max_length=MAX_LENGTH, batch_size=4)


def plain_rewards(directory: Path, texts: list[str] = TEXTS, **call: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """What someone with only `transformers` computes: defaults everywhere, one padded batch."""
    tok = AutoTokenizer.from_pretrained(str(directory))
    model = AutoModelForSequenceClassification.from_pretrained(str(directory)).eval()
    enc = tok(texts, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt", **call)
    with torch.no_grad():
        return model(**enc).logits[:, 0].numpy(), dict(enc)


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


# ================================================================ the round trip


@pytest.mark.parametrize("name", FAMILIES)
def test_export_scores_like_the_product(name: str, store: ArtifactStore, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = save_like_training(store, name, f"ck-{name}")
    out = tmp_path / "export"
    assert main([str(out), "--store", store.url, "--checkpoint", f"ck-{name}"]) == 0
    printed = json.loads(capsys.readouterr().out)

    expected = product_rewards(ckpt)
    got, enc = plain_rewards(out)
    assert enc["attention_mask"].shape[0] == len(TEXTS) and not bool(enc["attention_mask"].all())  # padded
    assert int(enc["attention_mask"].sum(1).max()) == MAX_LENGTH  # one text was truncated
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(got[0::2] - got[1::2], expected[0::2] - expected[1::2], atol=1e-5)
    one_by_one = np.concatenate([plain_rewards(out, [t])[0] for t in TEXTS])
    np.testing.assert_allclose(one_by_one, expected, atol=1e-5)  # padding does not move a reward
    assert np.ptp(expected) > 1e-2  # the rewards differ, so equality means something

    info = json.loads((out / EXPORT_META).read_text())
    assert info == {**printed, "training": info["training"]}
    assert (info["checkpoint"], info["base_model"], info["regime"], info["seed"]) == (f"ck-{name}", name, "helpful", 3)
    assert info["max_length"] == MAX_LENGTH and info["text_format"]["chat_template"] is False
    assert info["verified"]["max_abs_diff"] <= 1e-5
    readme = (out / "README.md").read_text()
    assert name in readme and "no chat template" in readme and f"max_length={MAX_LENGTH}" in readme
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_saved_decoder_tokenizer_emits_no_token_type_ids(name: str, store: ArtifactStore) -> None:
    """The bug of issue 11: the tiny decoders share MiniLM's BERT tokenizer, whose saved config made plain
    `AutoTokenizer` emit token_type_ids, and GPT-2 adds their embedding (wte[0]) to every position."""
    ckpt = save_like_training(store, name, f"ck-{name}")
    tok = AutoTokenizer.from_pretrained(str(ckpt))
    assert "token_type_ids" not in tok(TEXTS[0])
    assert (tok.padding_side, tok.truncation_side) == ("right", "left")
    config = json.loads((ckpt / "config.json").read_text())
    assert config["pad_token_id"] == tok.pad_token_id is not None

    expected = product_rewards(ckpt)
    got, enc = plain_rewards(ckpt)  # the checkpoint itself, not only an export, loads right
    np.testing.assert_allclose(got, expected, atol=1e-5)
    if name == "tiny-gpt2":  # what the test guards against: GPT-2 given zero token_type_ids scores differently
        model = AutoModelForSequenceClassification.from_pretrained(str(ckpt)).eval()
        with torch.no_grad():
            typed = model(**enc, token_type_ids=torch.zeros_like(enc["input_ids"])).logits[:, 0].numpy()
        assert np.abs(typed - expected).max() > 1e-3


def test_a_checkpoint_saved_before_the_fix_exports_right(store: ArtifactStore, tmp_path: Path) -> None:
    ckpt = save_like_training(store, "tiny-gpt2", "old")
    config_file = ckpt / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    del config["model_input_names"]  # as checkpoints were saved before
    config_file.write_text(json.dumps(config))
    assert "token_type_ids" in AutoTokenizer.from_pretrained(str(ckpt))(TEXTS[0])

    export_checkpoint(ckpt, tmp_path / "export", checkpoint_id="old")
    got, enc = plain_rewards(tmp_path / "export")
    assert "token_type_ids" not in enc
    np.testing.assert_allclose(got, product_rewards(ckpt), atol=1e-5)


# ================================================================ refusals


def test_export_refuses_a_non_empty_directory_and_takes_an_empty_one(store: ArtifactStore, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = save_like_training(store, "tiny-llama", "ck")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    assert main([str(full), "--checkpoint-dir", str(ckpt)]) == 2
    assert "not an empty directory" in capsys.readouterr().err
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    with pytest.raises(ExportError, match="not an empty directory"):
        export_checkpoint(ckpt, full)

    empty = tmp_path / "empty"
    empty.mkdir()
    export_checkpoint(ckpt, empty)
    assert (empty / "config.json").is_file() and (empty / "tokenizer_config.json").is_file()


def test_export_refuses_a_checkpoint_not_in_the_store(store: ArtifactStore, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "out"), "--store", store.url, "--checkpoint", "nope"]) == 2
    assert "'nope' is not in the artifact store" in capsys.readouterr().err
    with pytest.raises(ExportError, match="no saved model"):
        export_checkpoint(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ================================================================ `tension export`


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from app.core.settings import get_settings

    monkeypatch.setenv("TENSION_DATA_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    yield tmp_path / "var"
    get_settings.cache_clear()


def _record(checkpoint: str, base_model: str = "tiny-gpt2") -> None:
    """The checkpoint row a finished train job leaves in the metadata database."""
    from app.core.db import Checkpoint, Database
    from app.core.migrate import upgrade_metadata
    from app.core.settings import get_settings

    s = get_settings()
    s.ensure_dirs()
    upgrade_metadata(s.resolved_database_url)
    db = Database(s.resolved_database_url)
    try:
        with db.session() as session:
            session.add(Checkpoint(id=checkpoint, base_model=base_model, regime="helpful", seed=3, preset="custom",
                                   meta={}, path=f"artifact:{checkpoint_key(checkpoint)}"))
    finally:
        db.dispose()


def _tension(*args: str) -> Any:
    from app import cli

    return CliRunner().invoke(cli.app, ["export", *args], env={"COLUMNS": "200", "NO_COLOR": "1"})


def test_cli_refuses_an_unknown_checkpoint_naming_it(data_dir: Path, tmp_path: Path) -> None:
    result = _tension("no-such-ck", str(tmp_path / "out"))
    assert result.exit_code == 2 and "unknown checkpoint 'no-such-ck'" in result.output
    _record("abc111")
    _record("abc222")
    result = _tension("abc", str(tmp_path / "out"))
    assert result.exit_code == 2 and "'abc' starts several checkpoint ids" in result.output
    assert not (tmp_path / "out").exists()


def test_cli_refuses_a_non_empty_directory(data_dir: Path, tmp_path: Path) -> None:
    _record("abc111")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("")
    result = _tension("abc111", str(tmp_path / "out"))
    assert result.exit_code == 2 and "not an empty directory" in result.output
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["x"]


def test_cli_exports_a_recorded_checkpoint_by_its_prefix(data_dir: Path, tmp_path: Path) -> None:
    from app.core.settings import get_settings

    ckpt = save_like_training(get_settings().artifact_store_client(), "tiny-gpt2", "abc111")
    _record("abc111")
    result = _tension("abc1", str(tmp_path / "out"), "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert (info["checkpoint"], info["base_model"], info["seed"]) == ("abc111", "tiny-gpt2", 3)
    np.testing.assert_allclose(plain_rewards(tmp_path / "out")[0], product_rewards(ckpt), atol=1e-5)
