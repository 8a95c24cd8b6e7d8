"""How an incoming dataset is read: streamed in bounded pieces, nesting-limited, counted against its limits, and
(for a file the requester did not send) described without quoting any of its content."""

from __future__ import annotations

import gzip
import json
import tracemalloc
from pathlib import Path

import pytest

from workers.data import loaders
from workers.data.loaders import (
    DatasetFormatError,
    DatasetTooLarge,
    ReadLimits,
    load_pairs_file,
    summarize_pairs_file,
)
from workers.data.safe_json import MAX_JSON_DEPTH, JSONTooDeep, check_depth, loads

REC = {"prompt": "q", "chosen": "a", "rejected": "b", "objective": "helpful", "split": "test"}


def _rec(i: int, n: int = 1) -> dict[str, str]:
    return REC | {"pair_id": f"p{i}", "chosen": "c" * n}


def test_a_json_list_across_many_pieces_equals_the_whole_parse(tmp_path: Path) -> None:
    recs = [_rec(i, n=(i * 7919) % 20_000 + 1) | {"prompt": 'q "quoted" \\ [x] {y}'} for i in range(400)]
    path = tmp_path / "list.json"
    path.write_text(json.dumps(recs, indent=1))
    assert path.stat().st_size > 3 * loaders._CHUNK
    assert [p.chosen for p in load_pairs_file(path)] == [r["chosen"] for r in recs]
    gz = tmp_path / "list.json.gz"  # sniffed from the bytes
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert summarize_pairs_file(gz, name="list.json.gz").n_pairs == 400


def test_a_json_list_is_read_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    with path.open("w") as f:
        f.write("[")
        f.write(",\n".join(json.dumps(_rec(i, n=2000)) for i in range(15_000)))  # ~30 MB
        f.write("]")
    tracemalloc.start()
    try:
        summary = summarize_pairs_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert summary.n_pairs == 15_000
    assert peak < 12 * 1024 * 1024  # a piece and the pair ids, never the 30 MB file


R1, R2, R3 = (json.dumps(_rec(i)) for i in (1, 2, 3))


@pytest.mark.parametrize(("text", "line", "problem"), [
    (f"[{R1},\n{R2}\n{R3}]", 3, "expected ',' or ']'"),
    (f'[{R1},\n\n{{"prompt": tru}}]', 3, "Expecting value"),
    (f'[{R1},\n{{"prompt": ', 2, "Expecting value"),
    (f"[{R1}] x", 1, "extra data"),
    ("[" + "[" * 70 + "]" * 70 + "]", 1, "nested deeper than 64 levels"),
    ("[" * 100_000, 1, "nested deeper than 64 levels"),
    (f'[{R1},\n{{"prompt": "' + "x" * (loaders.MAX_LINE_BYTES + 10) + '"}]', 2, "longer than 8 MiB"),
])
def test_json_list_errors_name_the_line(tmp_path: Path, text: str, line: int, problem: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(DatasetFormatError) as info:
        load_pairs_file(path, "canonical")
    assert info.value.line == line and problem in info.value.problem, info.value


def test_json_lines_nesting_is_limited(tmp_path: Path) -> None:
    ok = {"prompt": "q", "chosen": "a", "rejected": "b", "objective": "helpful", "extra": [[[[1]]]]}
    path = tmp_path / "deep.jsonl"
    path.write_text(json.dumps(ok) + "\n" + '{"x": ' * 5000 + "1" + "}" * 5000 + "\n")
    with pytest.raises(DatasetFormatError) as info:
        load_pairs_file(path)
    assert info.value.line == 2 and info.value.problem == "invalid JSON: JSON nested deeper than 64 levels"


def test_safe_json() -> None:
    assert loads('{"a": [[["]]]]]]"]]]}') == {"a": [[["]]]]]]"]]]}
    assert loads("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH) is not None
    for text in ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), "[" * 10**6, '{"a":' * 1000):
        with pytest.raises(JSONTooDeep):
            loads(text)
    assert check_depth('["\\"[[[[" , {"b": [1]}] tail', one_value=True) == len('["\\"[[[[" , {"b": [1]}]')
    assert check_depth('["abc', one_value=True) == -1


def test_limits_count_decompressed_bytes_and_pairs(tmp_path: Path) -> None:
    lines = b"".join(json.dumps(_rec(i, n=100)).encode() + b"\n" for i in range(50))
    gz = tmp_path / "x.jsonl.gz"
    gz.write_bytes(gzip.compress(lines))
    assert summarize_pairs_file(gz, limits=ReadLimits(max_bytes=len(lines), max_pairs=50)).n_pairs == 50
    with pytest.raises(DatasetTooLarge) as info:
        summarize_pairs_file(gz, limits=ReadLimits(max_bytes=len(lines) - 1))
    assert info.value.limit == "max_decompressed_bytes" and info.value.value == len(lines) - 1
    with pytest.raises(DatasetTooLarge) as info:
        summarize_pairs_file(gz, limits=ReadLimits(max_pairs=49))
    assert info.value.limit == "max_pairs" and "records" in info.value.problem  # refused by the counting pass
    blank = tmp_path / "blank.jsonl"
    blank.write_bytes(b"\n \n\r\n" * 100 + lines + b"\n\n\n")
    assert summarize_pairs_file(blank, limits=ReadLimits(max_pairs=50)).n_pairs == 50  # blank lines are no records
    rm = tmp_path / "rm.json"  # one record, nine pairs: the pair count stops it while parsing
    rm.write_text(json.dumps([{"id": 1, "prompt": "q", "domain": "chat", "chosen": ["a", "b", "c"],
                               "rejected": ["x", "y", "z"]}]))
    with pytest.raises(DatasetTooLarge) as info:
        load_pairs_file(rm, rm_bench_mode="full", limits=ReadLimits(max_pairs=8))
    assert info.value.limit == "max_pairs" and "preference pairs" in info.value.problem


SECRET = {"api_token": "tok-123", "password": "hunter2", "subset": "s3cr3t-subset", "pair_id": "id-777"}


@pytest.mark.parametrize(("records", "fmt"), [
    ([SECRET], "auto"), ([SECRET], "canonical"), ([SECRET], "rm-bench"), ([SECRET], "rewardbench"),
    ([SECRET], "hh-rlhf"), ([REC | {"subset": "s3cr3t-subset", "objective": "kindness"}], "auto"),
    ([REC | SECRET, REC | SECRET], "canonical"),
    ([{"prompt": "q", "chosen": "a", "rejected": "b", "subset": "s3cr3t-subset"}], "rewardbench"),
])
def test_a_file_the_requester_did_not_send_is_never_quoted(tmp_path: Path, records: list[dict[str, str]],
                                                          fmt: str) -> None:
    path = tmp_path / "secret.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(DatasetFormatError) as quoted:
        load_pairs_file(path, fmt)
    with pytest.raises(DatasetFormatError) as redacted:
        load_pairs_file(path, fmt, limits=ReadLimits(quote=False))
    assert redacted.value.line == quoted.value.line
    hidden = ("api_token", "password", *SECRET.values(), "kindness")  # its own keys and every value
    for value in hidden:
        assert value not in redacted.value.problem, redacted.value.problem
    assert any(value in quoted.value.problem for value in hidden)  # an upload's own messages may quote it
