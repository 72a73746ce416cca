"""The custom roles' permission lists (next to the adapters) are what the adapters call: no more, no less."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

import orjson
import pytest

from shared.adapters.bigquery import BigQueryWarehouse
from shared.adapters.vertex import VertexBatchJobs

ADAPTERS = Path(__file__).parents[2] / "shared" / "adapters"
# The client calls an adapter makes, and the permission each one needs.
VERTEX_CALLS = {
    "batches.create": "aiplatform.batchPredictionJobs.create",
    "batches.get": "aiplatform.batchPredictionJobs.get",
    "raw_get": "aiplatform.batchPredictionJobs.get",  # the same job read over REST
    "batches.list": "aiplatform.batchPredictionJobs.list",
    "batches.cancel": "aiplatform.batchPredictionJobs.cancel",
}
BIGQUERY_CALLS = {
    "load_table_from_uri": {"bigquery.jobs.create", "bigquery.tables.get", "bigquery.tables.updateData"},
    # A load job's id is in the ledger: the function that reads it back may not be the one that made it
    # (a collector completing a submitter's run, a resumed submission): jobs.get, not only the creator's right.
    "get_job": {"bigquery.jobs.get"},
    ".query(": {"bigquery.jobs.create", "bigquery.tables.get", "bigquery.tables.getData"},
}


def _permissions(name: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((ADAPTERS / f"{name}.permissions.json").read_bytes())
    return data


def _public_methods(cls: type) -> set[str]:
    return {name for name, _ in inspect.getmembers(cls, inspect.isfunction) if not name.startswith("_")}


def _calls(cls: type, method: str, known: dict[str, Any]) -> set[str]:
    """The client calls of ``known`` that a method's source (and the private helpers it uses) makes."""
    source = inspect.getsource(getattr(cls, method))
    for node in ast.walk(ast.parse(inspect.cleandoc("\n" + source) if source.startswith(" ") else source)):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and hasattr(cls, node.attr):
            source += inspect.getsource(getattr(cls, node.attr))
    return {call for call in known if call in source}


def test_every_vertex_method_is_listed_with_exactly_the_permissions_its_calls_need() -> None:
    listed = _permissions("vertex")
    assert _public_methods(VertexBatchJobs) == set(listed["methods"]) | set(listed["not_granted"])
    for method, permissions in listed["methods"].items():
        needed = {VERTEX_CALLS[call] for call in _calls(VertexBatchJobs, method, VERTEX_CALLS)}
        assert set(permissions) == needed, method


def test_every_bigquery_method_is_listed_with_exactly_the_permissions_its_calls_need() -> None:
    listed = _permissions("bigquery")
    public = _public_methods(BigQueryWarehouse) - {"table", "read_client"}  # names, not calls
    assert public == set(listed["methods"]) | set(listed["not_granted"])
    for method, scopes in listed["methods"].items():
        needed: set[str] = set()
        for call in _calls(BigQueryWarehouse, method, BIGQUERY_CALLS):
            needed |= BIGQUERY_CALLS[call]
        assert set(scopes["project"]) | set(scopes["table"]) == needed, method
        assert all(p.startswith("bigquery.jobs.") for p in scopes["project"]), method
        assert all(p.startswith("bigquery.tables.") for p in scopes["table"]), method


@pytest.mark.parametrize("name", ["vertex", "bigquery"])
def test_no_permission_list_grants_deletion_or_table_creation(name: str) -> None:
    text = (ADAPTERS / f"{name}.permissions.json").read_text()
    for forbidden in (".delete", "tables.create", 'tables.update"', "datasets."):
        assert forbidden not in text, forbidden
