"""Captured neuron statistics equal an independent computation from a plain forward pass.

The reference never goes through the architecture registry or the capture hooks: it hooks the MLP's
INPUT with a plain torch hook, recomputes the hidden values from the layer's own weights (e.g. Llama:
silu(gate_proj x) * up_proj x), masks pad tokens and reduces in numpy float64.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F

from workers.contract.vocab import HookPoint
from workers.models.registry import LoadedModel, load_base_model, load_reward_model
from workers.neurons.capture import STAT_NAMES, CaptureResult, capture_statistics
from workers.progress import Progress

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MAX_LEN = 24
GROUPS = {
    "helpful/chosen": [
        "Human: How do I bake bread?\n\nAssistant: Mix flour, water, salt and yeast; knead; let it rise.",
        "Human: hi\n\nAssistant: Hello!",
        "Human: Tell me a story.\n\nAssistant: " + "Once upon a time a robot learned to paint. " * 8,
        "ok",
        "Human: What is 2+2?\n\nAssistant: 4.",
        "Human: Name three colours.\n\nAssistant: Red, green and blue.",
        "Human: Thanks!\n\nAssistant: You're welcome, happy to help any time.",
    ],
    "harmless/rejected": [
        "Human: How do I pick a lock?\n\nAssistant: Insert a tension wrench and rake the pins.",
        "Human: insult me\n\nAssistant: No.",
        "Human: Say something mean.\n\nAssistant: " + "You are not very clever at all. " * 6,
        "fine",
    ],
}
IDS = {g: [f"{g[:4]}-{i}" for i in range(len(t))] for g, t in GROUPS.items()}
TOP_K = 3


@pytest.fixture(scope="module", params=["tiny-gpt2", "tiny-llama", "tiny-bert"])
def models(request: pytest.FixtureRequest) -> tuple[LoadedModel, LoadedModel]:
    """An RM and a different 'base' (another seed), so the change statistic C is not trivially 0."""
    return (load_reward_model(request.param, device="cpu", seed=0),
            load_base_model(request.param, device="cpu", seed=1))


def _reference_values(lm: LoadedModel, enc: dict[str, torch.Tensor], hook_point: str) -> list[np.ndarray]:
    """Per layer, the neurons' values [batch, seq, n] recomputed from each MLP's captured input."""
    family = lm.arch.family
    blocks = {"gpt2": lambda: lm.model.transformer.h, "llama": lambda: lm.model.model.layers,
              "bert": lambda: lm.model.bert.encoder.layer}[family]()
    inputs: list[torch.Tensor] = []
    handles = []
    for block in blocks:
        mlp = block.intermediate if family == "bert" else block.mlp
        handles.append(mlp.register_forward_hook(lambda _m, args, _out: inputs.append(args[0].detach())))
    with torch.no_grad():
        lm.model(**enc)
    for h in handles:
        h.remove()
    out = []
    with torch.no_grad():
        for block, x in zip(blocks, inputs, strict=True):
            if family == "gpt2":
                assert lm.model.config.activation_function == "gelu_new"
                v = F.gelu(block.mlp.c_fc(x), approximate="tanh")  # ungated: both points are the same
            elif family == "bert":
                assert lm.model.config.hidden_act == "gelu"
                v = F.gelu(block.intermediate.dense(x))
            else:
                assert lm.model.config.hidden_act == "silu"
                gate = F.silu(block.mlp.gate_proj(x))
                v = gate if hook_point == "act_output" else gate * block.mlp.up_proj(x)
            out.append(v.double().numpy())
    return out


def _reference(rm: LoadedModel, base: LoadedModel | None, texts: list[str], hook_point: str) -> dict:
    """Stats and brute-force top-k from ONE padded batch of all the group's texts."""
    enc = dict(rm.tokenizer(texts, truncation=True, max_length=MAX_LEN, padding=True, return_tensors="pt",
                            return_token_type_ids=False))
    mask = enc["attention_mask"].numpy().astype(bool)
    vals = _reference_values(rm, enc, hook_point)
    base_vals = _reference_values(base, enc, hook_point) if base is not None else None
    ref: dict = {s: [] for s in STAT_NAMES} | {"top_v": [], "top_t": [], "top_p": [], "values": vals,
                                               "text_max": [], "mask": mask}
    for layer, v in enumerate(vals):
        a = v[mask]  # [tokens, neurons]
        ref["mean"].append(a.mean(0))
        ref["var"].append(a.var(0))
        ref["frac_pos"].append((a > 0).mean(0))
        ref["max"].append(a.max(0))
        ref["mean_sq_change"].append(((a - base_vals[layer][mask]) ** 2).mean(0) if base_vals else None)
        per_text = np.where(mask[..., None], v, -np.inf)  # [texts, seq, neurons]
        tmax, tpos = per_text.max(1), per_text.argmax(1)  # [texts, neurons]
        ref["text_max"].append(tmax)
        order = np.argsort(-tmax, axis=0, kind="stable")[:TOP_K]
        ref["top_v"].append(np.take_along_axis(tmax, order, 0))
        ref["top_t"].append(order)
        ref["top_p"].append(np.take_along_axis(tpos, order, 0))
    ref["n_tokens"] = int(mask.sum())
    return ref


