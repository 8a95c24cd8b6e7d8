"""Read preference pairs from any supported file or source, validating every record. Torch-free.

Containers (sniffed from the bytes, not the file name): JSON Lines, a JSON list, either gzipped or
not, and Parquet. Layouts (sniffed from the records unless `fmt` names one):

* ``canonical``  - the `PreferencePair` fields (`prompt`, `chosen`, `rejected`, `objective`, ...).
* ``hh-rlhf``    - Anthropic HH-RLHF: `chosen` and `rejected` are full dialogues that share a prompt.
* ``rm-bench``   - RM-Bench: `id`, `prompt`, and `chosen` / `rejected` lists of responses.
* ``rewardbench`` - RewardBench: `prompt`, `chosen`, `rejected` strings and a `subset` name.
* ``trl-implicit`` - TRL's standard implicit-prompt layout: `chosen` and `rejected` strings that hold the prompt.
* ``trl-conversational`` - TRL's conversational layout: `prompt`, `chosen`, `rejected` lists of messages.
* ``trl-conversational-implicit`` - the same without `prompt`: two whole conversations that share a prompt.

TRL's standard explicit-prompt layout is the canonical one. How messages become text, and how an implicit
prompt is split off, is in `workers.data.layouts`. With `fmt='auto'` every record's layout is sniffed: all must
agree (a record that fits another layout is refused, naming both); errors name the layout detected.

Every malformed input raises `DatasetFormatError` naming the file, the line (or row) and the problem.

Files are streamed: a JSON Lines line or a JSON-list item at a time (at most MAX_LINE_BYTES), nesting at
most MAX_JSON_DEPTH deep. A file from outside is read within `ReadLimits` (decompressed bytes, pairs),
checked first by a counting pass, so a gzip bomb is refused before it is parsed (`DatasetTooLarge`); with
`quote=False` no message quotes the file's own keys or values.
"""

from __future__ import annotations

import codecs
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
from workers.data import layouts
from workers.data.layouts import shape_name
from workers.data.layouts import type_name as _type_name
from workers.data.safe_json import MAX_JSON_DEPTH, JSONTooDeep, check_depth
from workers.data.schema import OBJECTIVES, SPLITS, PreferencePair
from workers.data.text import ASSISTANT, dialogue_prompt

if TYPE_CHECKING:
    from workers.contract.jobs import DatasetRef
    from workers.storage import ArtifactStore

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 8 * 1024 * 1024
"""Longest JSON Lines line, and longest record of a JSON list (both are read in bounded pieces)."""
_CHUNK = 1 << 20
#: Fraction of prompts that `hash_split` puts in the test split.
TEST_FRACTION = 0.2

Format = DatasetFormat | str
FORMATS: tuple[str, ...] = tuple(DatasetFormat)
RmBenchMode = Literal["aligned", "full"]
RM_BENCH_MODES: tuple[str, ...] = get_args(RmBenchMode)

BUNDLED_FILE = Path(__file__).resolve().parent / "bundled" / "demo_pairs.jsonl.gz"

_BOM = b"\xef\xbb\xbf"
_HUB_SEGMENT = re.compile(r"^[A-Za-z0-9_.-]{1,96}$")
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


# ----------------------------------------------------------------------------------------- limits


LIMIT_BYTES = "max_decompressed_bytes"
LIMIT_PAIRS = "max_pairs"


@dataclass(frozen=True)
class ReadLimits:
    """Bounds on one file while it is read, for files from outside (an upload, an operator's data root).

    `max_bytes`: decompressed bytes (a gzip bomb stops here); `max_pairs`: preference pairs, and records,
    since each record is at least one pair; `quote`: whether messages may quote the file's keys and values
    (not for a file the requester did not send). None means no bound.
    """

    max_bytes: int | None = None
    max_pairs: int | None = None
    quote: bool = True


class DatasetTooLarge(DatasetFormatError):
    """A file beyond one of its `ReadLimits`; `limit` names which (LIMIT_BYTES or LIMIT_PAIRS)."""

    def __init__(self, path: str | os.PathLike[str], limit: str, value: int, problem: str) -> None:
        self.limit = limit
        self.value = value
        super().__init__(path, None, problem)

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.path, self.limit, self.value, self.problem))


