"""Capture job: stream an RM's data through it (and its base model), keep per-neuron statistics only."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from workers.contract.artifacts import ResultManifest
from workers.contract.jobs import CaptureParams
from workers.contract.results import NeuronExampleRow, NeuronStatRow
from workers.contract.vocab import Side
from workers.data.text import pair_texts
from workers.jobs.io import JobIO
from workers.progress import Progress

CONTEXT_BEFORE_CHARS, CONTEXT_AFTER_CHARS = 160, 60


def _token_windows(loaded: Any, texts: dict[str, str], examples: list[dict[str, Any]], max_length: int) -> None:
    """Slice the ORIGINAL text around each example's token (by the tokenizer's character offsets), so
    the page shows what the dataset holds, not a lower-cased re-decoding of word pieces."""
    from workers.models.scoring import effective_max_length, tokenize

    limit = effective_max_length(loaded, max_length)
    cache: dict[str, tuple[list[int], list[tuple[int, int]] | None]] = {}
    for ex in examples:
        tid = ex["text_id"]
        if tid not in cache:
            ids = tokenize(loaded, [texts[tid]], max_length)[0].tolist()
            offsets = None
            try:
                enc = loaded.tokenizer(texts[tid], truncation=True, max_length=limit, return_offsets_mapping=True,
                                       return_attention_mask=False, return_token_type_ids=False)
                if list(enc["input_ids"]) == ids:
                    offsets = [tuple(o) for o in enc["offset_mapping"]]
            except (NotImplementedError, ValueError, TypeError):
                offsets = None
            cache[tid] = (ids, offsets)
        ids, offsets = cache[tid]
        pos = int(ex["token_pos"])
        text = texts[tid]
        if offsets is not None and pos < len(offsets) and offsets[pos][1] > offsets[pos][0]:
            a, b = offsets[pos]
            ex["text_before"] = text[max(0, a - CONTEXT_BEFORE_CHARS):a]
            ex["token"], ex["text_after"] = text[a:b], text[b:b + CONTEXT_AFTER_CHARS]
        else:  # special tokens ([CLS], EOS) have no characters; show their decoded form
            tok = loaded.tokenizer
            ex["text_before"] = tok.decode(ids[max(0, pos - 24):pos])
            ex["token"] = tok.decode(ids[pos:pos + 1]) if pos < len(ids) else ""
            ex["text_after"] = tok.decode(ids[pos + 1:pos + 9])


def _prepare_live_table(job: JobIO, checkpoint: str, rm: Any, hook: Any) -> dict[str, Any]:
    """The live estimator table on the default probe set (`workers.live.prepare_table`), so no dashboard
    waits for its build; a failure here costs only that wait later, never the capture."""
    import time
    import traceback

    from workers.live import prepare_table

    started = time.perf_counter()
    try:
        key, built = prepare_table(job.store, checkpoint, rm, hook)
    except Exception as exc:
        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"key": key, "built": built, "seconds": round(time.perf_counter() - started, 3)}


def run(job: JobIO, progress: Progress) -> ResultManifest:
    from workers.models.registry import load_base_model, load_reward_model
    from workers.neurons.capture import capture_statistics

    params = job.spec.typed(CaptureParams)
    device = job.spec.device
    meta = job.checkpoint_meta(params.checkpoint)
    base_name = params.base_model or meta["base_model"]
    pairs = job.pairs(params.dataset)
    groups: dict[str, list[str]] = defaultdict(list)
    ids: dict[str, list[str]] = defaultdict(list)
    texts: dict[str, str] = {}
    for p in pairs:
        for side, text in zip((Side.chosen, Side.rejected), pair_texts(p), strict=True):
            g = f"{p.objective}/{side}"
            tid = f"{p.pair_id}/{side}"
            groups[g].append(text)
            ids[g].append(tid)
            texts[tid] = text
    progress.update(0.02, f"loading {meta['regime']} RM and base {base_name}", force=True)
    ck_dir = job.checkpoint_dir(params.checkpoint)
    rm = load_reward_model(meta["base_model"], checkpoint_dir=str(ck_dir), device=device)
    base = load_base_model(base_name, device=device, seed=meta["seed"]) if base_name else None
    result = capture_statistics(rm, base, dict(groups), hook_point=params.hook, max_length=params.max_length,
                                batch_size=params.batch_size, top_k=params.top_k_examples, text_ids=dict(ids),
                                progress=progress.sub(0.05, 0.9))
    tables_by_name = result.to_tables()
    stats_t, examples_t = tables_by_name["stats"], tables_by_name["examples"]
    common = {"checkpoint": params.checkpoint, "base_model": meta["base_model"], "regime": meta["regime"],
              "hook": params.hook}
    stats = stats_t.to_pylist()
    for row in stats:
        row["objective"], row["side"] = row.pop("group").split("/")
        row.update(common)
    examples = examples_t.to_pylist()
    progress.update(0.92, "decoding top examples", force=True)
    _token_windows(rm, texts, examples, params.max_length)
    for ex in examples:
        ex["objective"], ex["side"] = ex.pop("group").split("/")
        ex["pair_id"] = ex.pop("text_id").rsplit("/", 1)[0]
        ex["checkpoint"] = params.checkpoint
        ex.pop("token_id", None)
    progress.update(0.95, "preparing this RM's live estimator (the dashboard's instant estimates)", force=True)
    live_table = _prepare_live_table(job, params.checkpoint, rm, params.hook)
    tables = [job.write_table(NeuronStatRow, stats)]
    if examples:
        tables.append(job.write_table(NeuronExampleRow, examples))
    summary = {"checkpoint": params.checkpoint, "regime": meta["regime"], "base_model": base_name,
               "hook": params.hook, "n_pairs": len(pairs), "groups": {g: len(t) for g, t in groups.items()},
               "n_neuron_rows": len(stats), "live_estimator": live_table}
    return job.manifest(tables, summary)
