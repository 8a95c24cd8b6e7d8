"""Read preference pairs from any supported file or source, validating every record. Torch-free.

Containers (sniffed from the bytes, not the file name): JSON Lines, a JSON list, either gzipped or
not, and Parquet. Layouts (sniffed from the first record unless `fmt` names one):

* ``canonical``  - the `PreferencePair` fields (`prompt`, `chosen`, `rejected`, `objective`, ...).
* ``hh-rlhf``    - Anthropic HH-RLHF: `chosen` and `rejected` are full dialogues that share a prompt.
* ``rm-bench``   - RM-Bench: `id`, `prompt`, and `chosen` / `rejected` lists of responses.
* ``rewardbench`` - RewardBench: `prompt`, `chosen`, `rejected` strings and a `subset` name.

Every malformed input raises `DatasetFormatError` naming the file, the line (or row) and the problem.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import logging
import os
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, cast, get_args

from workers.contract.vocab import DatasetFormat
from workers.data.schema import OBJECTIVES, SPLITS, PreferencePair
from workers.data.text import ASSISTANT, dialogue_prompt

if TYPE_CHECKING:
    from workers.contract.jobs import DatasetRef
    from workers.storage import ArtifactStore

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 8 * 1024 * 1024
#: A JSON-list file is parsed whole; larger files must be JSON Lines.
MAX_JSON_BYTES = 512 * 1024 * 1024
#: Fraction of prompts that `hash_split` puts in the test split.
TEST_FRACTION = 0.2

Format = DatasetFormat | str
FORMATS: tuple[str, ...] = tuple(DatasetFormat)
RmBenchMode = Literal["aligned", "full"]
RM_BENCH_MODES: tuple[str, ...] = get_args(RmBenchMode)

BUNDLED_FILE = Path(__file__).resolve().parent / "bundled" / "demo_pairs.jsonl.gz"

_BOM = b"\xef\xbb\xbf"
_WS = re.compile(r"[ \t\n\r]*")


def _skip_ws(text: str, i: int) -> int:
    m = _WS.match(text, i)
    return m.end() if m else i

# Subset names (RM-Bench domains and record subsets, RewardBench subsets, HH-RLHF data dirs) -> objective.
_SUBSET_OBJECTIVE: dict[str, str] = {
    **{name: "helpful" for name in (
        "chat", "code", "math", "safety-response", "alpacaeval", "bigcode/humanevalpack",
        "alpacaeval-easy", "alpacaeval-length", "alpacaeval-hard", "mt-bench-easy", "mt-bench-med",
        "mt-bench-hard", "llmbar-natural", "llmbar-adver-neighbor", "llmbar-adver-GPTInst",
        "llmbar-adver-GPTOut", "llmbar-adver-manual", "xstest-should-respond", "math-prm", "hep-cpp",
        "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust", "helpful-base", "helpful-online",
        "helpful-rejection-sampled")},
    **{name: "harmless" for name in (
        "safety-refuse", "xstest-should-refuse", "refusals-dangerous", "refusals-offensive", "donotanswer",
        "harmless-base", "red-team-attempts")},
}
_RM_BENCH_DOMAINS = ("chat", "code", "math", "safety-refuse", "safety-response")
_HH_DIRS = ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled",
            "red-team-attempts")


class DatasetFormatError(ValueError):
    """A dataset that cannot be read: which file, which line (or row), what is wrong."""

    def __init__(self, path: str | os.PathLike[str], line: int | None, problem: str,
                 where: str = "line") -> None:
        self.path = str(path)
        self.line = line
        self.problem = problem
        self.where = where
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.path}: {self.problem}"
        return f"{self.path}, {self.where} {self.line}: {self.problem}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.path, self.line, self.problem, self.where))


def hash_split(prompt: str, test_fraction: float = TEST_FRACTION) -> str:
    """'train' or 'test', from a stable hash of the prompt: a prompt always lands in the same split.

    The prompt is hashed in its dialogue form, so a bare question and the same question as an
    HH-RLHF Human turn fall on the same side.
    """
    digest = hashlib.sha256(("split:" + dialogue_prompt(prompt)).encode("utf-8")).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2**64 < test_fraction else "train"


def objective_of_subset(name: str) -> str | None:
    """The objective a known subset name measures ('rm-bench/chat' -> 'helpful'), else None."""
    for cand in (name, name.split("/", 1)[-1], name.rsplit("/", 1)[-1]):
        if cand in _SUBSET_OBJECTIVE:
            return _SUBSET_OBJECTIVE[cand]
    return None


# ----------------------------------------------------------------------------------------- containers


def _open_stream(path: Path) -> BinaryIO:
    with path.open("rb") as f:
        magic = f.read(2)
    return cast(BinaryIO, gzip.open(path, "rb")) if magic == b"\x1f\x8b" else path.open("rb")


def _container(path: Path) -> str:
    """'parquet', 'jsonl', 'json-list' or 'empty', from the first bytes."""
    with path.open("rb") as f:
        if f.read(4) == b"PAR1":
            return "parquet"
    with _open_stream(path) as s:
        head = s.read(len(_BOM))
        if head.startswith(_BOM):
            head = head[len(_BOM):]
        while True:
            stripped = head.lstrip(b" \t\r\n")
            if stripped:
                return "json-list" if stripped[:1] == b"[" else "jsonl"
            head = s.read(1 << 16)
            if not head:
                return "empty"


def _jsonl_records(path: Path, stream: BinaryIO) -> Iterator[tuple[int, Any]]:
    lineno = 0
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 1)  # never more than the limit in memory
        if not raw:
            return
        lineno += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            raise DatasetFormatError(path, lineno, f"line longer than {MAX_LINE_BYTES >> 20} MiB")
        if lineno == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM):]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DatasetFormatError(
                path, lineno, f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at column {exc.start + 1}"
            ) from None
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(path, lineno, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
        yield lineno, obj


def _json_list_records(path: Path, stream: BinaryIO) -> Iterator[tuple[int, Any]]:
    data = stream.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        raise DatasetFormatError(path, None, f"JSON list larger than {MAX_JSON_BYTES >> 20} MiB; "
                                             "use JSON Lines (one object a line) instead")
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - data.rfind(b"\n", 0, exc.start)
        raise DatasetFormatError(path, line, f"not valid UTF-8: byte 0x{data[exc.start]:02x} at column {col}"
                                 ) from None

    def line_at(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    decoder = json.JSONDecoder()
    n = len(text)
    i = _skip_ws(text, 0)
    i = _skip_ws(text, i + 1)  # past '['
    line, counted = 1, 0
    if i < n and text[i] == "]":
        i = _skip_ws(text, i + 1)
        if i < n:
            raise DatasetFormatError(path, line_at(i), "invalid JSON: extra data after the list")
        return
    while True:
        line += text.count("\n", counted, i)
        counted = i
        try:
            obj, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(path, exc.lineno,
                                     f"invalid JSON: {exc.msg} (column {exc.colno})") from None
        yield line, obj
        i = _skip_ws(text, end)
        if i >= n:
            raise DatasetFormatError(path, line_at(n), "invalid JSON: the list is not closed with ']'")
        if text[i] == ",":
            i = _skip_ws(text, i + 1)
            continue
        if text[i] == "]":
            i = _skip_ws(text, i + 1)
            if i < n:
                raise DatasetFormatError(path, line_at(i), "invalid JSON: extra data after the list")
            return
        raise DatasetFormatError(path, line_at(i), "invalid JSON: expected ',' or ']' between list items")


def _parquet_records(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        row = 0
        for batch in pf.iter_batches(batch_size=4096):
            for rec in batch.to_pylist():
                row += 1
                yield row, rec
    except (pa.ArrowException, OSError) as exc:
        raise DatasetFormatError(path, None, f"not a readable Parquet file: {exc}") from None


def _file_records(path: Path) -> tuple[Iterator[tuple[int, Any]], str]:
    """(records as (line or row, object), 'line' or 'row')."""
    try:
        kind = _container(path)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DatasetFormatError(path, None, f"corrupt gzip data: {exc}") from None
    if kind == "parquet":
        return _parquet_records(path), "row"
    if kind == "empty":
        raise DatasetFormatError(path, None, "empty file: no records")

    def gen() -> Iterator[tuple[int, Any]]:
        reader = _json_list_records if kind == "json-list" else _jsonl_records
        last = 0
        try:
            with _open_stream(path) as stream:
                for last, obj in reader(path, stream):  # `last` names the line on errors
                    yield last, obj
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise DatasetFormatError(path, last + 1 if last else None, f"corrupt gzip data: {exc}") from None

    return gen(), "line"


# ---------------------------------------------------------------------------------------------- layouts


@dataclass
class _Ctx:
    path: str
    name_hint: str
    where: str = "line"
    objective: str | None = None
    subset: str | None = None
    split: str | None = None
    rm_bench_mode: str = "aligned"
    id_tag: str = ""
    skipped: list[tuple[int | None, str]] = field(default_factory=list)

    def error(self, line: int | None, problem: str) -> DatasetFormatError:
        return DatasetFormatError(self.path, line, problem, self.where)

    def pair_id(self, subset: str, *parts: object) -> str:
        return "/".join([subset, *([self.id_tag] if self.id_tag else []), *map(str, parts)])


def _type_name(v: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(v), type(v).__name__)


def _keys_hint(rec: dict[str, Any]) -> str:
    keys = sorted(map(str, rec))
    return ", ".join(keys[:12]) + (", ..." if len(keys) > 12 else "") if keys else "none"


def _req(rec: dict[str, Any], key: str, line: int | None, ctx: _Ctx) -> Any:
    if key not in rec or rec[key] is None:
        raise ctx.error(line, f"missing key {key!r} (record has keys: {_keys_hint(rec)})")
    return rec[key]


def _req_str(rec: dict[str, Any], key: str, line: int | None, ctx: _Ctx, nonempty: bool = False) -> str:
    v = _req(rec, key, line, ctx)
    if not isinstance(v, str):
        raise ctx.error(line, f"{key!r} must be a string, got {_type_name(v)}")
    if nonempty and not v.strip():
        raise ctx.error(line, f"{key!r} is empty")
    return v


def _opt_str(rec: dict[str, Any], key: str, line: int | None, ctx: _Ctx, ids: bool = False) -> str | None:
    v = rec.get(key)
    if v is None:
        return None
    if ids and isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    if not isinstance(v, str):
        kinds = "a string or an integer" if ids else "a string"
        raise ctx.error(line, f"{key!r} must be {kinds}, got {_type_name(v)}")
    return v or None


def _infer_objective(line: int | None, ctx: _Ctx, *names: str | None) -> str:
    if ctx.objective:
        return ctx.objective
    for name in names:
        if name and (obj := objective_of_subset(name)):
            return obj
    shown = next((n for n in names if n), None)
    raise ctx.error(line, f"cannot tell the objective of subset {shown!r}; pass objective='helpful' or "
                          "'harmless', or use the canonical layout with an 'objective' field")


def _canonical(rec: dict[str, Any], line: int | None, ctx: _Ctx) -> list[PreferencePair]:
    prompt = _req_str(rec, "prompt", line, ctx)
    chosen = _req_str(rec, "chosen", line, ctx, nonempty=True)
    rejected = _req_str(rec, "rejected", line, ctx, nonempty=True)
    objective = _opt_str(rec, "objective", line, ctx) or ctx.objective
    if objective is None:
        raise ctx.error(line, f"missing key 'objective' (record has keys: {_keys_hint(rec)}); "
                              "add it or pass objective=")
    subset = _opt_str(rec, "subset", line, ctx) or ctx.subset or "custom"
    pair_id = _opt_str(rec, "pair_id", line, ctx, ids=True) or ctx.pair_id(subset, line)
    return [PreferencePair(
        pair_id=pair_id, prompt=prompt, chosen=chosen, rejected=rejected, objective=objective,
        source=_opt_str(rec, "source", line, ctx) or "custom", subset=subset,
        split=_opt_str(rec, "split", line, ctx) or ctx.split or hash_split(prompt),
        item_id=_opt_str(rec, "item_id", line, ctx, ids=True) or pair_id,
    )]


def _hh(rec: dict[str, Any], line: int | None, ctx: _Ctx) -> list[PreferencePair]:
    chosen = _req_str(rec, "chosen", line, ctx, nonempty=True)
    rejected = _req_str(rec, "rejected", line, ctx, nonempty=True)
    for name, text in (("chosen", chosen), ("rejected", rejected)):
        if ASSISTANT not in text:
            raise ctx.error(line, f"{name!r} has no '\\n\\nAssistant:' turn; not an HH-RLHF dialogue")
    # The prompt is the longest shared dialogue that ends where an Assistant turn begins. Usually the
    # two differ only in the final turn; in a few HH-RLHF records they diverge earlier.
    shared = os.path.commonprefix([chosen, rejected])
    idx = chosen.rfind(ASSISTANT, 0, len(shared))
    if idx < 0:
        raise ctx.error(line, "'chosen' and 'rejected' differ before their first Assistant turn "
                              "(they do not share a prompt)")
    prompt = chosen[:idx]
    resp_c = _drop_space(chosen[idx + len(ASSISTANT):])
    resp_r = _drop_space(rejected[idx + len(ASSISTANT):])
    if not resp_c.strip() or not resp_r.strip():
        ctx.skipped.append((line, "a final assistant turn is empty"))
        return []
    if resp_c == resp_r:
        ctx.skipped.append((line, "chosen and rejected are identical"))
        return []
    hh_dir = next((d for d in _HH_DIRS if d in ctx.name_hint), None)
    subset = ctx.subset or f"hh-rlhf/{hh_dir or 'harmless-base'}"
    objective = ctx.objective or (objective_of_subset(hh_dir) if hh_dir else None) or "harmless"
    pair_id = ctx.pair_id(subset, line)
    return [PreferencePair(pair_id=pair_id, prompt=prompt, chosen=resp_c, rejected=resp_r,
                           objective=objective, source="hh-rlhf", subset=subset,
                           split=ctx.split or hash_split(prompt))]


def _drop_space(s: str) -> str:
    return s[1:] if s.startswith(" ") else s


def _str_list(rec: dict[str, Any], key: str, line: int | None, ctx: _Ctx) -> list[str]:
    v = _req(rec, key, line, ctx)
    if not isinstance(v, list):
        raise ctx.error(line, f"{key!r} must be a list of strings in the RM-Bench layout, "
                              f"got {_type_name(v)}")
    if not v:
        raise ctx.error(line, f"{key!r} is an empty list")
    for i, s in enumerate(v):
        if not isinstance(s, str):
            raise ctx.error(line, f"{key}[{i}] must be a string, got {_type_name(s)}")
        if not s.strip():
            raise ctx.error(line, f"{key}[{i}] is empty")
    return v


def _rm_bench(rec: dict[str, Any], line: int | None, ctx: _Ctx) -> list[PreferencePair]:
    prompt = _req_str(rec, "prompt", line, ctx, nonempty=True)
    chosen = _str_list(rec, "chosen", line, ctx)
    rejected = _str_list(rec, "rejected", line, ctx)
    rid = _opt_str(rec, "id", line, ctx, ids=True) or str(line)
    domain = _opt_str(rec, "domain", line, ctx)
    stem = _stem(ctx.name_hint)
    if domain is None and stem in _RM_BENCH_DOMAINS:
        domain = stem
    subset = ctx.subset or (f"rm-bench/{domain}" if domain else "rm-bench")
    objective = _infer_objective(line, ctx, domain, _opt_str(rec, "subset", line, ctx))
    split = ctx.split or hash_split(prompt)

    def make(pair_id: str, item_id: str, c: str, r: str) -> PreferencePair:
        return PreferencePair(pair_id=pair_id, prompt=prompt, chosen=c, rejected=r, objective=objective,
                              source="rm-bench", subset=subset, split=split, item_id=item_id)

    if ctx.rm_bench_mode == "aligned":
        if len(chosen) != len(rejected):
            raise ctx.error(line, f"aligned mode needs as many chosen as rejected responses "
                                  f"({len(chosen)} vs {len(rejected)})")
        return [make(pid := ctx.pair_id(subset, rid, i), pid, c, r)
                for i, (c, r) in enumerate(zip(chosen, rejected, strict=True))]
    item = ctx.pair_id(subset, rid)
    return [make(f"{item}/{i}-{j}", item, c, r) for i, c in enumerate(chosen) for j, r in enumerate(rejected)]


def _rewardbench(rec: dict[str, Any], line: int | None, ctx: _Ctx) -> list[PreferencePair]:
    prompt = _req_str(rec, "prompt", line, ctx)
    chosen = _req_str(rec, "chosen", line, ctx, nonempty=True)
    rejected = _req_str(rec, "rejected", line, ctx, nonempty=True)
    rb_subset = _req_str(rec, "subset", line, ctx, nonempty=True)
    subset = ctx.subset or f"rewardbench/{rb_subset}"
    objective = _infer_objective(line, ctx, rb_subset)
    rid = _opt_str(rec, "id", line, ctx, ids=True) or str(line)
    return [PreferencePair(pair_id=ctx.pair_id(subset, rid), prompt=prompt, chosen=chosen, rejected=rejected,
                           objective=objective, source="rewardbench", subset=subset,
                           split=ctx.split or hash_split(prompt))]


_PARSERS: dict[str, Callable[[dict[str, Any], int | None, _Ctx], list[PreferencePair]]] = {
    "canonical": _canonical, "hh-rlhf": _hh, "rm-bench": _rm_bench, "rewardbench": _rewardbench,
}


def sniff_layout(rec: dict[str, Any]) -> str | None:
    """The layout a record is in, or None when it is none of them."""
    if "chosen" not in rec or "rejected" not in rec:
        return None
    if isinstance(rec["chosen"], list):
        return "rm-bench"
    if "prompt" not in rec:
        return "hh-rlhf"
    if "objective" in rec or "subset" not in rec or "pair_id" in rec:
        return "canonical"
    return "rewardbench"


def _stem(name: str) -> str:
    base = re.split(r"[\\/]", name)[-1]
    return re.sub(r"(\.(jsonl|json|parquet|gz))+$", "", base, flags=re.IGNORECASE)


def _parse(records: Iterable[tuple[int, Any]], fmt: str, ctx: _Ctx) -> list[PreferencePair]:
    layout = None if fmt == "auto" else fmt
    pairs: list[PreferencePair] = []
    first_line: dict[str, int | None] = {}
    n_records = 0
    for line, rec in records:
        n_records += 1
        if not isinstance(rec, dict):
            raise ctx.error(line, f"expected a JSON object, got {_type_name(rec)}")
        if layout is None:
            layout = sniff_layout(rec)
            if layout is None:
                raise ctx.error(line, f"cannot tell the layout: a record needs 'chosen' and 'rejected' "
                                      f"(record has keys: {_keys_hint(rec)})")
        try:
            new = _PARSERS[layout](rec, line, ctx)
        except DatasetFormatError:
            raise
        except ValueError as exc:
            raise ctx.error(line, str(exc)) from None
        for p in new:
            if p.pair_id in first_line:
                raise ctx.error(line, f"duplicate pair_id {p.pair_id!r} (first seen at {ctx.where} "
                                      f"{first_line[p.pair_id]})")
            first_line[p.pair_id] = line
            pairs.append(p)
    if n_records == 0:
        raise ctx.error(None, "empty file: no records")
    if ctx.skipped:
        shown = ", ".join(f"{ctx.where} {ln} ({why})" for ln, why in ctx.skipped[:5])
        log.warning("%s: skipped %d HH-RLHF records: %s%s", ctx.path, len(ctx.skipped), shown,
                    ", ..." if len(ctx.skipped) > 5 else "")
    if not pairs:
        raise ctx.error(None, "no usable preference pairs")
    return pairs


def _check_options(fmt: str, objective: str | None, split: str | None, rm_bench_mode: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown dataset format {fmt!r}; use one of {', '.join(FORMATS)}")
    if objective is not None and objective not in OBJECTIVES:
        raise ValueError(f"objective {objective!r} is not one of {', '.join(OBJECTIVES)}")
    if split is not None and split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    if rm_bench_mode not in RM_BENCH_MODES:
        raise ValueError(f"rm_bench_mode {rm_bench_mode!r} is not one of {', '.join(RM_BENCH_MODES)}")


def load_pairs_file(path: str | os.PathLike[str], fmt: str = "auto", *, objective: str | None = None,
                    subset: str | None = None, split: str | None = None,
                    rm_bench_mode: str = "aligned") -> list[PreferencePair]:
    """Every pair in one file, validated.

    Canonical records keep their own `objective` / `subset` / `split`; the arguments only fill in
    fields a record lacks. For the HH-RLHF, RM-Bench and RewardBench layouts the arguments set the
    field when given; otherwise the objective comes from the subset name (HH-RLHF: 'harmless'
    unless the file name says helpful-*), and the split from `hash_split(prompt)` (80/20, prompt-disjoint).
    `rm_bench_mode`: 'aligned' = the 3 index-aligned pairs of a prompt, each its own item;
    'full' = all 3x3 pairs, one item per prompt.
    """
    _check_options(fmt, objective, split, rm_bench_mode)
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"dataset file not found: {p}")
    records, where = _file_records(p)
    ctx = _Ctx(path=str(p), name_hint=str(p), where=where, objective=objective, subset=subset, split=split,
               rm_bench_mode=rm_bench_mode)
    return _parse(records, fmt, ctx)


def _load_hf(dataset_id: str, fmt: str, rm_bench_mode: str = "aligned") -> list[PreferencePair]:
    """`owner/name[/data_dir]` from the Hugging Face hub (needs the network), every split it has."""
    import datasets  # lazy: heavy, and only useful online

    parts = [s for s in dataset_id.split("/") if s]
    if len(parts) < 2:
        raise ValueError(f"hf:{dataset_id}: expected 'hf:<owner>/<name>[/<data_dir>]'")
    repo, data_dir = "/".join(parts[:2]), "/".join(parts[2:]) or None
    dd = datasets.load_dataset(repo, data_dir=data_dir)
    pairs: list[PreferencePair] = []
    for split_name in sorted(dd):
        ctx = _Ctx(path=f"hf:{dataset_id}[{split_name}]", name_hint=dataset_id, where="row",
                   split=split_name if split_name in SPLITS else None, rm_bench_mode=rm_bench_mode,
                   id_tag=split_name)
        pairs += _parse(enumerate(dd[split_name], start=1), fmt, ctx)
    return pairs


# ---------------------------------------------------------------------------------------- bundled


def bundled_path() -> Path:
    return BUNDLED_FILE


@functools.lru_cache(maxsize=1)
def _bundled_cached(mtime_ns: int) -> tuple[PreferencePair, ...]:
    return tuple(load_pairs_file(BUNDLED_FILE, "canonical"))


def load_bundled() -> list[PreferencePair]:
    """The bundled demo pairs (RM-Bench + HH-RLHF sample), train and test."""
    if not BUNDLED_FILE.is_file():
        raise FileNotFoundError(f"bundled data missing: {BUNDLED_FILE}; build it with `make data`")
    return list(_bundled_cached(BUNDLED_FILE.stat().st_mtime_ns))


def write_pairs_jsonl(pairs: Iterable[PreferencePair], path: str | os.PathLike[str]) -> int:
    """Canonical JSON Lines, sorted keys; gzipped (with a zero mtime, so byte-reproducible) if `.gz`."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with p.open("wb") as raw:
        out: BinaryIO = raw
        if p.suffix == ".gz":
            out = cast(BinaryIO, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0))
        try:
            for pair in pairs:
                line = json.dumps(pair.to_dict(), sort_keys=True, ensure_ascii=False)
                out.write(line.encode("utf-8") + b"\n")
                n += 1
        finally:
            if out is not raw:
                out.close()
    return n