def _too_many_bytes(path: str | os.PathLike[str], limit: int) -> DatasetTooLarge:
    return DatasetTooLarge(path, LIMIT_BYTES, limit, f"more than {limit:,} bytes once decompressed")


def _too_many_pairs(path: str | os.PathLike[str], limit: int, what: str = "preference pairs") -> DatasetTooLarge:
    return DatasetTooLarge(path, LIMIT_PAIRS, limit, f"more than {limit:,} {what}")


class _Counted:
    """A binary stream that counts the (decompressed) bytes it hands out and stops past `max_bytes`."""

    def __init__(self, raw: BinaryIO, path: Path, max_bytes: int | None) -> None:
        self.raw, self.path, self.max_bytes, self.n = raw, path, max_bytes, 0

    def _count(self, data: bytes) -> bytes:
        self.n += len(data)
        if self.max_bytes is not None and self.n > self.max_bytes:
            raise _too_many_bytes(self.path, self.max_bytes)
        return data

    def read(self, n: int = -1) -> bytes:
        return self._count(self.raw.read(n))

    def readline(self, n: int = -1) -> bytes:
        return self._count(self.raw.readline(n))

    def __enter__(self) -> _Counted:
        return self

    def __exit__(self, *exc: object) -> None:
        self.raw.close()


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


_BLANK_AFTER_NL = re.compile(rb"\n(?=[ \t\r]*\n)")
_STRING_REST = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*', re.S)
_SCALAR_END = re.compile(r"[,\]}\s]")


def _precheck(path: Path, kind: str, limits: ReadLimits) -> None:
    """Refuse a file beyond its limits before parsing it: one pass that only counts (C speed, ~1 MiB held).

    Parquet: the row count and uncompressed size from its footer. JSON: decompressed bytes and, for
    JSON Lines, the non-blank lines (each a record, each at least one pair), so a bomb of tiny records
    is refused after reading `max_pairs` lines rather than after parsing them.
    """
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            meta = pq.ParquetFile(path).metadata
        except (pa.ArrowException, OSError):
            return  # the parse names the problem
        if limits.max_pairs is not None and meta.num_rows > limits.max_pairs:
            raise _too_many_pairs(path, limits.max_pairs, "rows (each row is at least one pair)")
        size = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        if limits.max_bytes is not None and size > limits.max_bytes:
            raise _too_many_bytes(path, limits.max_bytes)
        return
    lines, carry = 0, b"\n"  # `carry` starts at a newline: the text after it is the start of a line
    with _Counted(_open_stream(path), path, limits.max_bytes) as s:
        while chunk := s.read(_CHUNK):
            if kind != "jsonl" or limits.max_pairs is None:
                continue
            buf = carry + chunk
            cut = buf.rfind(b"\n")
            if cut <= 0:  # no line ends here; keep a bounded tail (a long line is the parser's to refuse)
                carry = buf[-_CHUNK:]
                continue
            # each '\n' before `cut` starts a line that ends inside `buf`: count those with content
            lines += buf.count(b"\n", 0, cut) - len(_BLANK_AFTER_NL.findall(buf, 0, cut + 1))
            carry = buf[cut:]
            if lines > limits.max_pairs:
                raise _too_many_pairs(path, limits.max_pairs, "records (each line is at least one pair)")