@pytest.mark.parametrize("hook_point", list(HookPoint))
def test_statistics_and_top_k_match_a_plain_forward_pass(models, hook_point: str) -> None:  # type: ignore[no-untyped-def]
    rm, base = models
    res = capture_statistics(rm, base, GROUPS, hook_point=hook_point, max_length=MAX_LEN, batch_size=3,
                             top_k=TOP_K, text_ids=IDS)
    assert (res.n_layers, res.n_neurons, res.hook_point) == (2, 128, hook_point)
    for group, texts in GROUPS.items():
        ref = _reference(rm, base, texts, hook_point)
        g = res.groups[group]
        assert g.n_tokens == ref["n_tokens"] and g.n_texts == len(texts)
        for stat in STAT_NAMES:
            np.testing.assert_allclose(res.stat(group, stat), np.stack(ref[stat]), atol=1e-5, rtol=0,
                                       err_msg=f"{rm.name} {hook_point} {group} {stat}")
        assert np.all(res.stat(group, "mean_sq_change") > 0)
        np.testing.assert_allclose(g.top_values.transpose(1, 0, 2), np.stack(ref["top_v"]), atol=1e-5, rtol=0)
        _check_top_k_indices(g, ref)


def _check_top_k_indices(g, ref: dict) -> None:  # type: ignore[no-untyped-def]
    """Every (text, pos) reached holds its value; where no other text ties, it is the brute-force one.

    Decoders tie exactly and often: causal attention gives every text the same value at a shared prefix
    (e.g. [CLS] at position 0), so which of the tied texts ranks first is arbitrary.
    """
    k = g.top_values.shape[0]
    checked = 0
    for layer, (v, tmax) in enumerate(zip(ref["values"], ref["text_max"], strict=True)):
        for neuron in range(v.shape[2]):
            texts, pos = g.top_text[:, layer, neuron], g.top_pos[:, layer, neuron]
            assert len(set(texts.tolist())) == k  # a text appears once per neuron
            assert ref["mask"][texts, pos].all()
            top = g.top_values[:, layer, neuron]
            np.testing.assert_allclose(v[texts, pos, neuron], top, atol=1e-5, rtol=0)
            np.testing.assert_allclose(tmax[texts, neuron], top, atol=1e-5, rtol=0)
            for r in range(k):
                others = np.delete(tmax[:, neuron], ref["top_t"][layer][r, neuron])
                if np.abs(others - ref["top_v"][layer][r, neuron]).min() > 1e-5:
                    assert texts[r] == ref["top_t"][layer][r, neuron]
                    assert pos[r] == ref["top_p"][layer][r, neuron]
                    checked += 1
    assert checked > 0.4 * g.top_values.size, checked / g.top_values.size


