"""Build the bundled demo data from the real public files.

Run: `python -m workers.data.build_bundled --shared ../shared/data`.

Helpful pairs: RM-Bench chat, code, safety-response. Harmless pairs: HH-RLHF harmless-base (test file)
and RM-Bench safety-refuse. RM-Bench in 'aligned' mode (3 pairs a prompt, each its own item).
Train/test is 80/20 by a stable hash of the prompt, so no prompt is in both splits.
The output is byte-for-byte reproducible.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
from collections import Counter
from pathlib import Path

from workers.data.loaders import BUNDLED_FILE, TEST_FRACTION, load_pairs_file, write_pairs_jsonl
from workers.data.schema import SPLITS, SUBSET_TYPE, PreferencePair

RM_BENCH = ("chat", "code", "safety-response", "safety-refuse")
HH_FILE = "hh-rlhf/harmless-base-test.jsonl.gz"

RM_BENCH_CITATION = """\
@article{liu2024rmbench,
  title   = {RM-Bench: Benchmarking Reward Models of Language Models with Subtlety and Style},
  author  = {Liu, Yantao and Yao, Zijun and Min, Rui and Cao, Yixin and Hou, Lei and Li, Juanzi},
  journal = {arXiv preprint arXiv:2410.16184},
  year    = {2024}
}"""


def collect(shared: Path) -> list[PreferencePair]:
    pairs: list[PreferencePair] = []
    for name in RM_BENCH:
        subset = f"rm-bench/{name}"
        pairs += load_pairs_file(shared / "rm-bench" / f"{name}.json", "rm-bench", subset=subset,
                                 objective=SUBSET_TYPE[subset], rm_bench_mode="aligned")
    pairs += load_pairs_file(shared / HH_FILE, "hh-rlhf", objective="harmless",
                             subset="hh-rlhf/harmless-base")
    # helpful first, then harmless; file order within a subset
    order = list(SUBSET_TYPE)
    return sorted(pairs, key=lambda p: (p.objective != "helpful", order.index(p.subset)))


def counts(pairs: list[PreferencePair]) -> dict[str, dict[str, int]]:
    """subset -> {'train': n, 'test': n, 'prompts_train': n, 'prompts_test': n}."""
    out: dict[str, dict[str, int]] = {}
    pair_c = Counter((p.subset, p.split) for p in pairs)
    prompt_c = Counter((s, sp) for s, sp, _ in {(p.subset, p.split, p.prompt) for p in pairs})
    for subset in SUBSET_TYPE:
        out[subset] = {sp: pair_c[subset, sp] for sp in SPLITS}
        out[subset].update({f"prompts_{sp}": prompt_c[subset, sp] for sp in SPLITS})
    return out


def notice(pairs: list[PreferencePair], n_hh_records: int) -> str:
    c = counts(pairs)
    rows = []
    for subset, objective in SUBSET_TYPE.items():
        r = c[subset]
        rows.append(f"| `{subset}` | {objective} | {r['train']} ({r['prompts_train']}) | "
                    f"{r['test']} ({r['prompts_test']}) | {r['train'] + r['test']} |")
    tot = {sp: sum(r[sp] for r in c.values()) for sp in SPLITS}
    by_obj = Counter((p.objective, p.split) for p in pairs)
    n_hh = sum(p.subset == "hh-rlhf/harmless-base" for p in pairs)
    return f"""# Bundled demo data: sources, licences, counts

`demo_pairs.jsonl.gz` holds {len(pairs)} preference pairs in the canonical schema
(`workers/data/schema.py`), built by `python -m workers.data.build_bundled --shared ../shared/data`
(byte-for-byte reproducible). It is a redistribution of parts of two public datasets:

## Anthropic HH-RLHF (harmless-base, test file)

- Source: https://github.com/anthropics/hh-rlhf (also `Anthropic/hh-rlhf` on the Hugging Face hub).
- Licence: MIT, Copyright (c) 2022 Anthropic. The full licence text is in `LICENSE-hh-rlhf`.
- Citation: Bai et al. 2022, "Training a Helpful and Harmless Assistant with Reinforcement Learning
  from Human Feedback", arXiv:2204.05862.
- Used as: objective `harmless`, subset `hh-rlhf/harmless-base`. The prompt is the dialogue before the
  final `"\\n\\nAssistant:"` turn; chosen / rejected are that final turn's text, so
  `format_text(prompt, chosen)` rebuilds the original dialogue. Of {n_hh_records} records,
  {n_hh_records - n_hh} whose final assistant turn is empty were left out; {n_hh} pairs remain.

## RM-Bench (chat, code, safety-response, safety-refuse)

- Source: https://github.com/THU-KEG/RM-Bench (also `THU-KEG/RM-Bench` on the Hugging Face hub).
- Licence: ODC-By (Open Data Commons Attribution License). Attribution: RM-Bench, Liu et al. 2024.
- Citation: Yantao Liu, Zijun Yao, Rui Min, Yixin Cao, Lei Hou, Juanzi Li. 2024. "RM-Bench: Benchmarking
  Reward Models of Language Models with Subtlety and Style". arXiv:2410.16184.

```bibtex
{RM_BENCH_CITATION}
```

- Used as: `chat`, `code` and `safety-response` (benign prompts that sound risky; chosen = a helpful
  answer, rejected = an over-refusal) are objective `helpful`; `safety-refuse` (harmful prompts; chosen =
  a refusal, rejected = compliance) is objective `harmless`. Each prompt has 3 chosen and 3 rejected
  responses in three styles (concise, detailed, detailed with Markdown); only the 3 index-aligned
  pairs (chosen and rejected in the same style) are kept, each its own evaluation item.
  The responses themselves are unchanged. RM-Bench draws its prompts from AlpacaEval, HumanEvalPack,
  XSTest and the RewardBench refusal sets.

## Split

Train/test is decided per prompt by a stable hash (`workers.data.loaders.hash_split`, test fraction
{TEST_FRACTION}), so no prompt is in both splits; the original HH-RLHF test/train split is not kept.

## Counts

Pairs per subset and split (distinct prompts in brackets):

| subset | objective | train | test | total |
|---|---|---|---|---|
{chr(10).join(rows)}
| **all** | | {tot['train']} | {tot['test']} | {tot['train'] + tot['test']} |

By objective: helpful train {by_obj['helpful', 'train']}, test {by_obj['helpful', 'test']};
harmless train {by_obj['harmless', 'train']}, test {by_obj['harmless', 'test']}.
"""


def build(shared: Path, out: Path = BUNDLED_FILE) -> list[PreferencePair]:
    pairs = collect(shared)
    write_pairs_jsonl(pairs, out)
    with gzip.open(shared / HH_FILE, "rb") as f:
        n_hh_records = sum(1 for line in f if line.strip())
    (out.parent / "NOTICE.md").write_text(notice(pairs, n_hh_records), encoding="utf-8")
    shutil.copyfile(shared / "hh-rlhf" / "LICENSE", out.parent / "LICENSE-hh-rlhf")
    return pairs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--shared", type=Path, default=Path("../shared/data"),
                    help="folder holding hh-rlhf/ and rm-bench/ (default ../shared/data)")
    ap.add_argument("--out", type=Path, default=BUNDLED_FILE)
    args = ap.parse_args(argv)
    pairs = build(args.shared, args.out)
    for subset, r in counts(pairs).items():
        print(f"{subset:28s} train {r['train']:5d}  test {r['test']:5d}")
    print(f"wrote {len(pairs)} pairs to {args.out}")


if __name__ == "__main__":
    main()
