"""The Google provider's schema, derived from its cdktn binding wheel, in `terraform providers schema -json` form.

No registry that ships the provider is reachable from here, but the cdktn bindings (PyPI
`cdktn-provider-google`) are generated from the provider's schema and carry all of it in their
JavaScript: every resource and data source, every settable attribute with its type
(`synthesizeHclAttributes` and the `...ToHclTerraform` functions: block or attribute, list, set or
single), every computed attribute (getters with no setter), and in the `.d.ts` which settable
attributes are required. This module reads the wheel (a zip holding a tgz; nothing is installed or
executed) and writes that schema as JSON, which `stub_provider` serves to the real Terraform.

What the bindings cannot tell and how it is modelled: an optional attribute may also be computed
(most `project`, `id` attributes are); every optional attribute is declared optional+computed, the
permissive side for plan (its value is unknown, never a wrong null). Descriptions, sensitivity,
deprecation and validation functions (enums, regexes) are not carried: the real provider checks those
at plan time.

    python -m tests.terraform.provider_schema OUT_DIR WHEEL...   (writes OUT_DIR/<provider>-<version>.json)
"""

from __future__ import annotations

import io
import json
import re
import sys
import tarfile
import zipfile
from collections.abc import Collection, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_ENTRY = re.compile(
    r'(\w+): \{\s*value: (.*?),\s*isBlock: (true|false),\s*type: "(\w+)",\s*storageClassType: "(\w+)",\s*\}', re.S
)
_FUNCTION = re.compile(r"^function (\w+)ToHclTerraform\(struct\) \{\n(.*?)^\}", re.M | re.S)
_CLASS = re.compile(r"^class (\w+) extends cdktn\.(\w+) \{\n(.*?)^\}", re.M | re.S)
_GETTER = re.compile(r"get (\w+)\(\) \{\s*return (.+?);\s*\}", re.S)
_FIELD = re.compile(r'_(\w+) = new (?:\w+\.)?(\w+)\(this, "(\w+)"(?:, (true|false))?\);')
_READ = re.compile(r"^(cdktn\.Fn\.tolist\()?this\.get(\w+)Attribute\('(\w+)'\)\)?$")
_STRUCT_REF = re.compile(r"(?<!cdktn\.)\b([a-z]\w*)ToHclTerraform\b")
_TYPE_NAME = re.compile(r'static tfResourceType = "([\w-]+)";')
_INTERFACE = re.compile(r"^export interface (\w+)(?: extends [\w.]+)? \{\n(.*?)^\}", re.M | re.S)
_PROPERTY = re.compile(r"/\*\*((?:(?!\*/).)*)\*/\s*readonly (\w+)(\??):", re.S)
_ANCHOR = re.compile(r"\{@link \S+#(\w+) ")
_VERSION = re.compile(r"registry\.terraform\.io/providers/hashicorp/([\w-]+)/(\d+\.\d+\.\d+)/docs")

_SIMPLE = {"string": "string", "number": "number", "boolean": "bool"}
_COLLECTION = {"stringList": "string", "numberList": "number", "stringMap": "string"}
_READS = {
    "String": "string",
    "Number": "number",
    "Boolean": "bool",
    "List": ["list", "string"],
    "NumberList": ["list", "number"],
    "StringMap": ["map", "string"],
}


class BindingsError(ValueError):
    """The bindings hold a shape this reader does not know: fail loudly rather than guess."""


