"""Offline validation of Heat (HOT) templates against Heat's own resource schemas.

`panfaas heat validate heat/` checks every template of a directory (and the environment
files in its env/ subdirectory) without a cloud: the `openstack-heat` package is loaded
in-process and every resource is checked against the real plugin's `properties_schema` and
`attributes_schema`. What is an error:

- a template version other than wallaby, an unknown top-level section;
- an invalid parameter definition, an unknown custom constraint, a default that does not fit;
- an unknown, hidden or deprecated resource type; an unknown resource key or deletion policy;
- an unknown, hidden or deprecated property, a missing required property, a value of the
  wrong type (literal or the known type of get_param/get_attr/...), a literal that breaks
  the property's constraints (allowed values, ranges, patterns; custom constraints such as
  nova.flavor need a cloud and are left to Heat);
- get_param/get_resource/get_attr/depends_on/condition naming nothing, an unknown attribute,
  a missing get_file file, a str_replace_strict placeholder absent from its template;
- a parameter (or condition) that nothing uses;
- nested templates (a template file used as a resource type): validated as templates, and
  each use checked like a resource (properties = the nested parameters, attributes = its
  outputs);
- an environment file with an unknown section, or setting a parameter that no template
  declares (parameter_defaults) or that a stack does not declare (parameters), or a value
  that does not fit the declared type.

Every problem names the file, the place (resources.<name>.properties.<property>...) and what is
wrong, one per line.
"""

from __future__ import annotations

import difflib
import logging
import warnings
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

VERSIONS = ("wallaby", "2021-04-16")
PSEUDO_PARAMS = ("OS::stack_name", "OS::stack_id", "OS::project_id")
TEMPLATE_SUFFIXES = (".yaml", ".yml", ".template")
# Heat's HOT parameter types -> the property types they can feed.
PARAM_TYPES = {"string": "string", "number": "number", "boolean": "boolean",
               "json": "any", "comma_delimited_list": "list"}
# Heat property schema types -> our inferred value types.
SCHEMA_TYPES = {"String": "string", "Integer": "number", "Number": "number", "Boolean": "boolean",
                "Map": "map", "List": "list", "Any": "any"}
RESULT_TYPES = {"get_resource": "string", "get_file": "string", "list_join": "string", "digest": "string",
                "make_url": "string", "str_replace": "string", "str_replace_strict": "string",
                "str_replace_vstrict": "string", "str_split": "list", "list_concat": "list",
                "list_concat_unique": "list", "repeat": "list", "filter": "list", "map_merge": "map",
                "map_replace": "map", "contains": "boolean"}


@dataclass(frozen=True, order=True)
class Problem:
    file: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.where}: {self.message}" if self.where else f"{self.file}: {self.message}"


class HeatUnavailable(RuntimeError):
    """The openstack-heat package cannot be imported."""


@dataclass
class _Heat:
    env: Any
    hot: Any
    param_schema: Any
    parameters: Any
    constraints: Any
    types: list[str]


@cache
def heat() -> _Heat:
    """Import Heat and register its resource plugins (once; ~2 s). Heat's import-time noise
    (eventlet deprecation, HIDDEN/DEPRECATED type notices) is silenced."""
    logging.getLogger("heat").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            from heat.engine import constraints, parameters, resources
            from heat.engine.hot import template as hot
            resources.initialise()
            env = resources.global_env()
            types = sorted(env.get_types())
        except ImportError as e:
            raise HeatUnavailable(f"the openstack-heat package is not importable ({e}): "
                                  "pip install openstack-heat") from e
        finally:
            logging.disable(previous)
    tmpl = hot.HOTemplate20210416
    return _Heat(env=env, hot=tmpl, param_schema=tmpl.param_schema_class, parameters=parameters,
                 constraints=constraints, types=types)


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def is_template_type(type_name: Any) -> bool:
    """Whether a resource type names a template file (a nested stack), not a plugin."""
    return isinstance(type_name, str) and type_name.endswith(TEMPLATE_SUFFIXES) and "::" not in type_name


@dataclass
class Template:
    """A parsed template: what other templates need to know about it."""
    path: Path
    data: dict
    parameters: dict[str, dict] = field(default_factory=dict)
    outputs: dict[str, dict] = field(default_factory=dict)


@dataclass
class _ResourceType:
    """What a resource type offers: property schemas and attribute names (a Heat plugin or a
    nested template)."""
    name: str
    properties: dict
    attributes: dict[str, str]
    nested: Template | None = None
    hidden_attributes: frozenset[str] = frozenset()