def _jsonl_records(path: Path, stream: _Counted) -> Iterator[tuple[int, Any]]:
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
            check_depth(text)
            obj = json.loads(text)
        except JSONTooDeep as exc:
            raise DatasetFormatError(path, lineno, f"invalid JSON: {exc}") from None
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(path, lineno, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
        yield lineno, obj


class _JsonList:
    """A JSON list read element by element from a stream, in pieces of `_CHUNK` bytes.

    At most one element (bounded by MAX_LINE_BYTES) plus one piece is held. Nesting beyond MAX_JSON_DEPTH is
    refused: an element with more brackets than that is walked (`check_depth`); one far deeper trips the
    decoder's own recursion guard first, which is turned into the same error. `line` is the line number at
    `text[counted]`.
    """

    def __init__(self, path: Path, stream: _Counted) -> None:
        self.path, self.stream = path, stream
        self.utf8 = codecs.getincrementaldecoder("utf-8")()
        self.text, self.i, self.counted, self.line = "", 0, 0, 1
        self.eof, self.first = False, True

    def error(self, pos: int, problem: str) -> DatasetFormatError:
        return DatasetFormatError(self.path, self.line_at(pos), problem)

    def line_at(self, pos: int) -> int:
        if pos >= self.counted:
            self.line += self.text.count("\n", self.counted, pos)
            self.counted = pos
            return self.line
        return self.line - self.text.count("\n", pos, self.counted)

    def more(self) -> bool:
        """Drop what was consumed, append the next piece; False at the end of the input."""
        if self.eof:
            return False
        raw = self.stream.read(_CHUNK)
        if self.first:
            self.first = False
            if raw.startswith(_BOM):
                raw = raw[len(_BOM):]
        self.line_at(self.i)
        self.text, self.counted, self.i = self.text[self.i:], 0, 0
        try:
            piece = self.utf8.decode(raw, final=not raw)
        except UnicodeDecodeError as exc:
            line = self.line + self.text.count("\n") + raw.count(b"\n", 0, exc.start)
            nl = raw.rfind(b"\n", 0, exc.start)
            col = exc.start - nl if nl >= 0 else len(self.text) - self.text.rfind("\n") + exc.start
            bad = exc.object[exc.start]
            raise DatasetFormatError(self.path, line, f"not valid UTF-8: byte 0x{bad:02x} at column {col}") from None
        self.eof = not raw
        self.text += piece
        return True

    def skip_ws(self) -> None:
        while True:
            self.i = _skip_ws(self.text, self.i)
            if self.i < len(self.text) or not self.more():
                return

    def value(self, decoder: json.JSONDecoder) -> tuple[int, Any]:
        """(line, the element starting at `i`), leaving `i` just past it."""
        while True:
            start = self.i
            if self.text[start] in "[{" and (quick := self._quick(decoder, start)) is not None:
                return quick
            if self.text[start] in "[{":
                try:
                    found = check_depth(self.text, start, MAX_JSON_DEPTH, one_value=True) >= 0
                except JSONTooDeep as exc:
                    raise self.error(start, f"invalid JSON: {exc}") from None
            elif self.text[start] == '"':
                j = _STRING_REST.match(self.text, start + 1).end()  # type: ignore[union-attr]
                found = j < len(self.text) and self.text[j] == '"'
            else:
                found = _SCALAR_END.search(self.text, start) is not None
            if not (found or self.eof):
                if len(self.text) - start > MAX_LINE_BYTES:
                    raise self.error(start, f"list item longer than {MAX_LINE_BYTES >> 20} MiB")
                self.more()
                continue
            try:
                obj, end = decoder.raw_decode(self.text, start)
            except json.JSONDecodeError as exc:
                raise DatasetFormatError(self.path, self.line_at(0) + exc.lineno - 1,
                                         f"invalid JSON: {exc.msg} (column {exc.colno})") from None
            if end - start > MAX_LINE_BYTES:
                raise self.error(start, f"list item longer than {MAX_LINE_BYTES >> 20} MiB")
            line = self.line_at(start)
            self.i = end
            return line, obj

    def _quick(self, decoder: json.JSONDecoder, start: int) -> tuple[int, Any] | None:
        """The usual case without a bracket walk first: a container decoded straight away, then its nesting
        checked only when it holds more brackets than the limit. None: the careful path decides."""
        try:
            obj, end = decoder.raw_decode(self.text, start)
        except RecursionError:  # the decoder's own guard, far past the limit
            raise self.error(start, f"invalid JSON: {JSONTooDeep(MAX_JSON_DEPTH)}") from None
        except json.JSONDecodeError:  # cut by the piece boundary, or malformed
            return None
        if end - start > MAX_LINE_BYTES:
            raise self.error(start, f"list item longer than {MAX_LINE_BYTES >> 20} MiB")
        if self.text.count("[", start, end) + self.text.count("{", start, end) > MAX_JSON_DEPTH:
            try:
                check_depth(self.text, start, MAX_JSON_DEPTH, one_value=True)
            except JSONTooDeep as exc:
                raise self.error(start, f"invalid JSON: {exc}") from None
        line = self.line_at(start)
        self.i = end
        return line, obj

    def records(self) -> Iterator[tuple[int, Any]]:
        decoder = json.JSONDecoder()
        self.skip_ws()
        self.i += 1  # past '[' (the container was sniffed from it)
        self.skip_ws()
        if self.i < len(self.text) and self.text[self.i] == "]":
            self.i += 1
            self.skip_ws()
            if self.i < len(self.text):
                raise self.error(self.i, "invalid JSON: extra data after the list")
            return
        while True:
            if self.i >= len(self.text):
                raise self.error(self.i, "invalid JSON: the list is not closed with ']'")
            yield self.value(decoder)
            self.skip_ws()
            if self.i >= len(self.text):
                raise self.error(self.i, "invalid JSON: the list is not closed with ']'")
            c = self.text[self.i]
            self.i += 1
            if c == "]":
                self.skip_ws()
                if self.i < len(self.text):
                    raise self.error(self.i, "invalid JSON: extra data after the list")
                return
            if c != ",":
                raise self.error(self.i - 1, "invalid JSON: expected ',' or ']' between list items")
            self.skip_ws()


def _json_list_records(path: Path, stream: _Counted) -> Iterator[tuple[int, Any]]:
    return _JsonList(path, stream).records()


def _parquet_records(path: Path, quote: bool = True) -> Iterator[tuple[int, Any]]:
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
        detail = f": {exc}" if quote else ""
        raise DatasetFormatError(path, None, f"not a readable Parquet file{detail}") from None


def _file_records(path: Path, limits: ReadLimits | None = None) -> tuple[Iterator[tuple[int, Any]], str]:
    """(records as (line or row, object), 'line' or 'row'); a file beyond `limits` is refused first."""
    limits = limits or ReadLimits()
    try:
        kind = _container(path)
        if limits.max_bytes is not None or limits.max_pairs is not None:
            _precheck(path, kind, limits)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DatasetFormatError(path, None, f"corrupt gzip data: {exc}") from None
    if kind == "parquet":
        return _parquet_records(path, limits.quote), "row"
    if kind == "empty":
        raise DatasetFormatError(path, None, "empty file: no records")

    def gen() -> Iterator[tuple[int, Any]]:
        reader = _json_list_records if kind == "json-list" else _jsonl_records
        last = 0
        try:
            with _Counted(_open_stream(path), path, limits.max_bytes) as stream:
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
    quote: bool = True
    note: str = ""
    """Appended to a record's problems: the layout detected, when `fmt` was 'auto'."""
    skipped: list[tuple[int | None, str]] = field(default_factory=list)
    n_skipped: int = 0

    def error(self, line: int | None, problem: str) -> DatasetFormatError:
        return DatasetFormatError(self.path, line, problem if self.quote else _redact(problem), self.where)

    def skip(self, line: int | None, why: str) -> None:
        self.n_skipped += 1
        if len(self.skipped) < 5:
            self.skipped.append((line, why))

    def keys_hint(self, rec: dict[str, Any]) -> str:
        """' (record has keys: ...)', or nothing when the file's content may not be quoted."""
        return f" (record has keys: {_keys_hint(rec)})" if self.quote else ""

    def shape_hint(self, rec: dict[str, Any]) -> str:
        """The record's keys and their types ('chosen: list of objects, ...'), never a value; when the file's
        content may not be quoted, only the keys a layout reads are named."""
        if self.quote:
            keys = sorted(map(str, rec))
            shown = [f"{k}: {shape_name(rec[k])}" for k in keys[:12]] + (["..."] if len(keys) > 12 else [])
        else:
            mine = [k for k in ("prompt", "chosen", "rejected") if k in rec]
            shown = [f"{k}: {shape_name(rec[k])}" for k in mine]
            if (others := len(rec) - len(mine)) > 0:
                shown.append(f"{others} other key{'s' if others > 1 else ''}")
        return ", ".join(shown) or "no keys"

    def pair_id(self, subset: str, *parts: object) -> str:
        return "/".join([subset, *([self.id_tag] if self.id_tag else []), *map(str, parts)])


#: Key names the layouts read: a message may always name these, they are this program's words.
_KNOWN_KEYS = frozenset({"prompt", "chosen", "rejected", "objective", "subset", "split", "pair_id", "item_id",
                         "source", "id", "domain", "\\n\\nAssistant:", "role", "content", *layouts.ROLES,
                         *OBJECTIVES, *SPLITS})
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'" r'|"(?:[^"\\]|\\.)*"')


