"""Typed, validated loading of YAML configs and ``key=value`` overrides.

Every error a user can make in a config (YAML syntax, unknown key, wrong type,
bad value) becomes a :class:`ConfigError` that names the file, the key and what
was expected, so the CLIs can print one line and exit non-zero instead of a
traceback. OmegaConf does the typing; this module only adds the messages and
the recursive ``validate()`` hook our dataclasses use for value checks.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable, Sequence, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")


class ConfigError(ValueError):
    """A config problem, already phrased for the user (source, key, expectation)."""

    def __init__(self, source: str, message: str, key: str | None = None):
        self.source, self.key, self.message = source, key, message
        where = f"{source}: {key}: " if key else f"{source}: "
        super().__init__(where + message)


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; every failure names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(str(path), f"YAML syntax error{line}: {problem}") from None
    if data is None:
        raise ConfigError(str(path), "the file is empty; expected a mapping of keys")
    if not isinstance(data, dict):
        raise ConfigError(str(path), f"expected a mapping of keys at top level, got a {type(data).__name__}")
    return data


def _omegaconf_message(exc: OmegaConfBaseException) -> tuple[str | None, str]:
    key = getattr(exc, "full_key", None) or None
    msg = str(exc).split("\n")[0]
    if type(exc).__name__ == "ConfigKeyError" or "not in" in msg:
        msg = f"unknown key ({msg})"
    return key, msg


def merge_into_schema(schema: type[T] | T, layers: Sequence[tuple[str, Any]]) -> T:
    """Merge ``(source, mapping-or-dotlist)`` layers onto a dataclass schema and validate.

    A layer is a dict (from a YAML file) or a list of dotted overrides, each a
    ``key=value`` string or a ``(key, value)`` pair. The
    source names the layer in error messages.
    """
    cfg: DictConfig = OmegaConf.structured(schema)
    for source, layer in layers:
        try:
            if isinstance(layer, (list, tuple)):
                for item in layer:
                    key, value = _split_override(source, item)
                    if OmegaConf.select(cfg, key, default="__missing__") == "__missing__" and not _parent_is_open(cfg, key):
                        raise ConfigError(source, "unknown key (no such setting in the training config)", key)
                    OmegaConf.update(cfg, key, value, merge=True)
            else:
                cfg = OmegaConf.merge(cfg, OmegaConf.create(layer))
        except OmegaConfBaseException as exc:
            key, msg = _omegaconf_message(exc)
            raise ConfigError(source, msg, key) from None
    try:
        obj = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:
        key, msg = _omegaconf_message(exc)
        raise ConfigError(layers[-1][0] if layers else "config", msg, key) from None
    validate_tree(obj, source=" + ".join(s for s, _ in layers) or "defaults")
    return obj  # type: ignore[return-value]


def _split_override(source: str, item: str | tuple[str, Any]) -> tuple[str, Any]:
    """``"a.b=3"`` (value parsed as YAML) or an already-parsed ``("a.b", 3)`` pair."""
    if isinstance(item, tuple):
        return str(item[0]).strip(), item[1]
    if "=" not in item:
        raise ConfigError(source, f"override {item!r} is not of the form key=value")
    key, _, raw = item.partition("=")
    return key.strip(), (yaml.safe_load(raw) if raw.strip() else None)


def _parent_is_open(cfg: DictConfig, key: str) -> bool:
    """True when ``key`` sits under a free-form mapping (a Dict[str, ...] field)."""
    parent, _, _ = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return isinstance(node, DictConfig) and OmegaConf.get_type(node) is dict


def validate_tree(obj: Any, source: str, prefix: str = "") -> None:
    """Call ``validate()`` on every nested dataclass; wrap failures as ConfigError."""
    if not dataclasses.is_dataclass(obj):
        return
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        items: Iterable[tuple[str, Any]]
        if isinstance(value, list):
            items = ((f"{prefix}{f.name}[{i}].", v) for i, v in enumerate(value))
        elif isinstance(value, dict):
            items = ((f"{prefix}{f.name}.{k}.", v) for k, v in value.items())
        else:
            items = [(f"{prefix}{f.name}.", value)]
        for child_prefix, child in items:
            validate_tree(child, source, child_prefix)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except (ValueError, TypeError) as exc:
            msg = str(exc)
            key, sep, rest = msg.partition(": ")
            if sep and " " not in key:
                # Messages of the form "field: expected ..." get their full dotted path.
                full = key if key.startswith(prefix.rstrip(".")) or not prefix else prefix + key
                raise ConfigError(source, rest, full) from None
            raise ConfigError(source, msg, prefix.rstrip(".") or None) from None


def to_plain_dict(obj: Any) -> dict[str, Any]:
    """A JSON-able dict of a config dataclass (for hashing, records, W&B)."""
    return OmegaConf.to_container(OmegaConf.structured(obj), resolve=True)  # type: ignore[return-value]


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``: the dotted keys users write in overrides."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
