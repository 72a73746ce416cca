"""The log filter evaluator the observability test relies on: Cloud Logging's rules, not looser ones."""

from __future__ import annotations

import pytest

from tests.logfilter import compile_filter, entry_of, extract

LINE = entry_of(
    {
        "severity": "WARNING",
        "message": "event dropped: too old",
        "logger": "gbp",
        "function": "submit_batch",
        "rows": 3,
    },
    "gbp-submit-batch",
)


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ('jsonPayload.message="event dropped: too old"', True),
        ('jsonPayload.message="event dropped"', False),  # = is equality, not a prefix
        ('jsonPayload.message:"DROPPED"', True),  # : is a case-blind substring
        ('jsonPayload.message=~"^event (handled|dropped)"', True),
        ('jsonPayload.message!~"^event"', False),
        ("severity>=WARNING", True),
        ("severity>=ERROR", False),
        ('resource.type="cloud_run_revision" AND jsonPayload.logger=~"^gbp"', True),
        ('jsonPayload.function="collect_results" OR jsonPayload.function="submit_batch"', True),
        # OR binds tighter than AND: a AND b OR c is a AND (b OR c)
        ('jsonPayload.logger="nope" AND jsonPayload.function="x" OR jsonPayload.rows>=3', False),
        ('NOT jsonPayload.missing="x"', True),
        ("jsonPayload.rows>2", True),
        ('(jsonPayload.message="a" OR jsonPayload.message="event dropped: too old") severity=WARNING', True),
    ],
)
def test_filters_follow_cloud_loggings_rules(text: str, matches: bool) -> None:
    assert compile_filter(text)(LINE) is matches


@pytest.mark.parametrize("text", ['jsonPayload.message="unclosed', "(a=b", "a ~ b", 'a="x" )'])
def test_a_filter_it_cannot_read_is_an_error_not_a_match(text: str) -> None:
    with pytest.raises(SyntaxError):
        compile_filter(text)(LINE)


def test_extractors() -> None:
    assert extract("EXTRACT(jsonPayload.function)", LINE) == "submit_batch"
    assert extract("EXTRACT(jsonPayload.rows)", LINE) == "3"
    assert extract('REGEXP_EXTRACT(jsonPayload.message, "^event (\\\\w+)")', LINE) == "dropped"
    assert extract("EXTRACT(jsonPayload.nothing)", LINE) is None
    with pytest.raises(SyntaxError):
        extract('REGEXP_EXTRACT(jsonPayload.message, "(event) (\\\\w+)")', LINE)
    with pytest.raises(SyntaxError):
        extract("SUM(jsonPayload.rows)", LINE)