# ---------------------------------------------------------------------------------------- datasets


def _sample_key(seed: int, item_id: str) -> bytes:
    return hashlib.sha256(f"{seed}\x00{item_id}".encode()).digest()


def _limit_items(pairs: list[PreferencePair], limit: int, seed: int) -> list[PreferencePair]:
    """At most `limit` pairs, whole items first, in a seeded order; original order kept."""
    items: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        items.setdefault(p.item_id, []).append(i)
    keep: list[int] = []
    for item_id in sorted(items, key=lambda k: _sample_key(seed, k)):
        if len(keep) + len(items[item_id]) <= limit:
            keep += items[item_id]
            if len(keep) == limit:
                break
    if not keep:  # every item is larger than the limit: cut the first one
        keep = items[min(items, key=lambda k: _sample_key(seed, k))][:limit]
    return [pairs[i] for i in sorted(keep)]


def _describe(pairs: Sequence[PreferencePair]) -> str:
    c = Counter((p.objective, p.split) for p in pairs)
    return ", ".join(f"{o}/{s} {n}" for (o, s), n in sorted(c.items())) or "nothing"


def select_pairs(pairs: Sequence[PreferencePair], *, split: str = "all",
                 objectives: Sequence[str] = OBJECTIVES, subsets: Sequence[str] | None = None,
                 limit: int | None = None, seed: int = 0, source: str = "dataset") -> list[PreferencePair]:
    """Filter by split ('all' keeps both), objectives and subsets; then at most `limit` pairs per objective.

    ValueError when an asked-for objective or subset has no pairs.
    """
    if split != "all" and split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of train, test, all")
    if not objectives:
        raise ValueError("no objectives asked for")
    bad = [o for o in objectives if o not in OBJECTIVES]
    if bad:
        raise ValueError(f"objective {bad[0]!r} is not one of {', '.join(OBJECTIVES)}")
    if subsets is not None:
        known = {p.subset for p in pairs}
        unknown = [s for s in subsets if s not in known]
        if unknown:
            raise ValueError(f"{source}: no pairs in subset {unknown[0]!r}; "
                                 f"its subsets are: {', '.join(sorted(known))}")
    want_sub = None if subsets is None else set(subsets)
    kept = [p for p in pairs if (split == "all" or p.split == split) and p.objective in objectives
            and (want_sub is None or p.subset in want_sub)]
    out: list[PreferencePair] = []
    for objective in dict.fromkeys(objectives):
        mine = [p for p in kept if p.objective == objective]
        if not mine:
            raise ValueError(f"{source}: no {objective} pairs for split={split}"
                             f"{'' if subsets is None else f', subsets={list(subsets)}'}; "
                             f"the data has: {_describe(pairs)}")
        out += _limit_items(mine, limit, seed) if limit is not None else mine
    order = {p.pair_id: i for i, p in enumerate(pairs)}
    return sorted(out, key=lambda p: order[p.pair_id])


