"""The reference functions as a set: standalone (no panfaas, only the libraries their images
install and the shared modules of functions/lib they declare), each shared module shipped with
every function that imports it (function.yml `include`, the deployed zip, the image), no copy
of a shared definition left in a function, function.yml in the shape the functions role reads,
and the all-in-one's router rules wired to them without loops."""

from __future__ import annotations

import ast
import base64
import io
import re
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from panfaas import events
from panfaas.router import derive, parse_rules
from services import REPO, function_code, function_includes, load_function

FUNCTIONS = REPO / "functions"
LIB = FUNCTIONS / "lib"
SHARED = {p.stem: p for p in LIB.glob("*.py")}   # module name -> file
INVENTORY = REPO / "inventories" / "local" / "group_vars" / "all"
NAMES = sorted(p.name for p in FUNCTIONS.iterdir() if (p / "function.yml").exists())
FUNCTION_KEYS = {"name", "package", "kind", "image", "main", "include", "limits", "parameters", "triggers"}
IMPORT_NAMES = {"pillow": "PIL"}  # pip package -> import name


def entry(name: str) -> Path:
    d = FUNCTIONS / name
    return (d / "__main__.py") if (d / "__main__.py").exists() else (d / "exec")


def source(name: str) -> str:
    return entry(name).read_text()


def imports(text: str) -> set[str]:
    """The top-level names of every module the code imports."""
    found = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
    return found


def definitions(text: str) -> set[str]:
    """The names a module defines at its top level (functions, classes)."""
    return {n.name for n in ast.parse(text).body
            if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))}


def shipped(name: str) -> set[str]:
    """The module names of what functions/<name>/function.yml includes."""
    return {Path(p).stem for p in function_includes(name)}


def test_the_shared_modules_exist():
    assert {"remotehdf5", "storagehttp"} <= set(SHARED)


def test_the_five_reference_functions_exist():
    assert NAMES == ["checksum-validate", "files-in-run", "hdf5-preview", "metadata-extract", "video-deshake"]


@pytest.mark.parametrize("name", NAMES)
def test_every_shared_module_a_function_needs_is_included_and_nothing_else(name):
    needed, todo = set(), imports(source(name)) & set(SHARED)
    while todo:   # a shared module may import another (remotehdf5 imports storagehttp)
        m = todo.pop()
        needed.add(m)
        todo |= (imports(SHARED[m].read_text()) & set(SHARED)) - needed
    for path in function_includes(name):
        assert (FUNCTIONS / path).is_file() and (FUNCTIONS / path).parent == LIB, f"{name}: include {path}"
    assert shipped(name) == needed, f"{name}/function.yml: include must list exactly lib/<m>.py for {needed}"


@pytest.mark.parametrize("name", NAMES)
def test_function_imports_only_the_stdlib_what_its_image_installs_and_its_shared_modules(name):
    docker = (FUNCTIONS / name / "Dockerfile").read_text()
    installed = {IMPORT_NAMES.get(p, p) for p in re.findall(r"\b([a-z0-9_-]+)==", docker)}
    for path, text in [(entry(name), source(name))] + [(SHARED[m], SHARED[m].read_text()) for m in shipped(name)]:
        imported = imports(text)
        assert "panfaas" not in imported, path
        undeclared = imported - set(sys.stdlib_module_names) - installed - shipped(name)
        assert undeclared == set(), f"{name}: {path.name} imports {undeclared}, which its image does not install"


@pytest.mark.parametrize("name", NAMES)
def test_no_function_keeps_its_own_copy_of_a_shared_definition(name):
    shared = set().union(*(definitions(p.read_text()) for p in SHARED.values()))
    assert definitions(source(name)) & shared == set(), f"{name}: import these from functions/lib instead"


def test_functions_loaded_side_by_side_get_their_own_shared_modules():
    preview, extract = load_function("hdf5-preview"), load_function("metadata-extract")
    assert preview.Http is not extract.Http            # as two actions never share a process
    # Within one function a shared module's error is the function's own FunctionError (caught by it).
    assert preview.open_hdf5.__globals__["FunctionError"] is preview.FunctionError
    assert "storagehttp" not in sys.modules             # nothing leaks to the next import


@pytest.mark.parametrize("name", NAMES)
def test_the_deployed_code_carries_the_shared_modules_beside_the_entry_point(name):
    code, binary = function_code(name)
    z = zipfile.ZipFile(io.BytesIO(base64.b64decode(code)))
    want = {entry(name).name: entry(name)} | {Path(p).name: FUNCTIONS / p for p in function_includes(name)}
    assert binary and sorted(z.namelist()) == sorted(want)
    for member, f in want.items():
        assert z.read(member) == f.read_bytes(), member


@pytest.mark.parametrize("name", NAMES)
def test_the_image_copies_the_code_and_its_shared_modules_into_action(name):
    """Built with functions/ as the context: `docker build -f functions/<name>/Dockerfile functions/`."""
    copied = {}
    for line in (FUNCTIONS / name / "Dockerfile").read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            *sources, dest = words[1:]
            for src in sources:
                assert (FUNCTIONS / src).is_file(), f"{name}/Dockerfile: COPY {src} is not in functions/"
                copied[src] = dest + Path(src).name if dest.endswith("/") else dest
    want = {f"{name}/{entry(name).name}": f"/action/{entry(name).name}"} | \
        {p: f"/action/{Path(p).name}" for p in function_includes(name)}
    assert copied == want
    readme = (FUNCTIONS / name / "README.md").read_text()
    assert f"docker build -f functions/{name}/Dockerfile" in readme, f"{name}/README.md: the build command"


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