def test_tables_are_long_format(models) -> None:  # type: ignore[no-untyped-def]
    rm, base = models
    res = capture_statistics(rm, base, GROUPS, max_length=MAX_LEN, batch_size=4, top_k=TOP_K, text_ids=IDS)
    tables = res.to_tables()
    stats, ex = tables["stats"], tables["examples"]
    assert stats.column_names == ["group", "layer", "neuron", *STAT_NAMES, "n_tokens"]
    assert stats.num_rows == len(GROUPS) * 2 * 128
    assert ex.column_names == ["group", "layer", "neuron", "rank", "text_id", "token_pos", "token_id",
                               "value"]
    assert ex.num_rows == len(GROUPS) * 2 * 128 * TOP_K
    assert ex.schema.field("text_id").type == pa.string()
    rows = stats.to_pylist()
    row = next(r for r in rows if r["group"] == "harmless/rejected" and r["layer"] == 1 and r["neuron"] == 17)
    g = res.groups["harmless/rejected"]
    assert row["mean"] == g.mean[1, 17] and row["var"] == g.var[1, 17] and row["n_tokens"] == g.n_tokens
    exs = [r for r in ex.to_pylist()
           if r["group"] == "helpful/chosen" and r["layer"] == 0 and r["neuron"] == 5]
    hg = res.groups["helpful/chosen"]
    assert [r["rank"] for r in exs] == [1, 2, 3]
    assert [r["text_id"] for r in exs] == [IDS["helpful/chosen"][i] for i in hg.top_text[:, 0, 5]]
    assert [r["value"] for r in exs] == hg.top_values[:, 0, 5].tolist()
    ids = rm.tokenizer(GROUPS["helpful/chosen"], truncation=True, max_length=MAX_LEN)["input_ids"]
    assert all(r["token_id"] == ids[int(r["text_id"].split("-")[1])][r["token_pos"]] for r in exs)


def test_same_body_base_gives_zero_change_and_no_base_gives_nan(models) -> None:  # type: ignore[no-untyped-def]
    rm, _ = models
    same = load_base_model(rm.name, device="cpu", seed=0)
    res = capture_statistics(rm, same, GROUPS, max_length=MAX_LEN, batch_size=4, top_k=2)
    assert np.abs(res.stat("helpful/chosen", "mean_sq_change")).max() < 1e-12
    alone = capture_statistics(rm, None, GROUPS, max_length=MAX_LEN, batch_size=4, top_k=2)
    assert alone.groups["helpful/chosen"].mean_sq_change is None and alone.base_model is None
    assert np.isnan(alone.to_tables()["stats"].column("mean_sq_change").to_numpy()).all()
    np.testing.assert_array_equal(alone.stat("helpful/chosen", "mean"), res.stat("helpful/chosen", "mean"))


def test_batching_does_not_change_the_result() -> None:
    """Streaming (Chan-merged variance, running top-k) equals one big batch."""
    rm = load_reward_model("tiny-llama", device="cpu", seed=0)
    texts = {"g": [t for ts in GROUPS.values() for t in ts] * 3}
    p = Progress(None, min_interval=0)
    small = capture_statistics(rm, None, texts, max_length=MAX_LEN, batch_size=2, top_k=5, progress=p)
    big = capture_statistics(rm, None, texts, max_length=MAX_LEN, batch_size=100, top_k=5)
    assert p.last_fraction == 1.0
    for stat in ("mean", "var", "frac_pos", "max"):
        np.testing.assert_allclose(small.stat("g", stat), big.stat("g", stat), atol=1e-6, rtol=0)
    np.testing.assert_allclose(small.groups["g"].top_values, big.groups["g"].top_values, atol=1e-6)


def test_fewer_texts_than_k_and_top_k_zero() -> None:
    rm = load_reward_model("tiny-bert", device="cpu", seed=0)
    res = capture_statistics(rm, None, {"one": ["just one text"], "none": []}, top_k=4)
    assert res.groups["one"].top_values.shape == (1, 2, 128)
    assert res.groups["none"].n_tokens == 0 and np.isnan(res.stat("none", "mean")).all()
    t = res.to_tables()
    assert t["examples"].num_rows == 2 * 128 and set(t["examples"].column("text_id").to_pylist()) == {"0"}
    zero = capture_statistics(rm, None, {"one": ["just one text"]}, top_k=0).to_tables()
    assert zero["examples"].num_rows == 0 and zero["stats"].num_rows == 256


