"""The one config system: fvcore's ``CfgNode`` trees, one value rule, one error style.

Search and pretraining build their defaults as :class:`Config` trees (fvcore's ``CfgNode``,
the yacs node detectron2 subclasses, so no worker imports detectron2); detection keeps
detectron2's ``get_cfg()`` tree. All three load a yaml file and trailing ``KEY VALUE`` overrides
through the functions here, so they share:

* one value rule: every value is YAML as PyYAML reads it, in a file and on the command line
  alike (``true``/``false``, also ``yes``/``no``, are booleans; ``1`` is an integer, never a
  boolean); a string where a non-string is expected may also be a Python literal, as yacs
  allows (``(600, 600)``, ``1e-4``);
* one type rule: a value must have the type of the key's default (an integer is accepted for a
  float, a list for a tuple); a key whose default is ``None`` takes the type given in ``types``
  (and ``None``), or anything when it has none (detectron2's untyped keys);
* one error: a ``ConfigError`` line naming the file or the command line, the key and the value,
  and for an unknown key the closest known one.

Range and choice checks stay with each config's own ``validate``, next to its defaults.
"""
from __future__ import annotations

import ast
import copy
import difflib
import logging
import os
import re
import sys
from typing import Any, Iterable, Mapping, Sequence

import yaml
from fvcore.common.config import CfgNode

from .errors import ConfigError

COMMAND_LINE = "command-line override"


class Config(CfgNode):
    """An fvcore ``CfgNode`` with ``to_dict``; search and pretraining subclass it for typed helpers."""

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def to_dict(node: Any) -> Any:
    """Plain dicts, lists and scalars (what ``yaml.safe_dump`` and ``json`` take); tuples become lists."""
    if isinstance(node, Mapping):
        return {k: to_dict(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [to_dict(v) for v in node]
    return node


def config_yaml(cfg: CfgNode) -> str:
    """The resolved config as yaml, in the defaults' key order (what ``--print-config`` prints)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


# ----------------------------------------------------------------------------------------- keys
def leaf_keys(node: Mapping, prefix: str = "") -> list[str]:
    """Every dotted leaf key under ``node``."""
    keys: list[str] = []
    for name, value in node.items():
        full = f"{prefix}{name}"
        keys += leaf_keys(value, full + ".") if isinstance(value, CfgNode) else [full]
    return keys


def first_difference(saved: Any, now: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    """(dotted key, saved value, new value) of the first leaf that differs between two config dicts
    (saved keys in order, then new ones), or None: what a resume names when its config changed."""
    if isinstance(saved, dict) and isinstance(now, dict):
        for key in list(saved) + [k for k in now if k not in saved]:
            diff = first_difference(saved.get(key), now.get(key), f"{prefix}{key}.")
            if diff:
                return diff
        return None
    return None if saved == now else (prefix.rstrip("."), saved, now)


def unknown_key(cfg: CfgNode, key: Any, where: str) -> ConfigError:
    """'unknown config key X (did you mean Y?)', Y the closest existing key (case-insensitive)."""
    keys = leaf_keys(cfg)
    upper = {k.upper(): k for k in keys}
    close = difflib.get_close_matches(str(key).upper(), list(upper), n=1, cutoff=0.6)
    hint = f" (did you mean {upper[close[0]]!r}?)" if close else ""
    return ConfigError(f"{where}: unknown config key {key!r}{hint}")


def lookup(cfg: CfgNode, key: Any, where: str = "config") -> Any:
    """The value at dotted ``key``; ConfigError naming the key when there is none."""
    if not isinstance(key, str):
        raise ConfigError(f"{where}: config key {key!r} is not a string")
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, CfgNode) or part not in node:
            raise unknown_key(cfg, key, where)
        node = node[part]
    return node


# --------------------------------------------------------------------------------------- values
def _kind(example: Any) -> str:
    """How to write a value of the type of ``example`` (a default value, or a type)."""
    kind = example if isinstance(example, type) else type(example)
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string",
             tuple: "a list or tuple", list: "a list or tuple"}
    return names.get(kind, kind.__name__)


def parse_text(text: str, key: str = "value", where: str = COMMAND_LINE) -> Any:
    """A command-line value: YAML (``true``, ``null``, ``0.1``, ``[a, b]``), then a Python literal."""
    try:
        value = yaml.safe_load(text)
    except Exception:  # noqa: BLE001 - yaml raises more than YAMLError (e.g. ValueError for bad dates)
        value = text
    return _literal(value, key, where) if isinstance(value, str) else value


def _literal(text: str, key: str, where: str) -> Any:
    """yacs' rule for strings: a Python literal (``(600, 600)``, ``('a',)``, ``1e-4``) or the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    except (TypeError, RecursionError, MemoryError) as err:  # e.g. "{[]: 1}"
        raise ConfigError(f"{where}: {key}: {text!r} cannot be parsed as a value: {err}") from None


def coerce(value: Any, default: Any, key: str, where: str, kind: type | None = None) -> Any:
    """``value`` checked against the type of ``default`` (or ``kind`` when the default is None)."""
    target = kind or (None if default is None else type(default))
    if value is None and (default is None or kind is not None):
        return None
    if target is None:  # untyped key (a detectron2 default of None): yacs accepts any value
        return _literal(value, key, where) if isinstance(value, str) else value
    if isinstance(value, str) and target is not str:
        value = _literal(value, key, where)
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
        list: lambda v: isinstance(v, (list, tuple)),
        tuple: lambda v: isinstance(v, (list, tuple)),
    }.get(target, lambda v: isinstance(v, target))
    if not ok(value):
        example = f" such as {default!r}" if default is not None else ""
        prefix = f"{where}: " if where else ""
        raise ConfigError(f"{prefix}{key}: expected {_kind(target)}{example}, got {value!r}")
    return target(value) if target in (float, list, tuple) else value


# -------------------------------------------------------------------------------------- merging
def _assign(cfg: CfgNode, node: CfgNode, name: str, value: Any, full: str, where: str,
            types: Mapping[str, type]) -> None:
    """Set ``node[name]`` (full key ``full``) to ``value``, recursing into sections."""
    if name not in node:
        if not node.is_new_allowed():
            raise unknown_key(cfg, full, where)
        node[name] = type(node)(value) if isinstance(value, Mapping) else value
        return
    current = node[name]
    if isinstance(current, CfgNode):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: {full!r} is a group of keys, not one; set its keys, such as "
                              f"{', '.join(leaf_keys(current, full + '.')[:3])}")
        for sub, item in value.items():
            _assign(cfg, current, str(sub), item, f"{full}.{sub}", where, types)
        return
    node[name] = coerce(value, current, full, where, types.get(full))