def _redact(problem: str) -> str:
    """A message with every quoted value of the file replaced, for a file the requester did not send."""
    return _QUOTED.sub(lambda m: m.group() if m.group()[1:-1] in _KNOWN_KEYS else "'…'", problem)


def _keys_hint(rec: dict[str, Any]) -> str:
    keys = sorted(map(str, rec))
    return ", ".join(keys[:12]) + (", ..." if len(keys) > 12 else "") if keys else "none"


def _req(rec: dict[str, Any], key: str, line: int | None, ctx: _Ctx) -> Any:
    if key not in rec or rec[key] is None:
        raise ctx.error(line, f"missing key {key!r}{ctx.keys_hint(rec)}")
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
        raise ctx.error(line, f"missing key 'objective'{ctx.keys_hint(rec)}; add it or pass objective=")
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
    split = layouts.split_transcripts(chosen, rejected)
    if split is None:
        raise ctx.error(line, "'chosen' and 'rejected' differ before their first Assistant turn "
                              "(they do not share a prompt)")
    prompt, resp_c, resp_r = split
    if _skipped(resp_c, resp_r, line, ctx):
        return []
    hh_dir = next((d for d in _HH_DIRS if d in ctx.name_hint), None)
    subset = ctx.subset or f"hh-rlhf/{hh_dir or 'harmless-base'}"
    objective = ctx.objective or (objective_of_subset(hh_dir) if hh_dir else None) or "harmless"
    pair_id = ctx.pair_id(subset, line)
    return [PreferencePair(pair_id=pair_id, prompt=prompt, chosen=resp_c, rejected=resp_r,
                           objective=objective, source="hh-rlhf", subset=subset,
                           split=ctx.split or hash_split(prompt))]


