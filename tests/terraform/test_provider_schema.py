"""The schema read from the cdktn bindings says what the provider's documentation says.

Facts from the provider's registry documentation, checked on every prepared release: required vs
optional, blocks vs attributes, list vs set nesting, one-item blocks, computed-only attributes.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import pytest

from tests.terraform.conftest import provider_versions, schema_dir
from tests.terraform.provider_schema import BindingsError, _Module


@cache
def _schemas(name: str, version: str) -> dict[str, Any]:
    document = json.loads((schema_dir() / f"{name}-{version}.json").read_text())
    schemas: dict[str, Any] = document["provider_schemas"][f"registry.terraform.io/hashicorp/{name}"]
    return schemas


def _resource(version: str, type_name: str, provider: str = "google") -> dict[str, Any]:
    block: dict[str, Any] = _schemas(provider, version)["resource_schemas"][type_name]["block"]
    return block


@pytest.fixture(params=provider_versions() or ["missing"])
def version(request: pytest.FixtureRequest) -> str:
    assert request.param != "missing", f"no provider schemas in {schema_dir()}: run make test-terraform"
    return str(request.param)


def test_the_whole_provider_is_there(version: str) -> None:
    schemas = _schemas("google", version)
    assert len(schemas["resource_schemas"]) > 1000 and len(schemas["data_source_schemas"]) > 300
    assert {"project", "region", "credentials"} <= set(schemas["provider"]["block"]["attributes"])
    beta = _schemas("google-beta", version)["resource_schemas"]
    assert set(schemas["resource_schemas"]) < set(beta), "google-beta is a superset of google"


def test_required_optional_and_computed_attributes(version: str) -> None:
    bucket = _resource(version, "google_storage_bucket")["attributes"]
    assert bucket["name"] == {"type": "string", "required": True}
    assert bucket["location"] == {"type": "string", "required": True}
    assert bucket["storage_class"] == {"type": "string", "optional": True, "computed": True}
    assert bucket["self_link"] == {"type": "string", "computed": True}
    assert bucket["labels"]["type"] == ["map", "string"]


def test_blocks_their_nesting_and_one_item_blocks(version: str) -> None:
    blocks = _resource(version, "google_storage_bucket")["block_types"]
    assert blocks["lifecycle_rule"]["nesting_mode"] == "list" and "max_items" not in blocks["lifecycle_rule"]
    rule = blocks["lifecycle_rule"]["block"]["block_types"]
    assert rule["action"]["nesting_mode"] == "set" and rule["action"]["max_items"] == 1
    assert rule["condition"]["block"]["attributes"]["matches_prefix"]["type"] == ["list", "string"]
    assert blocks["versioning"]["max_items"] == 1
    assert blocks["timeouts"]["nesting_mode"] == "single"


def test_computed_attributes_inside_blocks_and_required_blocks(version: str) -> None:
    function = _resource(version, "google_cloudfunctions2_function")["block_types"]
    service = function["service_config"]["block"]["attributes"]
    assert service["uri"] == {"type": "string", "computed": True}
    assert service["service"] == {"type": "string", "computed": True}
    trigger = function["event_trigger"]["block"]
    assert trigger["attributes"]["event_type"]["required"] is True
    assert trigger["block_types"]["event_filters"]["nesting_mode"] == "set"
    scheduler = _resource(version, "google_cloud_scheduler_job")["block_types"]
    assert scheduler["pubsub_target"]["block"]["attributes"]["topic_name"]["required"] is True


def test_computed_lists_of_objects_are_attributes(version: str) -> None:
    table = _resource(version, "google_bigquery_table")["attributes"]
    assert table["num_rows"] == {"type": "number", "computed": True}
    service = _resource(version, "google_cloud_run_v2_service")["attributes"]
    kind, element = service["conditions"]["type"]
    assert kind == "list" and element[0] == "object" and element[1]["type"] == "string"


def test_data_sources_and_the_beta_only_resources(version: str) -> None:
    project = _schemas("google", version)["data_source_schemas"]["google_project"]["block"]["attributes"]
    assert project["number"] == {"type": "string", "computed": True}
    identity = _resource(version, "google_project_service_identity", "google-beta")["attributes"]
    assert identity["service"]["required"] is True and identity["email"] == {"type": "string", "computed": True}


def test_an_unknown_binding_shape_is_refused_not_guessed() -> None:
    settable = (
        "odd: {\n value: cdktn.stringToHclTerraform(struct.odd),\n"
        ' isBlock: false,\n type: "simple",\n storageClassType: "date",\n},'
    )
    with pytest.raises(BindingsError, match="unknown settable shape simple/date"):
        _Module().block(settable, "Nothing", "Nothing")