def _move(data: Mapping, moved: Mapping[str, str], where: str) -> dict:
    """Keys of an older layout moved to their new place (so older files and run folders still load)."""
    out = copy.deepcopy(dict(data))
    for old, new in moved.items():
        section, _, name = old.rpartition(".")
        parent = out.get(section) if section else out
        if isinstance(parent, dict) and name in parent:
            logging.getLogger("nasnet_det").info("%s: %s is now %s", where, old, new)
            node = out
            *path, last = new.split(".")
            for part in path:
                node = node.setdefault(part, {})
            node[last] = parent.pop(name)
    return out


def merge_dict(cfg: CfgNode, data: Any, where: str, types: Mapping[str, type] | None = None,
               moved: Mapping[str, str] | None = None) -> None:
    """Merge a nested mapping (a loaded yaml file, a saved config) into ``cfg``, checking every key."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: the top level must be a mapping of config keys, got {data!r}")
    data = _move(data, moved or {}, where)
    for name, value in data.items():
        if name == "_BASE_":
            continue
        _assign(cfg, cfg, str(name), value, str(name), where, types or {})


def merge_overrides(cfg: CfgNode, opts: Sequence[Any], types: Mapping[str, type] | None = None,
                    moved: Mapping[str, str] | None = None) -> set[str]:
    """Merge trailing ``KEY VALUE`` pairs (detectron2's convention) one at a time; return the keys set.

    A value is read by :func:`parse_text`, except for a string key, which takes the text as it is
    (a path or ``module:function`` is never re-read as YAML).
    """
    where = COMMAND_LINE
    opts = list(opts)
    pairs = [o for i, o in enumerate(opts) if isinstance(o, str) and (i % 2 == 0 or len(opts) % 2)]
    old_style = next((o for o in pairs if re.fullmatch(r"[A-Za-z_][\w.]*=.*", o)), None)
    if old_style is not None:
        name, _, value = old_style.partition("=")
        raise ConfigError(f"{where}s are KEY VALUE pairs (detectron2 style): write '{name} {value}', "
                          f"not {old_style!r}")
    if len(opts) % 2:
        raise ConfigError(f"{where}s are KEY VALUE pairs, but {len(opts)} item(s) were given: "
                          f"{opts[-1]!r} has no value")
    types = types or {}
    keys = set()
    for key, text in zip(opts[0::2], opts[1::2]):
        key = (moved or {}).get(key, key)
        section, _, name = str(key).rpartition(".")
        current: Any = cfg
        for part in section.split(".") if section else []:
            current = current.get(part) if isinstance(current, CfgNode) else None
        if not isinstance(current, CfgNode):
            raise unknown_key(cfg, key, where)
        if name in current and not isinstance(current[name], CfgNode):
            existing = current[name]
            is_str = isinstance(existing, str) or (existing is None and types.get(key) is str)
            nullable = existing is None or key in types
            if not isinstance(text, str):
                value = text
            elif is_str and not (nullable and text in ("null", "None", "~")):
                value = text
            else:
                value = parse_text(text, key)
        else:
            value = parse_text(text, key) if isinstance(text, str) else text
        nested: dict[str, Any] = {}
        node = nested
        *path, last = str(key).split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
        merge_dict(cfg, nested, where, types)
        keys.add(key)
    return keys


def read_yaml(cfg: CfgNode, path: str | os.PathLike) -> dict:
    """The mapping a yaml file holds (with its ``_BASE_`` files), or one ConfigError naming the file."""
    where = f"config file {str(path)!r}"
    if not os.path.isfile(path):
        raise ConfigError(f"{where} does not exist")
    try:
        data = cfg.load_yaml_with_base(str(path), allow_unsafe=False)
    except UnicodeDecodeError as err:
        raise ConfigError(f"{where} is not UTF-8 text (byte {err.start}): give a yaml file") from err
    except OSError as err:  # a _BASE_ file that is missing or unreadable
        raise ConfigError(f"{where}: cannot read {err.filename or str(path)!r}: {err.strerror or err}") from err
    except (yaml.YAMLError, AssertionError, TypeError, AttributeError, ValueError) as err:
        reason = " ".join(str(err).split())  # yaml's messages span several lines
        raise ConfigError(f"{where} is not a yaml mapping of config keys: {reason}") from err
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} is not a yaml mapping of config keys: the top level is {data!r}")
    return dict(data)


def load(defaults: CfgNode, path: str | os.PathLike | None = None, opts: Iterable[Any] | None = None,
         types: Mapping[str, type] | None = None, moved: Mapping[str, str] | None = None,
         data: Mapping | None = None) -> tuple[CfgNode, set[str]]:
    """A copy of ``defaults`` with the file at ``path``, then ``data``, then ``KEY VALUE`` ``opts``.

    Returns the config and the keys the command line set (for messages that name a value's source).
    """
    cfg = defaults.clone()
    if path is not None:
        merge_dict(cfg, read_yaml(cfg, path), f"config file {str(path)!r}", types, moved)
    if data is not None:
        merge_dict(cfg, data, "config", types, moved)
    overridden = merge_overrides(cfg, list(opts or []), types, moved)
    return cfg, overridden


def parse_tool_args(parser: Any, argv: Sequence[str] | None = None) -> Any:
    """``parser.parse_args(argv)``, except that the tool's own flags may also follow the overrides.

    Why: the trailing ``KEY VALUE`` overrides are argparse's REMAINDER, which swallows everything
    after the first one, so "the same command plus ``--resume``" (where a user types it: at the end)
    reached the override parser as a key. An item in a key's place that starts with ``--`` cannot
    be a config key, so it is parsed again as a flag, and the overrides around it are kept in order.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    opts = list(getattr(args, "opts", None) or [])
    flag_at = next((i for i in range(0, len(opts), 2) if str(opts[i]).startswith("--")), None)
    if flag_at is None:
        return args
    head = argv[: len(argv) - len(opts)]  # REMAINDER is always argv's tail
    later = parse_tool_args(parser, head + opts[flag_at:])
    later.opts = opts[:flag_at] + list(later.opts or [])
    return later


def add_config_arguments(parser: Any, config_flags: Sequence[str] = ("--config-file",)) -> None:
    """``--config-file``, ``--print-config`` and the trailing ``KEY VALUE`` overrides of a tool."""
    parser.add_argument(*config_flags, dest="config_file", metavar="FILE", help="yaml config file")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (file + overrides) as yaml and exit")
    parser.add_argument("opts", nargs="...", default=[],
                        help="KEY VALUE overrides (detectron2 style), e.g. optim.lr 0.1 train.amp true")