def _skipped(chosen: str, rejected: str, line: int | None, ctx: _Ctx) -> bool:
    """Skip (and count) a pair split off whole dialogues with an empty or no difference: real HH-RLHF data has
    a few, so they are passed over, not refused."""
    if not chosen.strip() or not rejected.strip():
        ctx.skip(line, "a final assistant turn is empty")
        return True
    if chosen == rejected:
        ctx.skip(line, "chosen and rejected are identical")
        return True
    return False


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


def _trl_pair(prompt: str, chosen: str, rejected: str, line: int | None, ctx: _Ctx, layout: str
              ) -> list[PreferencePair]:
    """A pair of a TRL layout: TRL names no objective (`objective=` gives it), subset, split or id.

    The split is `hash_split(prompt)`; a pair whose prompt could not be told ('' from `trl-implicit`) is split
    on its own two texts instead (still 80/20, but not prompt-disjoint), never all into one split.
    """
    if ctx.objective is None:
        raise ctx.error(line, f"a {layout} record names no objective; pass objective='helpful' or 'harmless' "
                              "for the file (the upload's objective option)")
    subset = ctx.subset or "custom"
    return [PreferencePair(pair_id=ctx.pair_id(subset, line), prompt=prompt, chosen=chosen, rejected=rejected,
                           objective=ctx.objective, source="custom", subset=subset,
                           split=ctx.split or hash_split(prompt or f"{chosen}\n\n{rejected}"))]


