"""Settings from the environment, and the deterministic ids."""

from __future__ import annotations

import pytest

from shared.config import MIN_FUNCTION_TIMEOUT_SECONDS, REQUIRED, Settings, SettingsError
from shared.core.errors import PermanentError
from shared.core.ids import (
    ObjectRef,
    job_labels,
    label_value,
    load_job_id,
    run_id_for_message,
    run_id_for_object,
    user_labels,
)
from shared.core.messages import check_model, check_source, parse_request_message
from shared.services.attempts import CREATE_NEEDS

BASE = {name: "x" for name in REQUIRED}


def test_settings_list_every_missing_variable_at_once() -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_env({})
    for name in REQUIRED:
        assert name in str(error.value)


def test_settings_reject_malformed_numbers_and_booleans() -> None:
    with pytest.raises(
        SettingsError, match=r"MAX_ATTEMPTS must be an integer.*SKIP_INVALID_LINES must be true or false"
    ):
        Settings.from_env({**BASE, "MAX_ATTEMPTS": "three", "SKIP_INVALID_LINES": "maybe"})


def test_settings_defaults_and_overrides() -> None:
    settings = Settings.from_env({**BASE, "MAX_ATTEMPTS": "5", "SKIP_INVALID_LINES": "true"})
    assert (settings.max_attempts, settings.skip_invalid_lines, settings.model) == (5, True, "gemini-2.5-flash")
    assert settings.max_requests_per_job == 200_000 and settings.queue_timeout_seconds == 72 * 3600
    assert set(Settings.variables()) >= set(REQUIRED) | {"MAX_ATTEMPTS", "SKIP_INVALID_LINES"}


def test_a_function_timeout_too_short_for_one_paid_step_and_a_hand_on_is_refused() -> None:
    assert MIN_FUNCTION_TIMEOUT_SECONDS >= CREATE_NEEDS + 30  # one job created, then the rest handed on
    with pytest.raises(SettingsError, match="FUNCTION_TIMEOUT_SECONDS must be at least"):
        Settings.from_env({**BASE, "FUNCTION_TIMEOUT_SECONDS": str(MIN_FUNCTION_TIMEOUT_SECONDS - 1)})
    with pytest.raises(SettingsError, match="SUBMIT_BYTES_PER_INVOCATION must be at least 1"):
        Settings.from_env({**BASE, "SUBMIT_BYTES_PER_INVOCATION": "0"})
    with pytest.raises(SettingsError) as refused:  # every value out of range is named at once
        Settings.from_env({**BASE, "MAX_CONCURRENT_JOBS": "0", "LOAD_WINDOW_SECONDS": "-1"})
    assert "MAX_CONCURRENT_JOBS must be at least 1" in str(refused.value)
    assert "LOAD_WINDOW_SECONDS must be at least 0" in str(refused.value)


def test_run_ids_depend_on_the_object_generation_only() -> None:
    ref = ObjectRef("b", "incoming/x.jsonl", "17")
    assert run_id_for_object(ref) == run_id_for_object(ObjectRef("b", "incoming/x.jsonl", "17"))
    assert run_id_for_object(ref) != run_id_for_object(ObjectRef("b", "incoming/x.jsonl", "18"))
    assert run_id_for_message("w", "1") != run_id_for_message("w", "2")
    assert run_id_for_message("w", "1") != run_id_for_message("other-deployment", "1")
    assert run_id_for_object(ref) != run_id_for_message("w", "17")


def test_job_labels_are_valid_vertex_labels() -> None:
    labels = job_labels("r123", 4, 2, {"Team": "Data Science!", "2fa": "on"})
    assert labels == {"team": "data-science-", "l2fa": "on", "gbp_run": "r123", "gbp_chunk": "4", "gbp_attempt": "2"}
    assert len(label_value("x" * 100)) == 63
    assert load_job_id("predictions", "r1-c0000-a1", 2) == "gbp_predictions_r1_c0000_a1_v2"