class Validator:
    def __init__(self, root: Path):
        self.root = root.resolve()
        self.problems: list[Problem] = []
        self._templates: dict[Path, Template | None] = {}

    # -- reporting -------------------------------------------------------------------------
    def _rel(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(self.root.parent))
        except ValueError:
            return str(path)

    def error(self, path: Path, where: str, message: str) -> None:
        self.problems.append(Problem(self._rel(path), where, message))

    # -- templates -------------------------------------------------------------------------
    def template(self, path: Path) -> Template | None:
        """Parse a template once (None if it cannot be parsed; the error is recorded)."""
        path = path.resolve()
        if path in self._templates:
            return self._templates[path]
        self._templates[path] = None
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as e:
            self.error(path, "", f"cannot read the template: {e}")
            return None
        if not isinstance(data, dict):
            self.error(path, "", "a template is a YAML mapping")
            return None
        params = data.get("parameters") or {}
        outputs = data.get("outputs") or {}
        t = Template(path, data, params if isinstance(params, dict) else {},
                     outputs if isinstance(outputs, dict) else {})
        self._templates[path] = t
        return t

    def check_template(self, path: Path) -> Template | None:
        t = self.template(path)
        if t is not None:
            _TemplateCheck(self, t).run()
        return t

    def nested_type(self, owner: Path, type_name: str) -> _ResourceType | None:
        target = (owner.parent / type_name).resolve()
        if not target.is_file():
            return None
        nested = self.template(target)
        if nested is None:
            return _ResourceType(type_name, {}, {}, None)
        P = heat().param_schema
        props = {}
        for name, spec in nested.parameters.items():
            try:
                props[name] = P.from_dict(name, spec)
            except Exception:  # reported when the nested template itself is checked
                continue
        attrs = {name: "any" for name in nested.outputs}
        attrs["OS::stack_id"] = "string"
        return _ResourceType(type_name, props, attrs, nested)

    def plugin_type(self, type_name: str):
        try:
            return heat().env.get_class(type_name)
        except Exception:
            return None

    # -- environments ----------------------------------------------------------------------
    def check_environment(self, path: Path, templates: list[Template], stacks: list[Template]) -> None:
        from heat.common import environment_format
        try:
            env = environment_format.parse(path.read_text())
        except (OSError, ValueError) as e:
            self.error(path, "", f"not a valid environment file: {e}")
            return
        declared: dict[str, list[Template]] = {}
        for t in templates:
            for name in t.parameters:
                declared.setdefault(name, []).append(t)
        for name, value in (env.get("parameter_defaults") or {}).items():
            owners = declared.get(name)
            if not owners:
                self.error(path, f"parameter_defaults.{name}",
                           f"no template declares parameter '{name}'" + _suggest(name, declared))
                continue
            for t in owners:  # one report per setting is enough
                if not self._check_param_value(path, f"parameter_defaults.{name}", t, name, value):
                    break
        for name, value in (env.get("parameters") or {}).items():
            missing = [self._rel(t.path) for t in stacks if name not in t.parameters]
            if missing:
                self.error(path, f"parameters.{name}",
                           f"not declared by {', '.join(missing)} (an environment's 'parameters' apply to every "
                           "stack it is used with; use parameter_defaults)")
            for t in stacks:
                if name in t.parameters and not self._check_param_value(path, f"parameters.{name}", t, name, value):
                    break
        for alias, target in _registry_files(env.get("resource_registry") or {}):
            if not (path.parent / target).is_file():
                self.error(path, f"resource_registry.{alias}", f"file '{target}' does not exist")

    def _check_param_value(self, path: Path, where: str, t: Template, name: str, value: Any) -> bool:
        h = heat()
        spec = _without_custom_constraints(t.parameters[name])
        try:
            schema = h.param_schema.from_dict(name, spec)
            h.parameters.Parameter(name, schema, value).validate(validate_value=True, context=None)
        except Exception as e:  # noqa: BLE001 - Heat's own message says what is wrong
            self.error(path, where, f"does not fit parameter '{name}' of {self._rel(t.path)}: {e}")
            return False
        return True


def _registry_files(registry: dict, prefix: str = ""):
    for key, value in registry.items():
        if isinstance(value, dict):
            yield from _registry_files(value, f"{prefix}{key}.")
        elif isinstance(value, str) and value.endswith(TEMPLATE_SUFFIXES) and "://" not in value:
            yield f"{prefix}{key}", value


