"""Settings from the environment, and the deterministic ids."""

from __future__ import annotations

import pytest

from shared.config import REQUIRED, Settings, SettingsError
from shared.core.ids import ObjectRef, job_labels, label_value, load_job_id, run_id_for_message, run_id_for_object

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


def test_run_ids_depend_on_the_object_generation_only() -> None:
    ref = ObjectRef("b", "incoming/x.jsonl", "17")
    assert run_id_for_object(ref) == run_id_for_object(ObjectRef("b", "incoming/x.jsonl", "17"))
    assert run_id_for_object(ref) != run_id_for_object(ObjectRef("b", "incoming/x.jsonl", "18"))
    assert run_id_for_message("1") != run_id_for_message("2")
    assert run_id_for_object(ref) != run_id_for_message("17")


def test_job_labels_are_valid_vertex_labels() -> None:
    labels = job_labels("r123", 4, 2, {"Team": "Data Science!", "2fa": "on"})
    assert labels == {"team": "data-science-", "l2fa": "on", "gbp_run": "r123", "gbp_chunk": "4", "gbp_attempt": "2"}
    assert len(label_value("x" * 100)) == 63
    assert load_job_id("predictions", "r1", 0, 1) == "gbp_predictions_r1_c0000_a1"