def test_user_labels_that_collide_or_overflow_are_refused_not_overwritten() -> None:
    with pytest.raises(PermanentError, match=r"\['Team', 'team'\] all become 'team'"):
        user_labels({"Team": "a", "team": "b"})
    with pytest.raises(PermanentError, match="the pipeline's"):
        user_labels({"gbp_run": "x"})
    with pytest.raises(PermanentError, match="at most 61 fit"):
        user_labels({f"k{i}": "v" for i in range(62)})
    with pytest.raises(PermanentError, match="empty label key"):
        user_labels({"": "v"})
    assert len(user_labels({f"k{i}": "v" for i in range(61)})) == 61
    assert user_labels({"x" * 80: "y" * 80}) == {"x" * 63: "y" * 63}


@pytest.mark.parametrize(
    "model",
    ["gemini-2.5-flash", "gemini-2.0-flash-001", "publishers/google/models/gemini-2.5-pro",
     "projects/p-1/locations/us-central1/publishers/google/models/gemini-2.5-flash",
     "projects/p-1/locations/us-central1/endpoints/123"],
)  # fmt: skip
def test_model_names_of_every_vertex_form_are_accepted(model: str) -> None:
    assert check_model(model) == model


@pytest.mark.parametrize("model", ["", "Gemini 2.5", "gemini-2.5-flash\n", "models/../x", "a" * 200])
def test_malformed_model_names_are_refused(model: str) -> None:
    with pytest.raises(PermanentError, match="bad model"):
        check_model(model)


@pytest.mark.parametrize("source", ["gs://", "gs://b/x", "gs://bucket", "gs://bucket/", "s3://bucket/x",
                                    "bq://proj.table", "bq://p.d.t", "bq://my-project.ds.t.extra"])  # fmt: skip
def test_malformed_sources_are_refused(source: str) -> None:
    with pytest.raises(PermanentError, match="bad source"):
        check_source(source)


def test_request_messages_are_checked_whole_before_anything_is_claimed() -> None:
    good = parse_request_message({"source": "bq://my-project.ds.requests", "labels": {"Team": "ML"}})
    assert (good.source, good.labels) == ("bq://my-project.ds.requests", {"team": "ml"})
    with pytest.raises(PermanentError) as error:
        parse_request_message({"source": "ftp://x", "model": "Bad Model", "labels": {"a": "1", "A": "2"}})
    assert all(part in str(error.value) for part in ("bad source", "bad model", "all become"))
    assert parse_request_message({"resume": "r0123456789abcdef0123"}).resume == "r0123456789abcdef0123"
    with pytest.raises(PermanentError, match="not a run id"):
        parse_request_message({"resume": "../etc"})


def test_approve_and_reject_messages_name_a_run_and_may_say_why() -> None:
    approve = parse_request_message({"approve": "m0123456789abcdef0123"})
    assert (approve.approve, approve.reject, approve.source) == ("m0123456789abcdef0123", "", "")
    reject = parse_request_message({"reject": "r0123456789abcdef0123", "reason": "too dear"})
    assert (reject.reject, reject.reason) == ("r0123456789abcdef0123", "too dear")
    with pytest.raises(PermanentError, match="bad approve message"):
        parse_request_message({"approve": 12})
    with pytest.raises(PermanentError, match="reason"):
        parse_request_message({"reject": "r0123456789abcdef0123", "reason": ["no"]})
    with pytest.raises(PermanentError, match="not approve and reject"):
        parse_request_message({"approve": "r0123456789abcdef0123", "reject": "r0123456789abcdef0123"})


def test_cost_limits_are_numbers_of_at_least_zero_and_unset_means_no_limit() -> None:
    settings = Settings.from_env({**BASE, "MAX_RUN_COST_USD": "12.5", "MAX_DAILY_COST_USD": ""})
    assert (settings.max_run_cost_usd, settings.max_daily_cost_usd, settings.budget_guard) == (12.5, None, True)
    assert not Settings.from_env(BASE).budget_guard
    with pytest.raises(SettingsError) as error:
        Settings.from_env({**BASE, "MAX_RUN_COST_USD": "nan", "MAX_DAILY_COST_USD": "lots"})
    assert "MAX_RUN_COST_USD must be a number" in str(error.value) and "MAX_DAILY_COST_USD" in str(error.value)
    with pytest.raises(SettingsError, match="MAX_DAILY_COST_USD must be at least 0"):
        Settings.from_env({**BASE, "MAX_DAILY_COST_USD": "-1"})
