"""Validation of request files: every reason with its line number, summaries, keys, limits."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.core import validate as v
from shared.core.keys import JobLimits, KeyedLine, assign_chunks, assigned_key, with_key
from shared.core.lines import Oversize, iter_lines

FIXTURES = Path(__file__).parent.parent / "fixtures"
GOOD = b'{"request": {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}}'


def _summary(data: bytes, **options: object) -> v.ValidationSummary:
    return v.validate(io.BytesIO(data), v.ValidationOptions(**options))  # type: ignore[arg-type]


def _req(**request: object) -> bytes:
    return orjson.dumps({"request": request})


def test_validate_accepts_the_real_vertex_requests() -> None:
    summary = v.validate((FIXTURES / "requests_real.jsonl").open("rb"))
    assert summary.ok
    assert (summary.valid, summary.keys_present, summary.keys_missing) == (2, 2, 0)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"{not json", v.INVALID_JSON),
        (b'{"request": "\xff\xfe"}', v.INVALID_UTF8),
        (b"[1, 2]", v.NOT_AN_OBJECT),
        (b'"just a string"', v.NOT_AN_OBJECT),
        (b'{"key": "k"}', v.MISSING_REQUEST),
        (b'{"request": []}', v.MISSING_REQUEST),
        (_req(), v.CONTENTS_MISSING),
        (_req(contents={"role": "user"}), v.CONTENTS_NOT_A_LIST),
        (_req(contents=[]), v.CONTENTS_EMPTY),
        (_req(contents=[{"role": "user"}]), v.CONTENT_WITHOUT_PARTS),
        (_req(contents=[{"role": "user", "parts": []}]), v.CONTENT_WITHOUT_PARTS),
        (_req(contents=["text"]), v.CONTENT_WITHOUT_PARTS),
        (_req(contents=[{"role": "user", "parts": [{}]}]), v.PART_WITHOUT_DATA),
        (_req(contents=[{"role": "user", "parts": [{"text": None, "file_data": None}]}]), v.PART_WITHOUT_DATA),
        (_req(contents=[{"role": "user", "parts": ["hi"]}]), v.PART_WITHOUT_DATA),
        (_req(contents=[{"role": "system", "parts": [{"text": "x"}]}]), v.INVALID_ROLE),
        (_req(contents=[{"parts": [{"text": "x"}]}]), v.INVALID_ROLE),
        (b'{"key": 7, "request": {}}', v.INVALID_KEY),
        (b'{"key": "", "request": {}}', v.INVALID_KEY),
    ],
)
def test_validate_reports_each_reason_with_its_line_number(line: bytes, reason: str) -> None:
    summary = _summary(GOOD + b"\n" + line + b"\n" + GOOD + b"\n")
    assert (summary.valid, summary.invalid) == (2, 1)
    assert summary.invalid_by_reason == {reason: 1}
    [issue] = summary.examples[reason]
    assert issue.line == 2 and issue.detail
    assert not summary.ok


def test_validate_accepts_every_part_kind_in_both_spellings() -> None:
    parts = [
        {"text": "t"},
        {"inlineData": {"mimeType": "image/png", "data": "AA=="}},
        {"inline_data": {"mime_type": "image/png", "data": "AA=="}},
        {"fileData": {"fileUri": "gs://b/o", "mimeType": "image/jpeg"}},
        {"file_data": {"file_uri": "gs://b/o", "mime_type": "image/jpeg"}, "text": None},
        {"functionCall": {"name": "f", "args": {}}},
        {"function_response": {"name": "f", "response": {}}},
    ]
    line = _req(contents=[{"role": "user", "parts": parts}, {"role": "model", "parts": [{"text": "ok"}]}])
    assert _summary(line).ok


def test_validate_caps_line_size_without_reading_the_line_whole() -> None:
    big = b'{"request": {"contents": [{"role": "user", "parts": [{"text": "' + b"x" * 5000 + b'"}]}]}}'
    summary = _summary(GOOD + b"\n" + big + b"\n" + GOOD, max_line_bytes=1000)
    assert summary.invalid_by_reason == {v.LINE_TOO_LONG: 1}
    assert summary.examples[v.LINE_TOO_LONG][0].line == 2
    assert str(len(big)) in summary.examples[v.LINE_TOO_LONG][0].detail
    assert summary.valid == 2  # the line after the long one is read normally


def test_validate_tolerates_bom_crlf_and_blank_lines() -> None:
    data = b"\xef\xbb\xbf" + GOOD + b"\r\n\r\n   \n" + GOOD + b"\r\n\n"
    summary = _summary(data)
    assert summary.ok
    assert (summary.lines, summary.blank, summary.valid) == (5, 3, 2)


def test_validate_finds_duplicate_keys_and_collisions_with_assigned_keys() -> None:
    keyed = orjson.loads(GOOD)
    lines = [
        orjson.dumps({**keyed, "key": "a"}),
        orjson.dumps({**keyed, "key": "a"}),  # duplicate of line 1
        GOOD,  # gets line-0000003
        orjson.dumps({**keyed, "key": assigned_key(3)}),  # collides with line 3's assigned key
        orjson.dumps({**keyed, "key": assigned_key(6)}),
        GOOD,  # its assigned key is already a user key (line 5)
    ]
    summary = _summary(b"\n".join(lines))
    assert summary.invalid_by_reason == {v.DUPLICATE_KEY: 1, v.KEY_COLLISION: 2}
    assert [i.line for i in summary.examples[v.DUPLICATE_KEY]] == [2]
    assert [i.line for i in summary.examples[v.KEY_COLLISION]] == [4, 6]
    assert (summary.keys_present, summary.keys_missing, summary.keys_duplicated) == (4, 1, 1)


def test_validate_keeps_only_the_first_examples_but_counts_all() -> None:
    summary = _summary(b"\n".join([b"nope"] * 12), max_examples=3)
    assert summary.invalid_by_reason == {v.INVALID_JSON: 12}
    assert [i.line for i in summary.examples[v.INVALID_JSON]] == [1, 2, 3]


def test_validate_says_when_a_file_exceeds_one_jobs_limits() -> None:
    data = b"\n".join([GOOD] * 5)
    assert not _summary(data).exceeds_job_limits
    assert _summary(data, limits=JobLimits(max_requests=4)).exceeds_job_limits
    assert _summary(data, limits=JobLimits(max_bytes=100)).exceeds_job_limits


def test_validate_an_empty_file_is_not_ok() -> None:
    summary = _summary(b"\n\n")
    assert (summary.valid, summary.invalid, summary.blank) == (0, 0, 2)
    assert not summary.ok


def test_summary_as_dict_is_json_ready() -> None:
    summary = _summary(GOOD + b"\nbad\n")
    data = orjson.loads(orjson.dumps(summary.as_dict()))
    assert data["invalid_by_reason"] == {"invalid_json": 1}
    assert data["examples"]["invalid_json"][0]["line"] == 2
    assert data["keys"] == {"present": 0, "missing": 1, "duplicated": 0}
    assert data["ok"] is False


def test_keyed_lines_give_every_valid_line_a_key_and_skip_invalid_ones() -> None:
    user = orjson.dumps({"key": "mine", **orjson.loads(GOOD)})
    data = b"\n".join([GOOD, b"broken", user, b"", b"  " + GOOD + b"  "])
    summary = v.ValidationSummary()
    keyed = list(v.keyed_lines(io.BytesIO(data), summary=summary))
    assert [(k.line_number, k.key, k.assigned) for k in keyed] == [
        (1, "line-0000001", True),
        (3, "mine", False),
        (5, "line-0000005", True),
    ]
    for line in keyed:
        obj = orjson.loads(line.data)
        assert obj["key"] == line.key
        assert obj["request"] == orjson.loads(GOOD)["request"]
    assert keyed[1].data == user  # user-keyed lines pass through byte for byte
    assert summary.invalid_by_reason == {v.INVALID_JSON: 1}


def test_keyed_lines_are_the_same_for_the_same_file() -> None:
    data = b"\n".join([GOOD, GOOD, GOOD])
    first = [k.data for k in v.keyed_lines(io.BytesIO(data))]
    assert first == [k.data for k in v.keyed_lines(io.BytesIO(data))]
    assert len({orjson.loads(d)["key"] for d in first}) == 3


def test_with_key_inserts_without_reserializing() -> None:
    assert with_key(b' {"request": {"a": 1.50}} ', "k") == b'{"key":"k","request": {"a": 1.50}}'


def test_scanned_invalid_line_cannot_be_keyed() -> None:
    [line] = list(v.scan(io.BytesIO(b"bad"), v.ValidationOptions(), v.ValidationSummary()))
    with pytest.raises(ValueError, match="line 1"):
        line.keyed()


def test_iter_lines_reports_oversize_lines_by_size_and_keeps_numbering() -> None:
    data = b"a\n" + b"b" * 50 + b"\r\nc"
    assert list(iter_lines(io.BytesIO(data), 10)) == [b"a", Oversize(50), b"c"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 300), max_size=60), st.integers(1, 7), st.integers(50, 900))
def test_assign_chunks_respects_limits_and_order(sizes: list[int], max_requests: int, max_bytes: int) -> None:
    lines = [KeyedLine(i, f"k{i}", False, b"x" * size) for i, size in enumerate(sizes, 1)]
    limits = JobLimits(max_requests, max_bytes)
    chunks: dict[int, list[KeyedLine]] = {}
    order = []
    for index, line in assign_chunks(lines, limits):
        chunks.setdefault(index, []).append(line)
        order.append(line)
    assert order == lines  # nothing dropped, duplicated or reordered
    assert sorted(chunks) == list(range(len(chunks)))
    for chunk in chunks.values():
        assert len(chunk) <= max_requests
        # Only a single line larger than the byte limit may exceed it, alone.
        assert sum(len(k.data) + 1 for k in chunk) <= max_bytes or len(chunk) == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_validate_never_raises_and_accounts_for_every_line(data: bytes) -> None:
    summary = _summary(data, max_line_bytes=64)
    content = data.removeprefix(b"\xef\xbb\xbf")  # a BOM is not a line
    assert summary.lines == content.count(b"\n") + (1 if content and not content.endswith(b"\n") else 0)
    assert summary.valid + summary.invalid + summary.blank == summary.lines
    assert sum(summary.invalid_by_reason.values()) == summary.invalid


PART_VALUES = st.none() | st.text(max_size=4) | st.dictionaries(st.text(max_size=3), st.integers(), max_size=1)
request_json = st.fixed_dictionaries(
    {},
    optional={
        "key": st.one_of(st.text(max_size=5), st.integers(-(2**63), 2**63 - 1), st.none()),
        "request": st.fixed_dictionaries(
            {},
            optional={
                "contents": st.lists(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "role": st.sampled_from(["user", "model", "system", "", None]),
                            "parts": st.lists(
                                st.dictionaries(
                                    st.sampled_from(["text", "fileData", "thought", "x"]), st.text(max_size=4)
                                ),
                                max_size=2,
                            ),
                        },
                    ),
                    max_size=2,
                )
            },
        ),
    },
)


@settings(max_examples=300, deadline=None)
@given(st.lists(request_json, max_size=8))
def test_validate_valid_lines_are_exactly_those_that_keyed_lines_yields(objs: list[dict[str, object]]) -> None:
    data = b"\n".join(orjson.dumps(o) for o in objs)
    summary = _summary(data)
    keyed = list(v.keyed_lines(io.BytesIO(data)))
    assert len(keyed) == summary.valid
    assert len({k.key for k in keyed}) == len(keyed)  # keys are unique among what is sent


def _reference_lines(data: bytes, cap: int) -> list[bytes | Oversize]:
    """What iter_lines must give, computed the obvious (whole-file) way."""
    data = data.removeprefix(b"\xef\xbb\xbf")
    pieces = data.split(b"\n")
    if pieces and pieces[-1] == b"":
        pieces.pop()
    out = []
    for piece in pieces:
        line = piece.removesuffix(b"\r")
        out.append(line if len(line) <= cap else Oversize(len(line)))
    return out


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from([b"a", b"bb", b"\n", b"\r", b"\r\n", b"xyz" * 5, b"\xef\xbb\xbf"]), max_size=40),
    st.integers(1, 12),
    st.integers(1, 9),
)
def test_iter_lines_matches_a_whole_file_split_for_any_block_size(pieces: list[bytes], cap: int, block: int) -> None:
    data = b"".join(pieces)
    assert list(iter_lines(io.BytesIO(data), cap, block_size=block)) == _reference_lines(data, cap)


def test_fast_path_part_fields_are_the_data_fields() -> None:
    assert tuple(v._Part.__struct_fields__) == v.PART_DATA_FIELDS


@settings(max_examples=500, deadline=None)
@given(
    request_json
    | st.fixed_dictionaries({"request": st.lists(st.integers(-(2**63), 2**63 - 1), max_size=1) | st.text(max_size=2)})
)
def test_validate_fast_and_slow_paths_agree(obj: dict[str, object]) -> None:
    data = orjson.dumps(obj)
    try:
        fast_ok = v._fast_ok(v._LINE_DECODER.decode(data))
    except Exception:
        fast_ok = False
    assert fast_ok == (v._check_request(obj) is None)