def _trl_implicit(rec: dict[str, Any], line: int | None, ctx: _Ctx) -> list[PreferencePair]:
    chosen = _req_str(rec, "chosen", line, ctx, nonempty=True)
    rejected = _req_str(rec, "rejected", line, ctx, nonempty=True)
    prompt, resp_c, resp_r = layouts.split_transcripts(chosen, rejected) or ("", chosen, rejected)
    if _skipped(resp_c, resp_r, line, ctx):
        return []
    return _trl_pair(prompt, resp_c, resp_r, line, ctx, DatasetFormat.trl_implicit)


def _trl_conversational(rec: dict[str, Any], line: int | None, ctx: _Ctx) -> list[PreferencePair]:
    prompt, chosen, rejected = (layouts.messages(_req(rec, key, line, ctx), key)
                                for key in ("prompt", "chosen", "rejected"))
    return _trl_pair(layouts.render(prompt), layouts.render_response(chosen, "chosen"),
                     layouts.render_response(rejected, "rejected"), line, ctx, DatasetFormat.trl_conversational)


def _trl_conversational_implicit(rec: dict[str, Any], line: int | None, ctx: _Ctx) -> list[PreferencePair]:
    chosen, rejected = (layouts.messages(_req(rec, key, line, ctx), key) for key in ("chosen", "rejected"))
    prompt, tail_c, tail_r = layouts.split_conversations(chosen, rejected)
    resp_c, resp_r = layouts.render_response(tail_c, "chosen"), layouts.render_response(tail_r, "rejected")
    if _skipped(resp_c, resp_r, line, ctx):
        return []
    return _trl_pair(layouts.render(prompt), resp_c, resp_r, line, ctx,
                     DatasetFormat.trl_conversational_implicit)


_PARSERS: dict[str, Callable[[dict[str, Any], int | None, _Ctx], list[PreferencePair]]] = {
    DatasetFormat.canonical: _canonical, DatasetFormat.hh_rlhf: _hh, DatasetFormat.rm_bench: _rm_bench,
    DatasetFormat.rewardbench: _rewardbench, DatasetFormat.trl_implicit: _trl_implicit,
    DatasetFormat.trl_conversational: _trl_conversational,
    DatasetFormat.trl_conversational_implicit: _trl_conversational_implicit,
}
LAYOUTS: tuple[str, ...] = tuple(_PARSERS)
"""Every layout `fmt='auto'` tries (in `sniff_layout`)."""

_SHAPE: dict[str, str] = {
    DatasetFormat.canonical: "text with a prompt", DatasetFormat.rewardbench: "text with a prompt",
    DatasetFormat.hh_rlhf: "text without a prompt", DatasetFormat.trl_implicit: "text without a prompt",
    DatasetFormat.rm_bench: "lists of responses", DatasetFormat.trl_conversational: "messages with a prompt",
    DatasetFormat.trl_conversational_implicit: "messages without a prompt",
}
"""What a record of each layout holds; layouts of one shape differ in keys only, so a file may mix them (each
record is read in the file's layout), never two shapes."""
_SKIP_LABEL: dict[str, str] = {DatasetFormat.hh_rlhf: "HH-RLHF"}


def sniff_layout(rec: dict[str, Any]) -> str | None:
    """The layout a record is in, or None when it is none of them (see LAYOUTS).

    Decided by the keys and the types of `chosen` / `rejected` (both strings, both lists of strings, both
    lists of messages) and by whether there is a `prompt`; the values are validated by the layout's reader.
    Strings without a prompt are `hh-rlhf` when either holds an HH-RLHF Assistant turn, else `trl-implicit`.
    """
    if "chosen" not in rec or "rejected" not in rec:
        return None
    chosen, rejected = rec["chosen"], rec["rejected"]
    if isinstance(chosen, str) and isinstance(rejected, str):
        if "prompt" not in rec:
            return DatasetFormat.hh_rlhf if ASSISTANT in chosen or ASSISTANT in rejected else DatasetFormat.trl_implicit
        if "objective" in rec or "subset" not in rec or "pair_id" in rec:
            return DatasetFormat.canonical
        return DatasetFormat.rewardbench
    if isinstance(chosen, list) and isinstance(rejected, list):
        if any(layouts.is_message_list(rec.get(key)) for key in ("prompt", "chosen", "rejected")):
            return DatasetFormat.trl_conversational if "prompt" in rec else DatasetFormat.trl_conversational_implicit
        return DatasetFormat.rm_bench
    return None