def load_dataset(ref: DatasetRef, store: ArtifactStore | None = None) -> list[PreferencePair]:
    """The pairs a `DatasetRef` names: source, then split / objectives / subsets / limit (seeded).

    'artifact:<key>' sources are read from `store`; 'dataset:<id>' must have been resolved to one by
    the API (it knows the uploads)."""
    source = ref.source.strip()
    if source == "bundled":
        if ref.format not in ("auto", "canonical"):
            raise ValueError(f"the bundled data is in the canonical layout, not {ref.format!r}")
        pairs = load_bundled()
    elif source.startswith("hf:"):
        pairs = _load_hf(source[3:], ref.format)
    elif source.startswith("artifact:"):
        if store is None:
            raise ValueError(f"{source}: an artifact dataset needs the artifact store")
        path = store.local_file(source.split(":", 1)[1])
        try:
            pairs = load_pairs_file(path, ref.format)
        except DatasetFormatError as exc:
            raise ValueError(f"{source}: {str(exc).replace(str(path), '').lstrip(', :')}") from exc
    else:
        raise ValueError(f"unresolved dataset source {source[:200]!r}")
    return select_pairs(pairs, split=ref.split, objectives=ref.objectives, subsets=ref.subsets,
                        limit=ref.limit, seed=ref.seed, source=source)


def dataset_revision(source: str, store: ArtifactStore | None = None) -> str:
    """sha256 (16 hex) of what a source is: the bundled file's bytes, or the source string for an 'hf:' id
    and for an artifact (whose keys name their content: uploads live under their own hash)."""
    source = source.strip()
    if source.startswith(("hf:", "artifact:")):
        return hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]
    path = BUNDLED_FILE if source == "bundled" else Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {path}")
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()[:16]
