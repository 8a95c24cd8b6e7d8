"""Every malformed input raises DatasetFormatError naming the file, the line (or row) and the problem."""

from __future__ import annotations

import gzip
import json
import pickle
import tracemalloc
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from workers.data.loaders import MAX_LINE_BYTES, DatasetFormatError, load_pairs_file


def _error(path: Path, fmt: str = "auto", **kw: Any) -> DatasetFormatError:
    with pytest.raises(DatasetFormatError) as exc:
        load_pairs_file(path, fmt, **kw)
    assert exc.type is DatasetFormatError  # never a raw JSONDecodeError / KeyError / UnicodeDecodeError
    assert exc.value.path == str(path)
    return exc.value


def _lines(files: Any, name: str, lines: list[str]) -> Path:
    return files.raw(name, "".join(line + "\n" for line in lines).encode())


def test_error_string_and_pickle() -> None:
    e = DatasetFormatError("/x/y.jsonl", 3, "invalid JSON")
    assert str(e) == "/x/y.jsonl, line 3: invalid JSON"
    assert (e.path, e.line, e.problem) == ("/x/y.jsonl", 3, "invalid JSON")
    assert str(DatasetFormatError("/x/y.jsonl", None, "empty file")) == "/x/y.jsonl: empty file"
    assert isinstance(e, ValueError)
    back = pickle.loads(pickle.dumps(e))
    assert (type(back), str(back), back.line) == (DatasetFormatError, str(e), 3)


def test_broken_json_names_the_line(files: Any) -> None:
    ok = json.dumps(files.canon(1))
    path = _lines(files, "broken.jsonl", [ok, json.dumps(files.canon(2)), '{"prompt": "q", "chosen": ', ok])
    e = _error(path)
    assert e.line == 3
    assert e.problem.startswith("invalid JSON: Expecting value")
    assert str(e) == f"{path}, line 3: {e.problem}"


def test_broken_json_in_a_gz_file(files: Any) -> None:
    data = (json.dumps(files.canon(1)) + "\n" + "{not json}\n").encode()
    e = _error(files.raw("broken.jsonl.gz", gzip.compress(data)))
    assert e.line == 2 and e.problem.startswith("invalid JSON")


def test_broken_json_list_names_the_line(files: Any) -> None:
    text = json.dumps([files.canon(1), files.canon(2)], indent=2)
    path = files.raw("list.json", text.replace('"bad answer 2"', '"bad answer 2" oops').encode())
    e = _error(path)
    assert e.line == text.split("\n").index('    "rejected": "bad answer 2",') + 1
    assert e.problem.startswith("invalid JSON: Expecting ',' delimiter")
    unclosed = files.raw("unclosed.json", text[:-1].encode())
    assert _error(unclosed).problem == "invalid JSON: the list is not closed with ']'"


@pytest.mark.parametrize("name", ["missing.jsonl", "missing.json"])
def test_missing_key_names_key_and_line(files: Any, name: str) -> None:
    recs = [files.canon(1), files.canon(2), {k: v for k, v in files.canon(3).items() if k != "rejected"}]
    path = files.jsonl(name, recs)
    if name.endswith(".json"):
        path = files.json(name, recs)
    e = _error(path)
    assert e.problem.startswith("missing key 'rejected' (record has keys: chosen, objective, pair_id, ")
    # JSONL: third line; JSON list (indent=2, 10 lines per record): the line the third object starts on
    assert e.line == (3 if name.endswith(".jsonl") else 22)


def test_missing_objective_needs_the_argument(files: Any) -> None:
    rec = {k: v for k, v in files.canon(1).items() if k != "objective"}
    e = _error(files.jsonl("noobj.jsonl", [rec]))
    assert e.line == 1 and e.problem.startswith("missing key 'objective'")
    assert load_pairs_file(files.jsonl("noobj.jsonl", [rec]), objective="harmless")[0].objective == "harmless"