@dataclass
class _Module:
    """One binding module (one resource or data source): its classes, struct functions and interfaces."""

    functions: dict[str, str] = field(default_factory=dict)
    classes: dict[str, tuple[str, str]] = field(default_factory=dict)
    required: dict[str, dict[str, bool]] = field(default_factory=dict)
    _path: list[str] = field(default_factory=list)

    def block(self, settable: str, reference: str, interface: str) -> dict[str, Any]:
        """The schema block of a struct: settable entries, required flags, and the computed-only getters."""
        required = self.required.get(interface, {})
        attributes: dict[str, Any] = {}
        blocks: dict[str, Any] = {}
        for name, value, is_block, kind, storage in _ENTRY.findall(settable):
            if is_block == "true":
                blocks[name] = self._nested(name, value, kind, required.get(name, False))
            elif kind == "simple" and storage in _SIMPLE:
                attributes[name] = _attribute(_SIMPLE[storage], required.get(name, False))
            elif kind in ("list", "set", "map") and storage in _COLLECTION:
                attributes[name] = _attribute([kind, _COLLECTION[storage]], required.get(name, False))
            else:
                raise BindingsError(f"{interface}.{name}: unknown settable shape {kind}/{storage}")
        for name, kind in self._getters(reference, skip=attributes.keys() | blocks.keys()).items():
            attributes[name] = {"type": kind, "computed": True}
        result: dict[str, Any] = {"attributes": attributes}
        if blocks:
            result["block_types"] = blocks
        return result

    def _nested(self, name: str, value: str, kind: str, required: bool) -> dict[str, Any]:
        refs = _STRUCT_REF.findall(value)
        if len(refs) != 1 or refs[0] not in self.functions:
            raise BindingsError(f"{name}: cannot find the struct of {value!r}")
        struct = refs[0]
        title = struct[0].upper() + struct[1:]
        if struct in self._path:
            # A few generated structs name themselves (a recursive schema cut at some depth by the
            # generator): the cycle ends here with an empty block.
            block: dict[str, Any] = {"attributes": {}}
        else:
            self._path.append(struct)
            block = self.block(self.functions[struct], title + "OutputReference", title)
            self._path.pop()
        nested: dict[str, Any] = {"nesting_mode": "single" if kind == "struct" else kind, "block": block}
        if kind in ("list", "set") and "listMapperHcl" not in value:
            nested["max_items"] = 1
        if required:
            nested["min_items"] = 1
        return nested

    def _getters(self, class_name: str, skip: Collection[str] = (), depth: int = 0) -> dict[str, Any]:
        """snake name -> cty type of the attribute getters of a class, but those in `skip`."""
        if depth > 32:
            raise BindingsError(f"{class_name}: computed attributes nested deeper than 32")
        body = self.classes.get(class_name, ("", ""))[1]
        fields = {camel: (cls, snake, wraps) for camel, cls, snake, wraps in _FIELD.findall(body)}
        types: dict[str, Any] = {}
        for camel, expression in _GETTER.findall(body):
            read = _READ.match(expression.strip())
            if read:
                wrapped, getter, snake = read.groups()
                if snake in skip:
                    continue
                kind = _READS.get(getter)
                if kind is None or (wrapped and not isinstance(kind, list)):
                    raise BindingsError(f"{class_name}.{camel}: unknown getter {expression}")
                types[snake] = ["set", kind[1]] if wrapped else kind  # tolist(): a set read as a list
            elif expression.startswith("this._") and expression[6:] in fields:
                cls, snake, wraps = fields[expression[6:]]
                if snake not in skip:
                    types[snake] = self._complex(cls, wraps == "true", depth + 1)
        return types

    def _complex(self, cls: str, wraps_set: bool, depth: int) -> Any:
        if cls == "StringMap":
            return ["map", "string"]
        if cls == "StringMapList":
            return ["set" if wraps_set else "list", ["map", "string"]]
        if cls.endswith("OutputReference"):
            return ["object", self._getters(cls, depth=depth)]
        if cls.endswith("List"):
            element = self._getters(cls[: -len("List")] + "OutputReference", depth=depth)
            return ["set" if wraps_set else "list", ["object", element]]
        raise BindingsError(f"unknown complex attribute class {cls}")


def _attribute(kind: Any, required: bool) -> dict[str, Any]:
    if required:
        return {"type": kind, "required": True}
    return {"type": kind, "optional": True, "computed": True}


