"""The reference functions as a set: standalone (no panfaas, only the libraries their images
install), the helpers they share kept identical, function.yml in the shape the functions role
reads, and the all-in-one's router rules wired to them without loops."""

from __future__ import annotations

import ast
import re
import sys

import pytest
import yaml

from panfaas import events
from panfaas.router import derive, parse_rules
from services import REPO

FUNCTIONS = REPO / "functions"
INVENTORY = REPO / "inventories" / "local" / "group_vars" / "all"
NAMES = sorted(p.name for p in FUNCTIONS.iterdir() if (p / "function.yml").exists())
FUNCTION_KEYS = {"name", "package", "kind", "image", "main", "limits", "parameters", "triggers"}
IMPORT_NAMES = {"pillow": "PIL"}  # pip package -> import name


def source(name: str) -> str:
    d = FUNCTIONS / name
    return ((d / "__main__.py") if (d / "__main__.py").exists() else (d / "exec")).read_text()


def block(text: str, title: str) -> str:
    m = re.search(rf"^# ---- {title}.*?^# ---- end of the {title}", text, re.S | re.M)
    assert m, f"no '{title}' block"
    return m.group(0)


def test_the_five_reference_functions_exist():
    assert NAMES == ["checksum-validate", "files-in-run", "hdf5-preview", "metadata-extract", "video-deshake"]


def test_shared_helpers_are_identical_copies():
    http = {n: block(source(n), "shared HTTP helpers") for n in NAMES}
    assert len(set(http.values())) == 1, "the shared HTTP helpers differ between functions: keep them in step"
    remote = {n: block(source(n), "shared remote HDF5 file") for n in ("hdf5-preview", "metadata-extract")}
    assert len(set(remote.values())) == 1


@pytest.mark.parametrize("name", NAMES)
def test_function_imports_only_the_stdlib_and_what_its_image_installs(name):
    docker = (FUNCTIONS / name / "Dockerfile").read_text()
    installed = {IMPORT_NAMES.get(p, p) for p in re.findall(r"\b([a-z0-9_-]+)==", docker)}
    imported = set()
    for node in ast.walk(ast.parse(source(name))):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert "panfaas" not in imported
    assert imported - set(sys.stdlib_module_names) - installed == set(), f"{name}: undeclared imports"


@pytest.mark.parametrize("name", NAMES)
def test_function_yml_has_the_keys_the_functions_role_reads(name):
    spec = yaml.safe_load((FUNCTIONS / name / "function.yml").read_text())
    assert set(spec) <= FUNCTION_KEYS and spec["name"] == name
    if spec["kind"] == "blackbox":
        assert (FUNCTIONS / name / "exec").stat().st_mode & 0o111 and "image" in spec
        assert not (FUNCTIONS / name / "__main__.py").exists()
    else:
        assert spec["kind"] == "python:3.11" and (FUNCTIONS / name / "__main__.py").exists()
    readme = (FUNCTIONS / name / "README.md").read_text()
    for section in ("## Arguments", "## Result", "## Errors", "## Example"):
        assert section in readme, f"{name}/README.md: {section}"


def rules():
    return parse_rules({"files": yaml.safe_load((INVENTORY / "platform.yml").read_text())["platform_rules"]})


def upload(path: str) -> events.StorageEvent:
    return events.parse_billing(events.billing_transfer(
        path=path, pnfsid="0000AB", size=1, is_write=True, client="127.0.0.1", client_port=1, user="u",
        uid=1, gid=1, session="s", transfer_ms=1, cell="pool1", domain="d", door="door",
        storage_info="x"))


def test_every_trigger_topic_has_a_rule_and_a_broker_topic():
    topics = set(yaml.safe_load((INVENTORY / "aio.yml").read_text())["aio_task_topics"])
    triggers = {t["topic"] for n in NAMES
                for t in yaml.safe_load((FUNCTIONS / n / "function.yml").read_text())["triggers"]}
    targets = {r.target for r in rules()}
    assert triggers == targets == topics


# What facilities upload, and which functions each upload must reach.
UPLOADS = {
    "/data/run1/hit-0001.h5": {"preview-tasks", "metadata-tasks"},
    "/data/run1/stack.cxi": {"preview-tasks", "metadata-tasks"},
    "/archive/run7/stack.cxi": {"checksum-tasks"},
    "/data/video/clip.mp4": {"deshake-tasks"},
    "/data/run1/RUN_COMPLETE": {"run-tasks"},
    "/data/run1/notes.txt": set(),
}


@pytest.mark.parametrize("path", sorted(UPLOADS))
def test_rules_send_each_upload_to_its_functions_and_outputs_trigger_nothing(path):
    ev = upload(path)
    matched = [r for r in rules() if r.matches(ev)]
    assert {r.target for r in matched} == UPLOADS[path]
    for r in matched:
        for spec in r.urls:
            out = derive(path, spec)
            if spec.name.startswith("write"):
                assert out != path and not [x.target for x in rules() if x.matches(upload(out))], \
                    f"{out} (output of {r.target}) would trigger a rule again"