def _without_custom_constraints(spec: Any) -> Any:
    if not isinstance(spec, dict):
        return spec
    cons = [c for c in spec.get("constraints") or [] if not (isinstance(c, dict) and "custom_constraint" in c)]
    return {**spec, "constraints": cons}


def _is_function(value: Any) -> str | None:
    """The function name if value is an intrinsic function call ({fn: args})."""
    if isinstance(value, dict) and len(value) == 1:
        key = next(iter(value))
        if isinstance(key, str) and (key in heat().hot.functions or key.startswith(("get_", "str_", "list_", "Fn::"))
                                     or key == "Ref"):
            return key
    return None


class _TemplateCheck:
    """The checks of one template."""

    def __init__(self, v: Validator, t: Template):
        self.v, self.t, self.path = v, t, t.path
        d = t.data
        self.resources: dict = d.get("resources") if isinstance(d.get("resources"), dict) else {}
        self.conditions: dict = d.get("conditions") if isinstance(d.get("conditions"), dict) else {}
        self.used_params: set[str] = set()
        self.used_conditions: set[str] = set()
        self.types: dict[str, _ResourceType | None] = {}

    def error(self, where: str, message: str) -> None:
        self.v.error(self.path, where, message)

    def run(self) -> None:
        h, d = heat(), self.t.data
        version = d.get("heat_template_version")
        if hasattr(version, "isoformat"):  # YAML reads 2016-10-14 as a date
            version = version.isoformat()
        if str(version) not in VERSIONS:
            self.error("heat_template_version", f"is {version!r}; this project's templates use 'wallaby'")
        sections = [s for s in h.hot.SECTIONS if not s.startswith("__")]
        for key in d:
            if key not in sections:
                self.error(key, "unknown top-level section" + _suggest(key, sections))
        if not self.resources:
            self.error("resources", "a template needs at least one resource")
        self.check_parameters()
        for name, spec in self.resources.items():
            self.types[name] = self.resource_type(name, spec)
        for name, spec in self.conditions.items():
            self.condition(spec, f"conditions.{name}")
        for name, spec in self.resources.items():
            self.check_resource(name, spec)
        for name, spec in (d.get("outputs") or {}).items():
            where = f"outputs.{name}"
            if not isinstance(spec, dict) or "value" not in spec:
                self.error(where, "an output needs a 'value'")
                continue
            for key in spec:
                if key not in h.hot.OUTPUT_KEYS:
                    self.error(f"{where}.{key}", "unknown output key" + _suggest(key, h.hot.OUTPUT_KEYS))
            if "condition" in spec:
                self.condition_ref(spec["condition"], f"{where}.condition")
            self.value(spec["value"], f"{where}.value")
        for group in d.get("parameter_groups") or []:
            for p in (group or {}).get("parameters") or []:
                if p not in self.t.parameters:
                    self.error("parameter_groups", f"parameter '{p}' is not declared" + _suggest(p, self.t.parameters))
        for name in self.t.parameters:
            if name not in self.used_params:
                self.error(f"parameters.{name}", "parameter is never used (no get_param refers to it)")
        for name in self.conditions:
            if name not in self.used_conditions:
                self.error(f"conditions.{name}", "condition is never used")

    # -- parameters --------------------------------------------------------------------------
    def check_parameters(self) -> None:
        h = heat()
        raw = self.t.data.get("parameters")
        if raw is not None and not isinstance(raw, dict):
            self.error("parameters", "must be a mapping")
            return
        for name, spec in self.t.parameters.items():
            where = f"parameters.{name}"
            if not isinstance(spec, dict):
                self.error(where, "a parameter is a mapping with at least a 'type'")
                continue
            try:
                h.param_schema.from_dict(name, spec).validate()
            except Exception as e:  # noqa: BLE001 - Heat's message
                self.error(where, str(e))
                continue
            for c in spec.get("constraints") or []:
                name_ = c.get("custom_constraint") if isinstance(c, dict) else None
                if name_ is not None and h.env.get_constraint(name_) is None:
                    self.error(f"{where}.constraints", f"unknown custom constraint '{name_}'"
                               + _suggest(name_, h.env.constraints))
            if "default" in spec:
                try:
                    schema = h.param_schema.from_dict(name, _without_custom_constraints(spec))
                    h.parameters.Parameter(name, schema).validate(validate_value=True, context=None)
                except Exception as e:  # noqa: BLE001
                    self.error(f"{where}.default", str(e))

    # -- resources ---------------------------------------------------------------------------
    def resource_type(self, name: str, spec: Any) -> _ResourceType | None:
        where = f"resources.{name}"
        if not isinstance(spec, dict) or "type" not in spec:
            self.error(where, "a resource needs a 'type'")
            return None
        type_name = spec["type"]
        if not isinstance(type_name, str):
            self.error(f"{where}.type", "must be a string")
            return None
        if is_template_type(type_name):
            rt = self.v.nested_type(self.path, type_name)
            if rt is None:
                self.error(f"{where}.type", f"nested template '{type_name}' does not exist")
            elif rt.nested is not None:
                self.v.check_template(rt.nested.path)
            return rt
        cls = self.v.plugin_type(type_name)
        if cls is None:
            self.error(f"{where}.type", f"unknown resource type '{type_name}'" + _suggest(type_name, heat().types))
            return None
        status = cls.support_status
        if status.status in ("HIDDEN", "DEPRECATED", "UNSUPPORTED"):
            self.error(f"{where}.type", f"{type_name} is {status.status.lower()}: {status.message or ''}".rstrip(": "))
        attrs = {a: SCHEMA_TYPES.get(s.type, "any") if s.type else "any" for a, s in cls.attributes_schema.items()
                 if s.support_status.status != "HIDDEN"}
        attrs["show"] = "map"
        hidden = frozenset(a for a, s in cls.attributes_schema.items() if s.support_status.status == "HIDDEN")
        return _ResourceType(type_name, dict(cls.properties_schema), attrs, hidden_attributes=hidden)

    def check_resource(self, name: str, spec: Any) -> None:
        h = heat()
        where = f"resources.{name}"
        if not isinstance(spec, dict):
            return
        for key in spec:
            if key not in h.hot._RESOURCE_KEYS:
                self.error(f"{where}.{key}", "unknown resource key" + _suggest(key, h.hot._RESOURCE_KEYS))
        policy = spec.get("deletion_policy")
        if policy is not None and not _is_function(policy) and policy not in h.hot.deletion_policies:
            self.error(f"{where}.deletion_policy", f"unknown deletion policy '{policy}' (Delete, Retain or Snapshot)")
        deps = spec.get("depends_on") or []
        for dep in [deps] if isinstance(deps, str) else deps:
            if dep not in self.resources:
                self.error(f"{where}.depends_on", f"no resource '{dep}'" + _suggest(dep, self.resources))
        if "condition" in spec:
            self.condition_ref(spec["condition"], f"{where}.condition")
        for key in ("metadata", "update_policy"):
            if key in spec:
                self.value(spec[key], f"{where}.{key}")
        rt = self.types.get(name)
        props = spec.get("properties")
        if props is None:
            props = {}
        if _is_function(props):
            self.value(props, f"{where}.properties")
            return
        if not isinstance(props, dict):
            self.error(f"{where}.properties", "must be a mapping")
            return
        if rt is None:
            for key, val in props.items():
                self.value(val, f"{where}.properties.{key}")
            return
        self.properties(rt.properties, props, f"{where}.properties", rt.name)

    def properties(self, schemas: dict, values: dict, where: str, owner: str) -> None:
        for key, val in values.items():
            schema = schemas.get(key)
            if schema is None:
                self.error(f"{where}.{key}", f"unknown property '{key}' of {owner}" + _suggest(key, schemas))
                self.value(val, f"{where}.{key}")
                continue
            status = getattr(schema, "support_status", None)
            if status is not None and status.status in ("HIDDEN", "DEPRECATED"):
                self.error(f"{where}.{key}", f"property '{key}' of {owner} is {status.status.lower()}"
                           + (f": {status.message}" if status.message else ""))
            self.typed(schema, val, f"{where}.{key}", f"{owner} {key}")
        for key, schema in schemas.items():
            if _required(schema) and key not in values:
                self.error(f"{where}.{key}", f"missing required property '{key}' of {owner}")

    def typed(self, schema: Any, value: Any, where: str, owner: str) -> None:
        """Check a value against a property schema (Heat's properties.Schema, or a nested
        template's parameter schema)."""
        expected = _schema_type(schema)
        fn = _is_function(value)
        if fn:
            got = self.value(value, where)
            self.compatible(expected, got, value, where)
            return
        if value is None:
            return
        if expected == "map":
            if not isinstance(value, dict):
                self.error(where, f"expects a map, got {_kind(value)}")
                return
            sub = _sub_schema(schema)
            if sub is not None:
                self.properties(sub, value, where, owner)
            else:
                for k, v in value.items():
                    self.value(v, f"{where}.{k}")
        elif expected == "list":
            if isinstance(value, str) and getattr(schema, "allow_conversion", False):
                return
            if not isinstance(value, list):
                self.error(where, f"expects a list, got {_kind(value)}")
                return
            item = _item_schema(schema)
            for i, v in enumerate(value):
                if item is not None:
                    self.typed(item, v, f"{where}[{i}]", owner)
                else:
                    self.value(v, f"{where}[{i}]")
        elif expected in ("string", "number", "boolean"):
            before = len(self.v.problems)
            self.scalar(schema, expected, value, where)
            if len(self.v.problems) > before:
                return
        if not _contains_function(value):
            self.literal_constraints(schema, value, where)

    def scalar(self, schema: Any, expected: str, value: Any, where: str) -> None:
        ok = {
            "string": isinstance(value, (str, int, bool)) and not isinstance(value, float),
            "number": (isinstance(value, (int, float)) and not isinstance(value, bool)) or _numeric(value),
            "boolean": isinstance(value, bool) or (isinstance(value, str) and value.lower() in ("true", "false")),
        }[expected]
        if expected == "number" and _schema_raw_type(schema) == "Integer" and isinstance(value, float):
            ok = False
        if not ok:
            self.error(where, f"expects {_schema_raw_type(schema) or expected}, got {_kind(value)} {value!r}")

    def literal_constraints(self, schema: Any, value: Any, where: str) -> None:
        """Heat's own constraint checks (allowed values, ranges, lengths, patterns) on a literal
        scalar. Custom constraints (nova.flavor, ...) ask the cloud: Heat checks them at create."""
        h = heat()
        from heat.engine import properties as heat_properties
        try:
            if isinstance(schema, heat_properties.Schema):
                if schema.type not in ("String", "Integer", "Number", "Boolean") or not schema.constraints:
                    return
                converted = heat_properties.Property(schema).get_value(value)
                schema.validate_constraints(converted, None, skipped=[h.constraints.CustomConstraint])
            elif isinstance(schema, h.parameters.Schema):  # a nested template's parameter
                plain = h.param_schema(schema.type, constraints=[c for c in schema.constraints
                                                                 if not isinstance(c, h.constraints.CustomConstraint)])
                h.parameters.Parameter(where, plain, value).validate(validate_value=True, context=None)
        except Exception as e:  # noqa: BLE001 - Heat's message names the allowed values/range
            self.error(where, str(e))

    def compatible(self, expected: str, got: str, value: Any, where: str) -> None:
        if expected == "any" or got == "any" or expected == got:
            return
        if expected == "string" and got in ("number", "boolean"):
            return
        fn = _is_function(value)
        self.error(where, f"expects {expected}, but {fn} gives {got}" + _describe(value))

    # -- intrinsic functions -----------------------------------------------------------------
    def value(self, value: Any, where: str) -> str:
        """Walk a value, check every function in it, return its type."""
        fn = _is_function(value)
        if fn:
            return self.function(fn, value[fn], where)
        if isinstance(value, dict):
            for k, v in value.items():
                self.value(v, f"{where}.{k}")
            return "map"
        if isinstance(value, list):
            for i, v in enumerate(value):
                self.value(v, f"{where}[{i}]")
            return "list"
        if isinstance(value, bool):
            return "boolean"
        if isinstance(value, (int, float)):
            return "number"
        if isinstance(value, str):
            return "string"
        return "any"

    def function(self, fn: str, args: Any, where: str) -> str:
        h = heat()
        known = h.hot.functions.get(fn)
        if known is None:
            self.error(where, f"unknown function '{fn}'" + _suggest(fn, [f for f in h.hot.functions if "::" not in f]))
            return "any"
        if known.__name__ in ("Removed", "Invalid"):
            self.error(where, f"function '{fn}' is not available in HOT wallaby")
            return "any"
        if fn == "get_param":
            return self.get_param(args, where)
        if fn == "get_resource":
            if not isinstance(args, str):
                self.error(where, "get_resource takes a resource name")
            elif args not in self.resources:
                self.error(where, f"get_resource '{args}': no such resource" + _suggest(args, self.resources))
            return "string"
        if fn == "get_attr":
            return self.get_attr(args, where)
        if fn == "get_file":
            if isinstance(args, str) and "://" not in args and not (self.path.parent / args).is_file():
                self.error(where, f"get_file '{args}': no such file next to the template")
            return "string"
        if fn == "if":
            if not isinstance(args, list) or len(args) not in (2, 3):
                self.error(where, "if takes [condition, value_if_true] or [condition, value_if_true, value_if_false]")
                return "any"
            self.condition_ref(args[0], f"{where}.if[0]")
            types = {self.value(a, f"{where}.if[{i + 1}]") for i, a in enumerate(args[1:])}
            return types.pop() if len(types) == 1 else "any"
        if fn in ("str_replace", "str_replace_strict", "str_replace_vstrict"):
            self.str_replace(fn, args, where)
            return "string"
        self.value(args, f"{where}.{fn}")
        return RESULT_TYPES.get(fn, "any")

    def get_param(self, args: Any, where: str) -> str:
        name = args[0] if isinstance(args, list) and args else args
        if _is_function(name):
            self.value(name, where)
            return "any"
        if not isinstance(name, str):
            self.error(where, "get_param takes a parameter name")
            return "any"
        if name in PSEUDO_PARAMS:
            return "string"
        if name not in self.t.parameters:
            self.error(where, f"get_param '{name}': no such parameter" + _suggest(name, self.t.parameters))
            return "any"
        self.used_params.add(name)
        if isinstance(args, list) and len(args) > 1:
            return "any"
        spec = self.t.parameters[name]
        return PARAM_TYPES.get(spec.get("type"), "any") if isinstance(spec, dict) else "any"

    def get_attr(self, args: Any, where: str) -> str:
        if not isinstance(args, list) or len(args) < 1 or not isinstance(args[0], str):
            self.error(where, "get_attr takes [resource, attribute, ...]")
            return "any"
        res = args[0]
        if res not in self.resources:
            self.error(where, f"get_attr '{res}': no such resource" + _suggest(res, self.resources))
            return "any"
        if len(args) == 1:
            return "map"
        attr = args[1]
        if _is_function(attr):
            self.value(attr, where)
            return "any"
        rt = self.types.get(res)
        if rt is None:
            return "any"
        if attr in rt.hidden_attributes:
            self.error(where, f"get_attr: attribute '{attr}' of {rt.name} is hidden (removed)")
            return "any"
        if attr not in rt.attributes:
            groups = ("OS::Heat::ResourceGroup", "OS::Heat::AutoScalingGroup")
            if rt.name in groups and str(attr).startswith("resource."):
                return "any"
            self.error(where, f"get_attr: {rt.name} '{res}' has no attribute '{attr}'" + _suggest(attr, rt.attributes))
            return "any"
        return rt.attributes[attr] if len(args) == 2 else "any"

    def str_replace(self, fn: str, args: Any, where: str) -> None:
        if not isinstance(args, dict) or "template" not in args or "params" not in args:
            self.error(where, f"{fn} takes {{template: ..., params: {{...}}}}")
            return
        where = f"{where}.{fn}"
        self.value(args["template"], f"{where}.template")
        params = args["params"]
        self.value(params, f"{where}.params")
        text = self._literal_text(args["template"])
        if fn != "str_replace" and text is not None and isinstance(params, dict):
            for key in params:
                if str(key) not in text:
                    self.error(f"{where}.params.{key}", f"placeholder '{key}' does not occur in the template text")

    def _literal_text(self, template: Any) -> str | None:
        if isinstance(template, str):
            return template
        if _is_function(template) == "get_file" and isinstance(template["get_file"], str):
            f = self.path.parent / template["get_file"]
            return f.read_text() if f.is_file() else None
        return None

    # -- conditions --------------------------------------------------------------------------
    def condition_ref(self, cond: Any, where: str) -> None:
        """A resource's/output's/if's condition: a condition name, a boolean, or an expression."""
        if isinstance(cond, bool):
            return
        if isinstance(cond, str):
            if cond not in self.conditions:
                self.error(where, f"no condition '{cond}'" + _suggest(cond, self.conditions))
            else:
                self.used_conditions.add(cond)
            return
        self.condition(cond, where)

    def condition(self, expr: Any, where: str) -> None:
        h = heat()
        if isinstance(expr, (bool, str)):
            self.condition_ref(expr, where)
            return
        if not (isinstance(expr, dict) and len(expr) == 1):
            self.error(where, "a condition is a name, a boolean or one condition function")
            return
        fn, args = next(iter(expr.items()))
        if fn not in h.hot.condition_functions:
            self.error(where, f"'{fn}' is not a condition function" + _suggest(fn, h.hot.condition_functions))
            return
        if fn == "get_param":
            self.get_param(args, where)
        elif fn in ("equals", "contains"):
            if not isinstance(args, list) or len(args) != 2:
                self.error(where, f"{fn} takes two arguments")
                return
            for i, a in enumerate(args):
                self.value(a, f"{where}.{fn}[{i}]")
        elif fn == "not":
            self.condition(args, f"{where}.not")
        elif fn in ("and", "or"):
            if not isinstance(args, list) or len(args) < 2:
                self.error(where, f"{fn} takes a list of two or more conditions")
                return
            for i, a in enumerate(args):
                self.condition(a, f"{where}.{fn}[{i}]")