def _stem(name: str) -> str:
    base = re.split(r"[\\/]", name)[-1]
    return re.sub(r"(\.(jsonl|json|parquet|gz))+$", "", base, flags=re.IGNORECASE)


def _parse(records: Iterable[tuple[int, Any]], fmt: str, ctx: _Ctx,
           max_pairs: int | None = None) -> Iterator[PreferencePair]:
    """Every pair of `records`, validated as it goes: nothing is held but the pair ids seen."""
    auto = fmt == "auto"
    layout = None if auto else fmt
    detected_at: int | None = None
    first_line: dict[str, int | None] = {}
    n_records = 0
    for line, rec in records:
        n_records += 1
        if not isinstance(rec, dict):
            raise ctx.error(line, f"expected a JSON object, got {_type_name(rec)}")
        if auto:
            mine = sniff_layout(rec)
            if layout is None:
                if mine is None:
                    raise ctx.error(line, f"cannot tell the layout: none of {', '.join(LAYOUTS)} fits (each needs "
                                          "'chosen' and 'rejected': both strings, both lists of strings or both "
                                          f"lists of messages); the record has {ctx.shape_hint(rec)}")
                layout, detected_at = mine, line
                ctx.note = f" (layout {layout}, detected from {ctx.where} {line})"
            elif mine is not None and _SHAPE[mine] != _SHAPE[layout]:
                raise ctx.error(line, f"the record is in the {mine} layout ({_SHAPE[mine]}), but the file is in "
                                      f"the {layout} layout ({_SHAPE[layout]}, detected from {ctx.where} "
                                      f"{detected_at}): every record of a file must be in one layout; the record "
                                      f"has {ctx.shape_hint(rec)}")
        assert layout is not None
        try:
            new = _PARSERS[layout](rec, line, ctx)
        except DatasetFormatError as exc:
            if not ctx.note:
                raise
            raise DatasetFormatError(exc.path, exc.line, exc.problem + ctx.note, exc.where) from None
        except ValueError as exc:
            raise ctx.error(line, str(exc) + ctx.note) from None
        for p in new:
            if p.pair_id in first_line:
                raise ctx.error(line, f"duplicate pair_id {p.pair_id!r} (first seen at {ctx.where} "
                                      f"{first_line[p.pair_id]})")
            first_line[p.pair_id] = line
            if max_pairs is not None and len(first_line) > max_pairs:
                raise _too_many_pairs(ctx.path, max_pairs)
            yield p
    if n_records == 0:
        raise ctx.error(None, "empty file: no records")
    if ctx.n_skipped:
        shown = ", ".join(f"{ctx.where} {ln} ({why})" for ln, why in ctx.skipped)
        log.warning("%s: skipped %d %s records: %s%s", ctx.path, ctx.n_skipped,
                    _SKIP_LABEL.get(layout or "", layout), shown,
                    ", ..." if ctx.n_skipped > len(ctx.skipped) else "")
    if not first_line:
        raise ctx.error(None, "no usable preference pairs")


def _check_options(fmt: str, objective: str | None, split: str | None, rm_bench_mode: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown dataset format {fmt!r}; use one of {', '.join(FORMATS)}")
    if objective is not None and objective not in OBJECTIVES:
        raise ValueError(f"objective {objective!r} is not one of {', '.join(OBJECTIVES)}")
    if split is not None and split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    if rm_bench_mode not in RM_BENCH_MODES:
        raise ValueError(f"rm_bench_mode {rm_bench_mode!r} is not one of {', '.join(RM_BENCH_MODES)}")


def iter_pairs_file(path: str | os.PathLike[str], fmt: str = "auto", *, objective: str | None = None,
                    subset: str | None = None, split: str | None = None, rm_bench_mode: str = "aligned",
                    limits: ReadLimits | None = None, name: str | None = None) -> Iterator[PreferencePair]:
    """Every pair in one file, validated, one at a time (see `load_pairs_file`).

    With `limits`, a file beyond them raises `DatasetTooLarge` (after a counting pass, before parsing, when
    its size or line count already says so); `name` is the file's own name when `path` is a temporary copy
    (it may name an HH-RLHF data dir or an RM-Bench domain).
    """
    _check_options(fmt, objective, split, rm_bench_mode)
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"dataset file not found: {p}")
    limits = limits or ReadLimits()
    records, where = _file_records(p, limits)
    ctx = _Ctx(path=str(p), name_hint=name or str(p), where=where, objective=objective, subset=subset,
               split=split, rm_bench_mode=rm_bench_mode, quote=limits.quote)
    return _parse(records, fmt, ctx, limits.max_pairs)


