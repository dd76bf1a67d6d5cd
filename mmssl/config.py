"""Configs: a recipe's defaults, a YAML file over them, then dotted `key=value` overrides.

Every key must exist in the recipe's defaults, and every value must have the default's type, so a
typo (`data.trian=...`) or a wrong value (`lr=fast`) is one clear line naming the field, not a
silent no-op. Values of overrides are parsed as YAML (`lr=3e-4`, `resume=true`, `eval_tasks=[knn]`).

Two kinds of dict take keys the defaults do not list: an empty default (`model.kwargs: {}`), and a
model's own `config` (`backbone.config.groups_width=64`), whose keys belong to the model's
transformers config class and are checked there, by the encoder builder, with the same one-line
error for a key that class does not have.
"""
from __future__ import annotations

import copy
import difflib
import sys
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A config that cannot be used; the message names the field."""


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _check_type(key: str, value, default):
    """Return `value` coerced to the default's type, or raise ConfigError."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config field '{key}' must be true or false, got {value!r}")
    if isinstance(default, float) and isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads "3e-4" as a string
        except ValueError:
            pass
    if isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, int) and isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(default, str) and isinstance(value, str):
        return value
    if isinstance(default, list) and isinstance(value, list):
        return value
    if isinstance(default, dict) and isinstance(value, dict):
        return value
    raise ConfigError(f"config field '{key}' must be {type(default).__name__}, got {value!r}")


def _set(cfg: dict, dotted: str, value, defaults_flat: dict) -> None:
    if dotted not in defaults_flat:
        # A key under a free-form dict default (e.g. `model.kwargs`) may be added.
        parent = dotted.rsplit(".", 1)[0] if "." in dotted else None
        node = cfg
        if parent is not None:
            for part in parent.split("."):
                node = node.get(part) if isinstance(node, dict) else None
        free_form = parent is not None and isinstance(node, dict) and (parent in defaults_flat
                                                                       or parent.rsplit(".", 1)[-1] == "config")
        if not free_form:
            close = difflib.get_close_matches(dotted, list(defaults_flat), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{dotted}'{hint}")
    else:
        value = _check_type(dotted, value, defaults_flat[dotted])
    node = cfg
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def merge(defaults: dict, file_values: dict | None = None, overrides: list[str] | None = None) -> dict:
    """Defaults <- YAML values <- `key=value` overrides, each checked against the defaults."""
    cfg = copy.deepcopy(defaults)
    flat_defaults = _flatten(defaults)
    for key, value in _flatten(file_values or {}).items():
        _set(cfg, key, value, flat_defaults)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        _set(cfg, key.strip(), value, flat_defaults)
    return cfg


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exn:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exn).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    return data


def from_cli(defaults: dict, argv: list[str] | None = None) -> dict:
    """`[--config FILE] [key=value ...]` -> checked config."""
    argv = list(sys.argv[1:] if argv is None else argv)
    file_values = None
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise ConfigError("--config needs a file path")
        file_values = load_yaml(argv[i + 1])
        del argv[i : i + 2]
    unknown = [a for a in argv if a.startswith("--")]
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]} (use --config FILE and key=value overrides)")
    return merge(defaults, file_values, argv)


def get(cfg: dict, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def to_yaml(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