def _required(schema: Any) -> bool:
    """Heat's properties.Schema and a nested template's parameter schema both say `required`
    (for a parameter: it has no default)."""
    return bool(schema.required) and schema.default is None


def _schema_raw_type(schema: Any) -> str:
    t = getattr(schema, "type", None)
    return t if isinstance(t, str) else ""


def _schema_type(schema: Any) -> str:
    """Our value type for a property schema (String, Integer, ...) or a nested template's
    parameter schema (HOT's string, comma_delimited_list, ...)."""
    t = _schema_raw_type(schema)
    return SCHEMA_TYPES.get(t) or PARAM_TYPES.get(t, "any")


def _sub_schema(schema: Any) -> dict | None:
    sub = getattr(schema, "schema", None)
    if isinstance(sub, dict) and sub and "*" not in sub:
        return sub
    return None


def _item_schema(schema: Any) -> Any:
    sub = getattr(schema, "schema", None)
    if sub is None:
        return None
    try:
        return sub["*"]
    except (KeyError, TypeError):
        return None


def _numeric(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def _contains_function(value: Any) -> bool:
    if _is_function(value):
        return True
    if isinstance(value, dict):
        return any(_contains_function(v) for v in value.values())
    if isinstance(value, list):
        return any(_contains_function(v) for v in value)
    return False


def _kind(value: Any) -> str:
    return {dict: "a map", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)


def _describe(value: Any) -> str:
    fn = _is_function(value)
    if fn in ("get_param", "get_attr", "get_resource"):
        return f" ({fn}: {value[fn]})"
    return ""


def templates_in(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix in TEMPLATE_SUFFIXES)


def validate_tree(root: Path, env_dir: Path | None = None) -> list[Problem]:
    """Validate every template directly in `root` and every environment file in `env_dir`
    (default root/env). Returns the problems, sorted; empty means valid."""
    root = Path(root)
    v = Validator(root)
    paths = templates_in(root)
    if not paths:
        v.error(root, "", "no templates (*.yaml) here")
    for p in paths:
        v.check_template(p)
    parsed, stacks = _parsed_and_stacks(v, paths)
    env_dir = Path(env_dir) if env_dir is not None else root / "env"
    if env_dir.is_dir():
        for env in sorted(p for p in env_dir.iterdir() if p.suffix in (".yaml", ".yml")):
            v.check_environment(env, parsed, stacks)
    return sorted(set(v.problems))


def _parsed_and_stacks(v: Validator, paths: list[Path]) -> tuple[list[Template], list[Template]]:
    """The templates that parse, and those of them that are stacks (not only used as a nested
    resource type by another)."""
    parsed = [t for t in (v.template(p) for p in paths) if t is not None]
    nested = set()
    for t in parsed:
        for spec in (t.data.get("resources") or {}).values():
            type_name = spec.get("type") if isinstance(spec, dict) else None
            if is_template_type(type_name):
                rt = v.nested_type(t.path, type_name)
                if rt is not None and rt.nested is not None:
                    nested.add(rt.nested.path)
    return parsed, [t for t in parsed if t.path not in nested]


def stack_templates(root: Path) -> list[Path]:
    """The templates of `root` that are stacks (not only used as a nested resource type)."""
    root = Path(root)
    return [t.path for t in _parsed_and_stacks(Validator(root), templates_in(root))[1]]