def load_pairs_file(path: str | os.PathLike[str], fmt: str = "auto", *, objective: str | None = None,
                    subset: str | None = None, split: str | None = None,
                    rm_bench_mode: str = "aligned", limits: ReadLimits | None = None) -> list[PreferencePair]:
    """Every pair in one file, validated.

    Canonical records keep their own `objective` / `subset` / `split`; the arguments only fill in
    fields a record lacks. For the HH-RLHF, RM-Bench and RewardBench layouts the arguments set the
    field when given; otherwise the objective comes from the subset name (HH-RLHF: 'harmless'
    unless the file name says helpful-*), and the split from `hash_split(prompt)` (80/20, prompt-disjoint).
    The TRL layouts name no objective: `objective` is required (a DatasetFormatError says so); their subset
    is `subset` or 'custom'.
    `rm_bench_mode`: 'aligned' = the 3 index-aligned pairs of a prompt, each its own item;
    'full' = all 3x3 pairs, one item per prompt.
    """
    return list(iter_pairs_file(path, fmt, objective=objective, subset=subset, split=split,
                                rm_bench_mode=rm_bench_mode, limits=limits))


@dataclass(frozen=True)
class PairsSummary:
    """What a validated file holds, without its pairs."""

    n_pairs: int
    objectives: list[str]
    subsets: list[str]


def summarize_pairs_file(path: str | os.PathLike[str], fmt: str = "auto", *, objective: str | None = None,
                         limits: ReadLimits | None = None, name: str | None = None) -> PairsSummary:
    """Validate every record of a file and count its pairs, holding one record at a time (uploads)."""
    n, objectives, subsets = 0, set(), set()
    for pair in iter_pairs_file(path, fmt, objective=objective, limits=limits, name=name):
        n += 1
        objectives.add(pair.objective)
        subsets.add(pair.subset)
    return PairsSummary(n_pairs=n, objectives=sorted(objectives), subsets=sorted(subsets))


def hub_dataset_id(dataset_id: str) -> tuple[str, str | None]:
    """(repo, data_dir) of 'owner/name[/data_dir]'; ValueError for anything else.

    Segments are letters, digits, '-', '_' and '.', never '.' or '..' alone; and the repo must not name a
    directory here, since `datasets.load_dataset` reads a local directory of that name before the hub.
    """
    parts = dataset_id.split("/")
    if len(parts) < 2 or len(dataset_id) > 300 or not all(_HUB_SEGMENT.match(x) and x.strip(".") for x in parts):
        raise ValueError(f"hf:{dataset_id[:300]}: expected 'hf:<owner>/<name>[/<data_dir>]' (letters, digits, "
                         "'-', '_' and '.')")
    repo, data_dir = "/".join(parts[:2]), "/".join(parts[2:]) or None
    if Path(repo).exists():
        raise ValueError(f"hf:{repo}: names a local path here, which would be read instead of the hub; "
                         "upload the file instead")
    return repo, data_dir


def _load_hf(dataset_id: str, fmt: str, rm_bench_mode: str = "aligned") -> list[PreferencePair]:
    """`owner/name[/data_dir]` from the Hugging Face hub (needs the network), every split it has."""
    repo, data_dir = hub_dataset_id(dataset_id)
    import datasets  # lazy: heavy, and only useful online

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
            pairs = load_pairs_file(path, ref.format, objective=ref.objective)
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
