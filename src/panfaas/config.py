"""Service configuration: one YAML file plus environment overrides.

`PANFAAS_<SERVICE>__<KEY>__<SUBKEY>=value` overrides `key.subkey` of that
service's file; values are parsed as YAML scalars, so `8080` is an int and
`true` a bool. Errors carry the file name (and line, where YAML knows it) so
that a broken config fails with one clear line.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml


class ConfigError(Exception):
    """A configuration problem, phrased for the operator who has to fix it."""


def load_yaml(path: str | os.PathLike) -> Any:
    return read_yaml(path)[0]


def read_yaml(path: str | os.PathLike, error: type[ConfigError] = ConfigError) -> tuple[Any, yaml.Node | None]:
    """(data, its node tree): one parse, the nodes carry the line numbers. Unreadable or invalid
    YAML raises `error` with the file and line."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise error(f"{p}: cannot read configuration: {e.strerror}") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        return (loader.construct_document(node) if node is not None else None), node
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark else str(p)
        problem = getattr(e, "problem", None) or str(e)
        if "'\\t'" in problem:
            # dynamic-processing's own sample-config.yaml has one (before create-path)
            problem = "a TAB character where YAML expects indentation: YAML allows spaces only"
        raise error(f"{where}: invalid YAML: {problem}") from None
    finally:
        loader.dispose()


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def env_overrides(service: str, environ: dict | None = None) -> dict:
    environ = os.environ if environ is None else environ
    prefix = f"PANFAAS_{service.upper()}__"
    out: dict = {}
    for name, raw in environ.items():
        if not name.startswith(prefix):
            continue
        keys = [k.lower().replace("_", "-") for k in name[len(prefix):].split("__")]
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = yaml.safe_load(raw) if raw != "" else ""
    return out


def load(service: str, path: str | os.PathLike | None, defaults: dict) -> dict:
    """Defaults <- YAML file <- environment; returns a plain dict."""
    conf = copy.deepcopy(defaults)
    if path:
        data = load_yaml(path)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        conf = deep_merge(conf, data)
    return deep_merge(conf, env_overrides(service))


def require(conf: dict, dotted: str, kind: type | tuple = str, source: str = "config") -> Any:
    node: Any = conf
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"{source}: missing required setting '{dotted}'")
        node = node[part]
    if not isinstance(node, kind):
        want = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ConfigError(f"{source}: '{dotted}' must be {want}, got {type(node).__name__}")
    return node