@pytest.mark.parametrize(("name", "data"), [
    ("empty.jsonl", b""),
    ("blank.jsonl", b"\n  \n\t\n"),
    ("empty.jsonl.gz", gzip.compress(b"")),
    ("empty.json", b"[]"),
    ("empty2.json", b"  [ \n ]  \n"),
])
def test_empty_file(files: Any, name: str, data: bytes) -> None:
    e = _error(files.raw(name, data))
    assert (e.line, e.problem) == (None, "empty file: no records")
    assert str(e) == f"{files.root / name}: empty file: no records"


def test_non_utf8_byte_names_the_line(files: Any) -> None:
    good = json.dumps(files.canon(1)).encode()
    bad = json.dumps(files.canon(2)).encode().replace(b"good answer 2", b"good \xff answer")
    e = _error(files.raw("latin.jsonl", good + b"\n" + good.replace(b"p1", b"p0") + b"\n" + bad + b"\n"))
    assert e.line == 3
    col = bad.index(b"\xff") + 1
    assert e.problem == f"not valid UTF-8: byte 0xff at column {col}"
    e2 = _error(files.raw("latin.json", b"[\n" + good + b",\n" + bad + b"\n]\n"))
    assert e2.line == 3 and e2.problem.startswith("not valid UTF-8: byte 0xff")