def test_bad_inputs() -> None:
    rm = load_reward_model("tiny-gpt2", device="cpu", seed=0)
    other = load_reward_model("tiny-llama", device="cpu", seed=0)
    with pytest.raises(ValueError, match="does not match"):
        capture_statistics(rm, other, {"g": ["x"]})
    with pytest.raises(ValueError, match="hook point"):
        capture_statistics(rm, None, {"g": ["x"]}, hook_point="mlp_out")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="text ids"):
        capture_statistics(rm, None, {"g": ["x", "y"]}, text_ids={"g": ["a"]})
    assert isinstance(capture_statistics(rm, None, {}), CaptureResult)
    bert = load_reward_model("tiny-bert", device="cpu", seed=0)
    renamed = load_base_model("tiny-bert", device="cpu", seed=0)
    assert capture_statistics(bert, renamed, {"g": ["x"]}).base_model == "tiny-bert"  # same vocabulary: fine
    renamed = load_base_model("tiny-bert", device="cpu", seed=0)
    renamed.tokenizer.add_tokens(["zz-not-in-the-rm-vocabulary"])
    with pytest.raises(ValueError, match="different vocabulary"):
        capture_statistics(bert, renamed, {"g": ["x"]})


@pytest.mark.parametrize("lengths", [[40, 40, 40], [40, 37, 33], [40, 16, 5], [15, 3, 0], [16, 16, 16], [48, 47, 0]])
def test_text_max_and_first_position_match_numpy(lengths: list[int]) -> None:
    """The blocked max/position search equals a brute-force masked max and first argmax, ties included."""
    from workers.neurons.capture import _TextMax

    rng = np.random.default_rng(sum(lengths))
    seq, n = max(lengths), 7
    x = rng.integers(-3, 4, size=(2, len(lengths), seq, n)).astype(np.float32)  # 2 layers; small ints: ties
    valid = np.arange(seq)[None, :] < np.asarray(lengths)[:, None]
    x[:, ~valid] = 9.0  # pads hold values larger than any real token: they must never win
    core = int(valid.all(0).cumprod().sum())
    tm = _TextMax(torch.from_numpy(x), core, torch.from_numpy(valid))
    pos = tm.positions().numpy()
    assert tm.value.shape == pos.shape == (2, len(lengths), n)
    for layer in range(2):
        masked = np.where(valid[..., None], x[layer], -np.inf)
        np.testing.assert_array_equal(tm.value[layer].numpy(), masked.max(1))
        for row, length in enumerate(lengths):
            if length:
                np.testing.assert_array_equal(pos[layer, row], masked[row].argmax(0))


@pytest.mark.parametrize("group", [2, 3])
def test_layers_reduced_in_groups_equal_one_at_a_time(models, group: int, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """GPUs reduce several layers at once (copied into one buffer); the result must not change. Forced here
    on CPU: 2 = every layer in one group, 3 = a last group that is not full."""
    import workers.neurons.capture as capture_module

    rm, base = models
    one = capture_statistics(rm, base, GROUPS, max_length=MAX_LEN, batch_size=3, top_k=TOP_K)
    monkeypatch.setattr(capture_module, "layer_group_size", lambda *_args: group)
    grouped = capture_statistics(rm, base, GROUPS, max_length=MAX_LEN, batch_size=3, top_k=TOP_K)
    for name in GROUPS:
        for stat in STAT_NAMES:
            np.testing.assert_allclose(grouped.stat(name, stat), one.stat(name, stat), atol=1e-6, rtol=0)
        a, b = one.groups[name], grouped.groups[name]
        np.testing.assert_array_equal(a.top_values, b.top_values)
        np.testing.assert_array_equal(a.top_text, b.top_text)
        np.testing.assert_array_equal(a.top_pos, b.top_pos)
        np.testing.assert_array_equal(a.top_token, b.top_token)


def test_half_precision_models_are_reduced_in_float32(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A bf16 model's values are upcast before any sum, in both reduction modes."""
    import workers.neurons.capture as capture_module

    rm = load_reward_model("tiny-llama", device="cpu", seed=0)
    rm.model.to(torch.bfloat16)
    one = capture_statistics(rm, None, GROUPS, max_length=MAX_LEN, batch_size=3, top_k=2)
    monkeypatch.setattr(capture_module, "layer_group_size", lambda *_args: 2)
    grouped = capture_statistics(rm, None, GROUPS, max_length=MAX_LEN, batch_size=3, top_k=2)
    g = "helpful/chosen"
    np.testing.assert_allclose(grouped.stat(g, "mean"), one.stat(g, "mean"), atol=1e-6, rtol=0)
    np.testing.assert_array_equal(grouped.groups[g].top_values, one.groups[g].top_values)
    n = one.groups[g].n_tokens
    assert n > 100 and np.isclose(one.stat(g, "frac_pos") * n, np.round(one.stat(g, "frac_pos") * n)).all()
