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
from dataclasses import dataclass, replace
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A config that cannot be used; the message names the field."""


@dataclass(frozen=True)
class Key:
    """One config key, written once: its default, a one-line help, and what its value may be.

    `choices` lists the allowed values (for a list default: the allowed values of each element);
    `min` is an inclusive and `above` an exclusive lower bound. `follows` names another key whose
    value this one keeps when it had that value: where a layer (the YAML file, the command line) sets
    `data.train` and not `data.val`, a `data.val` that was the same folder stays the same folder, so
    the user's data is evaluated on, not the demo's. A defaults dict holds a `Key` wherever it has
    more to say than a bare default; `merge` checks every one of them.
    """

    default: object
    help: str = ""
    choices: tuple = ()
    min: float | None = None
    above: float | None = None
    follows: str | None = None


class Config(dict):
    """A merged config (a plain dict) that remembers which dotted keys the user set, and which took
    the value of the key they follow (`Key.follows`)."""

    explicit: frozenset = frozenset()
    followed: frozenset = frozenset()


def constructor_keys(cls, **defaults) -> dict[str, Key]:
    """The config keys of an objective, read from its constructor: every argument with a default
    becomes a `Key` (`defaults` replaces some of those defaults); a `Literal[...]` annotation gives
    the allowed values, and an `Args:` block in the class docstring (`name: help`) the help."""
    import inspect
    import re
    import typing

    hints = typing.get_type_hints(cls.__init__)
    helps = dict(re.findall(r"^\s+(\w+):\s+(.+)$", (cls.__doc__ or "").split("Args:", 1)[1], re.M)) \
        if "Args:" in (cls.__doc__ or "") else {}
    out = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if param.default is inspect.Parameter.empty:
            continue  # modules (encoders) and self: built by the recipe, not configured
        hint = hints.get(name)
        choices = typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else ()
        out[name] = Key(defaults.pop(name, param.default), helps.get(name, f"see {cls.__module__}.{cls.__name__}"),
                        choices)
    if defaults:
        raise TypeError(f"{cls.__name__} has no argument '{next(iter(defaults))}'")
    return out


def set_defaults(base: dict, new: dict) -> dict:
    """`base` with the defaults in `new` (a recipe's own values over the shared keys): a key that
    `base` describes with a `Key` keeps its help and checks, with the new default."""
    out = dict(base)
    for k, v in new.items():
        old = base.get(k)
        if isinstance(old, Key) and not isinstance(v, Key):
            out[k] = replace(old, default=v)
        elif isinstance(old, dict) and isinstance(v, dict) and old and not isinstance(v, Key):
            out[k] = set_defaults(old, v)
        else:
            out[k] = v
    return out


def plain(defaults):
    """The defaults with every `Key` replaced by its default value (a fresh copy)."""
    if isinstance(defaults, Key):
        return copy.deepcopy(defaults.default)
    if isinstance(defaults, dict):
        return {k: plain(v) for k, v in defaults.items()}
    return copy.deepcopy(defaults)


def keys_of(defaults: dict, prefix: str = "") -> dict[str, Key]:
    """{dotted key: Key} for every key of `defaults` (bare defaults become a Key without help)."""
    return {k: v if isinstance(v, Key) else Key(v) for k, v in _flatten(defaults, prefix).items()}


def check_values(cfg: dict, defaults: dict) -> None:
    """Every value against its Key's allowed values and bounds: one line naming the key."""
    for dotted, key in keys_of(defaults).items():
        try:
            value = get(cfg, dotted)
        except (KeyError, TypeError):
            continue
        if key.choices:
            values = value if isinstance(value, list) else [value]
            bad = [v for v in values if v not in key.choices]
            if bad:
                raise ConfigError(f"config field '{dotted}' must be one of {', '.join(map(str, key.choices))}; "
                                  f"got {bad[0]!r}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if key.min is not None and value < key.min:
                raise ConfigError(f"config field '{dotted}' must be >= {key.min}, got {value}")
            if key.above is not None and value <= key.above:
                raise ConfigError(f"config field '{dotted}' must be > {key.above}, got {value}")


def key_rows(defaults: dict) -> list[tuple[str, str, str, str]]:
    """(dotted key, default as YAML, type or allowed values and bounds, help) for every key."""
    rows = []
    for dotted, key in keys_of(defaults).items():
        default = yaml.safe_dump(key.default, default_flow_style=True, width=1 << 20).strip()
        default = default[:-4] if default.endswith("\n...") else default.removesuffix("...").strip()
        kind = "|".join(map(str, key.choices)) if key.choices else type(key.default).__name__
        if key.min is not None:
            kind += f" >= {key.min}"
        if key.above is not None:
            kind += f" > {key.above}"
        rows.append((dotted, default, kind, key.help))
    return rows


def help_text(defaults: dict, title: str = "") -> str:
    """Every key with its default, its type or allowed values, and its help line."""
    rows = key_rows(defaults)
    width = max(len(r[0]) for r in rows)
    lines = [title] if title else []
    lines.append("usage: [--config FILE] [key=value ...]   (values are YAML: lr=3e-4 resume=true eval_tasks=[knn])")
    lines.append("")
    for dotted, default, kind, text in rows:
        lines.append(f"  {dotted:<{width}}  {default}  ({kind})" + (f"  {text}" if text else ""))
    return "\n".join(lines)


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


def merge(defaults: dict, file_values: dict | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML values <- `key=value` overrides, each checked against the defaults (their
    type, and where a `Key` says so, their allowed values and bounds)."""
    schema = defaults
    defaults = plain(defaults)
    cfg = Config(copy.deepcopy(defaults))
    flat_defaults = _flatten(defaults)
    layers = [_flatten(file_values or {})]
    overrides_layer = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key, raw = item.split("=", 1)
        try:
            overrides_layer[key.strip()] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            overrides_layer[key.strip()] = raw
    layers.append(overrides_layer)
    follows = {k: key.follows for k, key in keys_of(schema).items() if key.follows}
    # Encoder specs: a `config` belongs to its `name`, so a layer that names another encoder starts
    # from an empty config (a Hub id must not be rebuilt from the default's architecture).
    specs = [k for k, key in keys_of(schema).items() if isinstance(key.default, dict) and {"name", "config"} <= set(key.default)]
    explicit, followed = set(), set()
    for layer in layers:
        for spec in specs:
            if f"{spec}.name" in layer:
                get(cfg, spec)["config"] = {}
        # A follower equal to its leader before this layer, not set by it, takes the leader's new value.
        same = {k for k, lead in follows.items() if k not in layer and lead in layer and get(cfg, k) == get(cfg, lead)}
        for key, value in layer.items():
            _set(cfg, key, value, flat_defaults)
            explicit.add(key)
            followed.discard(key)
        for k in same:
            _set(cfg, k, copy.deepcopy(get(cfg, follows[k])), flat_defaults)
            followed.add(k)
            explicit.discard(k)
    check_values(cfg, schema)
    cfg.explicit = frozenset(explicit)
    cfg.followed = frozenset(followed)
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


def from_cli(defaults: dict, argv: list[str] | None = None, title: str = "") -> Config:
    """`[--config FILE] [key=value ...]` -> checked config; `--help` prints every key and exits 0."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        print(help_text(defaults, title))
        raise SystemExit(0)
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


def chosen(argv: list[str] | None, key: str, default):
    """The value a command line gives top-level `key` (a `key=value` override, else the `--config`
    file), before the whole config is merged: a recipe whose other keys depend on it (which
    objective) reads it first. `default` where neither sets it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    for arg in reversed(argv):
        if arg.startswith(f"{key}="):
            return yaml.safe_load(arg.split("=", 1)[1])
    if "--config" in argv and argv.index("--config") + 1 < len(argv):
        return load_yaml(argv[argv.index("--config") + 1]).get(key, default)
    return default


def get(cfg: dict, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def to_yaml(cfg: dict) -> str:
    return yaml.safe_dump(dict(cfg), sort_keys=False)