@pytest.mark.parametrize("name", ["huge.jsonl", "huge.jsonl.gz"])
def test_50_mb_line_is_refused_without_reading_it_whole(files: Any, name: str) -> None:
    first = json.dumps(files.canon(1)).encode() + b"\n"
    huge = json.dumps(files.canon(2, chosen="x" * (50 * 1024 * 1024))).encode() + b"\n"
    assert len(huge) > 50 * 1024 * 1024
    data = gzip.compress(first + huge, compresslevel=1) if name.endswith(".gz") else first + huge
    path = files.raw(name, data)
    del data
    del huge
    tracemalloc.start()
    try:
        e = _error(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (e.line, e.problem) == (2, "line longer than 8 MiB")
    assert str(e) == f"{path}, line 2: line longer than 8 MiB"
    assert peak < 3 * MAX_LINE_BYTES  # at most the limit was read, never the 50 MB line


def test_line_of_exactly_the_limit_is_accepted(files: Any) -> None:
    rec = files.canon(1)
    overhead = len(json.dumps({**rec, "chosen": ""}).encode())
    line = json.dumps({**rec, "chosen": "y" * (MAX_LINE_BYTES - overhead)}).encode()
    assert len(line) == MAX_LINE_BYTES
    assert len(load_pairs_file(files.raw("edge.jsonl", line + b"\n"))[0].chosen) == MAX_LINE_BYTES - overhead
    e = _error(files.raw("edge2.jsonl", line + b"y\n"))
    assert (e.line, e.problem) == (1, "line longer than 8 MiB")


@pytest.mark.parametrize(("change", "problem"), [
    ({"chosen": 5}, "'chosen' must be a string, got int"),
    ({"prompt": ["a"]}, "'prompt' must be a string, got list"),
    ({"objective": True}, "'objective' must be a string, got boolean"),
    ({"pair_id": 1.5}, "'pair_id' must be a string or an integer, got float"),
    ({"chosen": ""}, "'chosen' is empty"),
    ({"rejected": "   "}, "'rejected' is empty"),
    ({"objective": "honest"}, "objective 'honest' is not one of helpful, harmless"),
    ({"split": "validation"}, "split 'validation' is not one of train, test"),
    ({"chosen": None}, "missing key 'chosen'"),
])
def test_wrong_values(files: Any, change: dict[str, Any], problem: str) -> None:
    e = _error(files.jsonl("bad.jsonl", [files.canon(1), files.canon(2, **change)]))
    assert e.line == 2
    assert e.problem.startswith(problem)


def test_record_not_an_object_and_unknown_layout(files: Any) -> None:
    e = _error(_lines(files, "arr.jsonl", [json.dumps(files.canon(1)), "[1, 2]"]))
    assert (e.line, e.problem) == (2, "expected a JSON object, got list")
    e = _error(_lines(files, "text.jsonl", ['{"text": "hello"}']))
    assert e.line == 1 and e.problem.startswith("cannot tell the layout")
    e = _error(_lines(files, "plain.txt", ["hello world"]))
    assert e.line == 1 and e.problem.startswith("invalid JSON")


def test_duplicate_pair_id(files: Any) -> None:
    e = _error(files.jsonl("dup.jsonl", [files.canon(1), files.canon(2), files.canon(3, pair_id="p1")]))
    assert (e.line, e.problem) == (3, "duplicate pair_id 'p1' (first seen at line 1)")


def test_rm_bench_malformed(files: Any) -> None:
    base = files.rm_bench(1, "q")
    cases = [({"chosen": ["a", "b"]}, "aligned mode needs as many chosen as rejected responses (2 vs 3)"),
             ({"rejected": []}, "'rejected' is an empty list"),
             ({"chosen": ["a", 2, "c"]}, "chosen[1] must be a string, got int"),
             ({"rejected": ["a", "", "c"]}, "rejected[1] is empty")]
    for change, problem in cases:
        path = files.json("chat.json", [base, {**base, "id": 2, **change}])
        second_start = [i + 1 for i, line in enumerate(path.read_text().split("\n")) if line == "  {"][1]
        e = _error(path, "rm-bench")
        assert (e.line, e.problem) == (second_start, problem)
    assert second_start == 17


def test_hh_rlhf_malformed(files: Any) -> None:
    e = _error(files.jsonl("hh.jsonl", [{"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "no turns"}]))
    assert (e.line, e.problem) == (1, "'rejected' has no '\\n\\nAssistant:' turn; not an HH-RLHF dialogue "
                                      "(layout hh-rlhf, detected from line 1)")
    e = _error(files.jsonl("hh2.jsonl", [{"chosen": "\n\nHuman: a\n\nAssistant: b",
                                          "rejected": "\n\nHuman: z\n\nAssistant: b"}]))
    assert e.problem.startswith("'chosen' and 'rejected' differ before their first Assistant turn")


def test_parquet_problems_name_the_row(files: Any, tmp_path: Path) -> None:
    rows = [files.canon(1), files.canon(2, objective="nice")]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "bad.parquet")
    e = _error(tmp_path / "bad.parquet")
    assert (e.line, e.where) == (2, "row")
    assert str(e) == (f"{tmp_path / 'bad.parquet'}, row 2: objective 'nice' is not one of helpful, harmless "
                      "(layout canonical, detected from row 1)")
    no_chosen = pa.Table.from_pylist([files.canon(1)]).drop_columns(["chosen"])
    pq.write_table(no_chosen, tmp_path / "nochosen.parquet")
    assert _error(tmp_path / "nochosen.parquet").problem.startswith("cannot tell the layout")
    pq.write_table(pa.Table.from_pylist(rows).slice(0, 0), tmp_path / "empty.parquet")
    assert _error(tmp_path / "empty.parquet").problem == "empty file: no records"
    truncated = (tmp_path / "bad.parquet").read_bytes()
    e = _error(files.raw("cut.parquet", truncated[: len(truncated) // 2]))
    assert e.line is None and e.problem.startswith("not a readable Parquet file")


def test_corrupt_gzip(files: Any) -> None:
    data = gzip.compress(("".join(json.dumps(files.canon(i)) + "\n" for i in range(200))).encode())
    e = _error(files.raw("cut.jsonl.gz", data[: len(data) // 2]))
    assert e.problem.startswith("corrupt gzip data")
    e = _error(files.raw("junk.jsonl.gz", b"\x1f\x8b" + b"\x00" * 40))
    assert e.problem.startswith("corrupt gzip data")