def _snake(camel: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", camel).lower()


def _module(js: str, dts: str) -> _Module:
    module = _Module()
    module.functions = {name: body for name, body in _FUNCTION.findall(js)}
    module.classes = {name: (base, body) for name, base, body in _CLASS.findall(js)}
    for interface, body in _INTERFACE.findall(dts):
        flags: dict[str, bool] = {}
        for docs, camel, optional in _PROPERTY.findall(body):
            anchor = _ANCHOR.search(docs)
            flags[anchor.group(1) if anchor else _snake(camel)] = optional != "?"
        module.required[interface] = flags
    return module


def _modules(wheel: Path) -> Iterator[tuple[str, str]]:
    """(JavaScript, TypeScript declarations) of every binding module (one folder under lib/) in the wheel."""
    folders: dict[str, tuple[list[str], list[str]]] = {}
    with zipfile.ZipFile(wheel) as archive:
        inner = next(n for n in archive.namelist() if n.endswith(".jsii.tgz"))
        with archive.open(inner) as raw, tarfile.open(fileobj=io.BytesIO(raw.read()), mode="r:gz") as tgz:
            for member in tgz:
                match = re.fullmatch(r"package/lib/([\w-]+)/.*\.(js|d\.ts)", member.name)
                handle = tgz.extractfile(member) if match else None
                if match and handle:
                    js, dts = folders.setdefault(match.group(1), ([], []))
                    (js if match.group(2) == "js" else dts).append(handle.read().decode())
    for js, dts in folders.values():
        yield "\n".join(js), "\n".join(dts)


@dataclass(frozen=True)
class ProviderSchema:
    """One provider's schema: its source address, its version, and the `providers schema -json` document."""

    name: str
    version: str
    document: dict[str, Any]


def schema(wheel: Path) -> ProviderSchema:
    """The provider schema of one binding wheel."""
    provider: dict[str, Any] = {}
    resources: dict[str, Any] = {}
    data_sources: dict[str, Any] = {}
    versions: set[tuple[str, str]] = set()
    for js, dts in _modules(wheel):
        module = _module(js, dts)
        for name, (base, body) in module.classes.items():
            if base not in ("TerraformResource", "TerraformDataSource", "TerraformProvider"):
                continue
            type_name = _TYPE_NAME.search(body)
            settable = body.split("synthesizeHclAttributes() {", 1)
            if not type_name or len(settable) != 2:
                raise BindingsError(f"{name}: no type name or no synthesizeHclAttributes")
            entry = {"version": 0, "block": module.block(settable[1], name, name + "Config")}
            if base == "TerraformProvider":
                provider = entry
                versions.update(_VERSION.findall(js))
            elif base == "TerraformResource":
                resources[type_name.group(1)] = entry
            else:
                data_sources[type_name.group(1)] = entry
    if not provider or not resources or len(versions) != 1:
        raise BindingsError(f"{wheel.name}: no provider, no resources, or not one version {versions}")
    ((name, version),) = versions
    document = {
        "format_version": "1.0",
        "provider_schemas": {
            f"registry.terraform.io/hashicorp/{name}": {
                "provider": provider,
                "resource_schemas": resources,
                "data_source_schemas": data_sources,
            }
        },
    }
    return ProviderSchema(name, version, document)


def _write(wheel: Path, out: Path) -> Path:
    provider = schema(wheel)
    target = out / f"{provider.name}-{provider.version}.json"
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(provider.document, sort_keys=True))
    tmp.replace(target)
    return target


def main(argv: list[str]) -> int:
    """python -m tests.terraform.provider_schema OUT_DIR WHEEL... : one <name>-<version>.json per wheel."""
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=2) as pool:
        for target in pool.map(_write, [Path(w) for w in argv[1:]], [out] * (len(argv) - 1)):
            sys.stdout.write(f"{target}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
