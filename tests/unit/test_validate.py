"""Validation of request files: every reason with its line number, summaries, keys, limits."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest
from hypothesis import assume, given, settings
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
        # Invalid UTF-8 inside strings of an otherwise valid request: a decoded field, the key,
        # members the fast path skips (msgspec does not check their bytes), a member name.
        (GOOD.replace(b'"hi"', b'"caf\xe9"'), v.INVALID_UTF8),  # Latin-1
        (GOOD.replace(b'"hi"', b'"\xe6\x97"'), v.INVALID_UTF8),  # truncated sequence
        (GOOD.replace(b'"hi"', b'"\xc0\xaf"'), v.INVALID_UTF8),  # overlong '/'
        (GOOD.replace(b'"hi"', b'"\xed\xa0\x80"'), v.INVALID_UTF8),  # an encoded surrogate
        (GOOD.replace(b'"hi"', b'"\xf4\x90\x80\x80"'), v.INVALID_UTF8),  # beyond U+10FFFF
        (b'{"key": "k\xff",' + GOOD[1:], v.INVALID_UTF8),
        (GOOD[:-1] + b', "systemInstruction": {"parts": [{"text": "\xed\xa0\x80"}]}}', v.INVALID_UTF8),
        (b'{"labels": {"\xff": "x"},' + GOOD[1:], v.INVALID_UTF8),
        (GOOD.replace(b'"hi"', b'"a\x00b"'), v.INVALID_JSON),  # a raw NUL
        (b"\xef\xbb\xbf" + GOOD, v.INVALID_JSON),  # a BOM that does not open the file
        (GOOD + b"\r" + GOOD, v.INVALID_JSON),  # a lone CR is not a line break
        (b"[1, 2]", v.NOT_AN_OBJECT),
        (b'"just a string"', v.NOT_AN_OBJECT),
        (b'{"key": "k"}', v.MISSING_REQUEST),
        (b'{"key": null,' + GOOD[1:], v.INVALID_KEY),  # null is not "no key": it would be sent twice
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


def test_validate_invalid_utf8_detail_gives_the_byte_offset() -> None:
    line = GOOD.replace(b'"hi"', b'"caf\xe9"')
    summary = _summary(GOOD + b"\n" + line)
    [issue] = summary.examples[v.INVALID_UTF8]
    offset = line.index(b"\xe9")
    assert (issue.line, issue.detail) == (2, f"invalid UTF-8 at byte {offset} (invalid continuation byte)")


def test_validate_odd_bytes_that_are_still_valid_json_pass() -> None:
    lines = [
        GOOD.replace(b'"hi"', b'"a\\u0000b"'),  # an escaped NUL
        GOOD.replace(b'"hi"', b'"\xef\xbb\xbf"'),  # a BOM inside a string is a character
        GOOD.replace(b": ", b":\r"),  # CR between tokens is JSON whitespace
    ]
    summary = _summary(b"\n".join(lines))
    assert (summary.valid, summary.invalid) == (3, 0)


# line -> reason (None: valid); the file's comments are in the test that made it: see the keys.
BAD_BYTES_VERDICTS = {
    1: None,
    2: v.INVALID_UTF8,  # Latin-1 in a part's text
    3: v.INVALID_UTF8,  # an encoded surrogate in systemInstruction (a member the fast path skips)
    4: None,
    5: v.INVALID_UTF8,  # an overlong sequence in the key
    6: v.INVALID_UTF8,  # a truncated sequence in generationConfig
    7: v.INVALID_JSON,  # a raw NUL in a string
    8: v.INVALID_JSON,  # a BOM at the start of line 8
    9: v.INVALID_JSON,  # two objects joined by a lone CR
    10: None,  # CR as whitespace between tokens
    11: v.INVALID_UTF8,  # 0xFF as a member name
    12: None,
}


def test_validate_reports_every_bad_byte_line_of_a_file_and_goes_on() -> None:
    data = (FIXTURES / "requests_bad_bytes.jsonl").read_bytes()
    summary = v.ValidationSummary()
    scanned = list(v.scan(io.BytesIO(data), v.ValidationOptions(max_examples=100), summary))
    assert {s.line_number: s.issue and s.issue.reason for s in scanned} == BAD_BYTES_VERDICTS
    for line in scanned:
        if line.issue is not None and line.issue.reason == v.INVALID_UTF8:
            with pytest.raises(UnicodeDecodeError) as bad:
                line.data.decode()
            assert line.issue.detail.startswith(f"invalid UTF-8 at byte {bad.value.start} (")
    keyed = list(v.keyed_lines(io.BytesIO(data)))
    assert [k.key for k in keyed] == ["ok-1", "ok-2", "cr-as-whitespace", "ok-3"]
    assert (summary.valid, summary.invalid, summary.invalid_by_reason) == (
        4,
        8,
        {v.INVALID_UTF8: 5, v.INVALID_JSON: 3},
    )


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


# Invalid UTF-8, spliced into the bytes of a JSON string (where a byte-level fuzzer rarely reaches):
# known-bad sequences, and any run of high bytes that does not decode. High bytes only, so the
# line's JSON structure is unchanged and only its encoding is wrong.
def _not_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return True
    return False


invalid_utf8 = st.sampled_from(
    [
        b"\xe9",  # Latin-1 e-acute
        b"\xff",
        b"\x80",  # a lone continuation byte
        b"\xc3",  # a lead byte with no continuation
        b"\xe6\x97",  # a 3-byte sequence cut short
        b"\xf0\x9f\x98",  # an emoji cut short
        b"\xc0\xaf",  # overlong '/'
        b"\xe0\x80\xaf",  # overlong, 3 bytes
        b"\xed\xa0\x80",  # an encoded high surrogate
        b"\xed\xbf\xbf",  # an encoded low surrogate
        b"\xf4\x90\x80\x80",  # beyond U+10FFFF
        b"\xf8\x88\x80\x80\x80",  # a 5-byte form
    ]
) | st.binary(min_size=1, max_size=5).map(lambda b: bytes(x | 0x80 for x in b)).filter(_not_utf8)


def string_splice_points(data: bytes) -> list[int]:
    """Offsets inside the JSON strings of ``data`` (compact JSON) where bytes can be inserted
    without breaking an escape or a character: each string's start and end, and every
    character boundary in between."""
    points: list[int] = []
    inside, index = False, 0
    while index < len(data):
        byte = data[index]
        if not inside:
            if byte == 0x22:
                inside = True
                points.append(index + 1)
            index += 1
        elif byte == 0x22:
            inside = False
            points.append(index)
            index += 1
        else:
            index += 6 if data[index : index + 2] == b"\\u" else 2 if byte == 0x5C else 1
            while index < len(data) and 0x80 <= data[index] < 0xC0:
                index += 1  # the rest of a multi-byte character
            if index < len(data) and data[index] != 0x22:
                points.append(index)
    return points


@st.composite
def spliced(draw: st.DrawFn, data: bytes, within: tuple[int, int] | None = None) -> tuple[bytes, int]:
    """``data`` with invalid UTF-8 inserted in one of its strings (between offsets ``within``
    when given), and the insertion offset."""
    points = string_splice_points(data)
    if within is not None:
        points = [at for at in points if within[0] <= at <= within[1]]
    assert points, "every generated line has a string"
    at = draw(st.sampled_from(points))
    return data[:at] + draw(invalid_utf8) + data[at:], at


def test_string_splice_points_stay_inside_strings() -> None:
    data = orjson.dumps({"key": 'a\\b\u00e9\n"', "n": 1, "é": ["x"]})
    for at in string_splice_points(data):
        line = data[:at] + b"\xff" + data[at:]
        assert orjson.loads(line.replace(b"\xff", b"Z")) != orjson.loads(data)  # it landed in a string
        with pytest.raises(UnicodeDecodeError):
            line.decode()


keyed_request_json = st.tuples(request_json, st.text(min_size=1, max_size=5) | st.none()).map(
    lambda t: {**t[0], "key": t[1]} if t[1] is not None else t[0]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(keyed_request_json, min_size=1, max_size=6), st.data())
def test_validate_reports_invalid_utf8_inside_strings_on_exactly_that_line(
    objs: list[dict[str, object]], data: st.DataObject
) -> None:
    lines = [orjson.dumps(o) for o in objs]
    with_strings = [i for i, line in enumerate(lines) if string_splice_points(line)]
    assume(with_strings)
    bad = data.draw(st.sets(st.sampled_from(with_strings), min_size=1), label="corrupted lines")
    corrupted = list(lines)
    offsets: dict[int, int] = {}
    for index in bad:
        corrupted[index], offsets[index + 1] = data.draw(spliced(lines[index]), label=f"line {index + 1}")
    # The reference: the same file with each corrupted line replaced by one that is just as invalid
    # (and, like it, takes no key): every other line must keep its verdict.
    reference = [b"x" if i in bad else line for i, line in enumerate(lines)]

    def verdicts(raw: list[bytes]) -> list[tuple[int, str | None, str | None]]:
        stream = io.BytesIO(b"\n".join(raw))
        options = v.ValidationOptions(max_examples=100)
        return [
            (s.line_number, s.key, s.issue and s.issue.reason) for s in v.scan(stream, options, v.ValidationSummary())
        ]

    got, expected = verdicts(corrupted), verdicts(reference)
    assert [g[0] for g in got] == list(range(1, len(lines) + 1))
    for (number, key, reason), (_, ref_key, ref_reason) in zip(got, expected, strict=True):
        if number in offsets:
            # The line's own key is kept (its FAILED row carries it) when the bad bytes spared it.
            original = objs[number - 1].get("key")
            intact = (
                isinstance(original, str) and original and b'"key":' + orjson.dumps(original) in corrupted[number - 1]
            )
            assert (key, reason) == (original if intact else None, v.INVALID_UTF8)
        else:
            assert (key, reason) == (ref_key, ref_reason)
    summary = v.validate(io.BytesIO(b"\n".join(corrupted)), v.ValidationOptions(max_examples=100))
    assert summary.invalid_by_reason.get(v.INVALID_UTF8) == len(bad)
    for issue in summary.examples[v.INVALID_UTF8]:
        start = int(issue.detail.removeprefix("invalid UTF-8 at byte ").split(" ")[0])
        assert offsets[issue.line] <= start < offsets[issue.line] + 5  # at the inserted bytes
    assert [k.line_number for k in v.keyed_lines(io.BytesIO(b"\n".join(corrupted)))] == [
        number for number, _, reason in got if reason is None
    ]
