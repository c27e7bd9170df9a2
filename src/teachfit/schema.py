"""The config schema as a library: ``config/schema.yaml``'s defaults, strict YAML loading.

This is the one module library code may import for settings (``defaults``, ``load_yaml``,
``ConfigError``); the workflow's composition root, :mod:`teachfit.workflow.config`, validates
whole configs and checks each stage's settings on top of it.

* defaults from the schema are filled in (at every level, also inside maps),
* every error names the field as a dotted path and, for enums, the allowed values,
* YAML files are read with a loader that rejects duplicate keys (two models with
  the same alias would otherwise silently collapse into one).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from teachfit.io import package_data

SCHEMA_PATH = package_data("schema.yaml")


class ConfigError(ValueError):
    """An invalid workflow config; the message names the field."""


class _StrictLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(
                f"{node.start_mark.name}:{key_node.start_mark.line + 1}: duplicate key {key!r} "
                f"(first at line {seen[key] + 1}); names must be unique"
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: str | Path) -> Any:
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8 (byte {exc.start})") from exc
    loader = _StrictLoader(text)
    loader.name = str(path)  # error marks (duplicate keys, syntax) name the file, not <unicode string>
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML syntax error: {exc}") from exc
    finally:
        loader.dispose()


def check_duplicate_keys(paths: Iterable[str | Path]) -> None:
    for p in paths:
        load_yaml(p)


def load_schema(path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    return load_yaml(path)


def _path(error) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "<top level>"


def _format_error(error) -> str:
    where = _path(error)
    v = error.validator
    if v == "enum":
        allowed = ", ".join(repr(a) for a in error.validator_value)
        return f"config.{where}: {error.instance!r} is not allowed; allowed values: {allowed}"
    if v == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        return f"config.{where}: unknown key(s) {extra}{hint}"
    if v == "required":
        return f"config.{where}: {error.message}"
    if v == "type":
        return (f"config.{where}: expected {error.validator_value}, got "
                f"{type(error.instance).__name__} ({error.instance!r})")
    if v in ("minItems", "minProperties"):
        return f"config.{where}: must not be empty ({error.message})"
    if v == "pattern":
        return (f"config.{where}: {error.instance!r} does not match {error.validator_value} "
                "(use short aliases: letters, digits, underscore)")
    if v == "propertyNames":
        return f"config.{where}: bad name: {error.message}"
    if v == "oneOf" and all(set(b) == {"required"} for b in error.validator_value):
        options = [k for b in error.validator_value for k in b["required"]]
        given = [k for k in options if isinstance(error.instance, dict) and k in error.instance]
        return f"config.{where}: set exactly one of {options}; got {given or 'none'}"
    return f"config.{where}: {error.message}"


def _extend_with_default(validator_class, defs: dict[str, Any] | None = None):
    """``validator_class`` that also fills each property's ``default`` (that of the ``$defs``
    entry when the property is only a ``$ref`` into ``defs``)."""
    defs = defs or {}
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, subschema in properties.items():
                # a property that is only a $ref (``version: {$ref: "#/$defs/stage_version"}``)
                # takes the default of the definition it points to
                ref = subschema.get("$ref", "")
                if "default" not in subschema and ref.startswith("#/$defs/"):
                    subschema = {**defs.get(ref.rsplit("/", 1)[-1], {}), **subschema}
                if "default" in subschema and prop not in instance:
                    instance[prop] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    from jsonschema import validators

    return validators.extend(validator_class, {"properties": set_defaults})


def section_schema(path: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """The sub-schema of a dotted config path: ``"sft"``, ``"evolver.scenarios.autoif"``,
    ``"models.*"`` (a map's value schema, e.g. one model entry). ``$ref``s are resolved."""
    schema = schema if schema is not None else load_schema()
    defs = schema.get("$defs", {})

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = {**defs[node["$ref"].rsplit("/", 1)[-1]], **{k: v for k, v in node.items() if k != "$ref"}}
        return node

    node = resolve(schema)
    for part in [p for p in path.split(".") if p]:
        if part == "*" and isinstance(node.get("additionalProperties"), dict):
            node = resolve(node["additionalProperties"])
        elif part in node.get("properties", {}):
            node = resolve(node["properties"][part])
        else:
            raise ConfigError(f"config schema: no section {path!r} (stuck at {part!r})")
    return node


def defaults(path: str, /, **overrides: Any) -> dict[str, Any]:
    """The schema's defaults of one config section, as a rule would pass it when the config
    sets nothing there (``overrides`` replace top-level keys; they are validated too; ``path`` is
    positional-only, so a section's own ``path`` key can be overridden: ``defaults("seedsets.*", path=...)``).

    This is how library users and tests get settings: the schema is the one place defaults
    live; settings dataclasses do not repeat them.
    """
    from jsonschema import Draft202012Validator

    schema = load_schema()
    sub = {**section_schema(path, schema), "$defs": schema.get("$defs", {})}
    value: dict[str, Any] = dict(copy.deepcopy(overrides))
    validator = _extend_with_default(Draft202012Validator, sub["$defs"])(sub)
    for _ in range(2):
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError(f"defaults({path!r}): " + "; ".join(sorted({_format_error(e) for e in errors})))
    return value


def non_finite_numbers(value: Any, where: str = "config") -> list[str]:
    """NaN / infinity anywhere (YAML ``.nan``, ``.inf``) pass JSON Schema bounds; list them."""
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{where}: must be a finite number, got {value!r}"]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in non_finite_numbers(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in non_finite_numbers(v, f"{where}[{i}]")]
    return []
