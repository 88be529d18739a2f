import base64
import io
import zipfile

import pytest

from panfaas import deploy


def test_single_file_function_is_text(tmp_path):
    (tmp_path / "__main__.py").write_text("def main(a):\n    return a\n")
    (tmp_path / "function.yml").write_text("name: x\n")
    (tmp_path / "README.md").write_text("doc")
    code, binary = deploy.action_code(tmp_path)
    assert not binary and code.startswith("def main")


def test_multi_file_function_zip_is_deterministic(tmp_path):
    (tmp_path / "__main__.py").write_text("import helper\n")
    (tmp_path / "helper.py").write_text("X = 1\n")
    first, binary = deploy.action_code(tmp_path)
    (tmp_path / "helper.py").touch()  # a new mtime must not change the zip
    second, _ = deploy.action_code(tmp_path)
    assert binary and first == second
    names = zipfile.ZipFile(io.BytesIO(base64.b64decode(first))).namelist()
    assert names == ["__main__.py", "helper.py"]


def test_same_action_ignores_system_annotations():
    want = {"exec": {"kind": "python:3.11", "code": "c"}, "limits": {"memory": 512},
            "parameters": deploy.as_kv({"a": 1}), "annotations": []}
    cur = {"exec": {"kind": "python:3.11", "code": "c", "binary": False},
           "limits": {"memory": 512, "timeout": 60000, "logs": 10, "concurrency": 1},
           "parameters": [{"key": "a", "value": 1}],
           "annotations": [{"key": "provide-api-key", "value": False}, {"key": "exec", "value": "python"}]}
    assert deploy._same_action(cur, want)
    assert not deploy._same_action(cur, {**want, "limits": {"memory": 256}})
    assert not deploy._same_action(cur, {**want, "exec": {"kind": "python:3.11", "code": "d"}})


def _zip_files(code: str) -> dict:
    z = zipfile.ZipFile(io.BytesIO(base64.b64decode(code)))
    return {i.filename: (z.read(i), i.date_time) for i in z.infolist()}


def test_included_files_go_beside_the_code_in_a_deterministic_zip(tmp_path):
    fn, lib = tmp_path / "fn", tmp_path / "lib"
    fn.mkdir()
    lib.mkdir()
    (fn / "__main__.py").write_text("import shared\n")
    (fn / "function.yml").write_text("name: fn\ninclude: [lib/shared.py]\n")
    (lib / "shared.py").write_text("X = 1\n")
    (lib / "other.py").write_text("Y = 2\n")               # in lib/, but not included: not shipped
    first, binary = deploy.action_code(fn, ["lib/shared.py"])   # relative to fn's parent
    (lib / "shared.py").touch()
    assert binary and deploy.action_code(fn, ["lib/shared.py"]) == (first, True)
    assert deploy.action_code(fn, [lib / "shared.py"]) == (first, True)   # an absolute path
    assert _zip_files(first) == {"__main__.py": (b"import shared\n", deploy.ZIP_EPOCH),
                                 "shared.py": (b"X = 1\n", deploy.ZIP_EPOCH)}
    (lib / "shared.py").write_text("X = 2\n")               # a changed shared module is changed code
    assert deploy.action_code(fn, ["lib/shared.py"])[0] != first


def test_an_include_that_is_missing_or_clashes_is_a_clear_error(tmp_path):
    fn = tmp_path / "fn"
    fn.mkdir()
    (fn / "exec").write_text("#!/bin/sh\n")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "exec").write_text("#!/bin/sh\n")
    with pytest.raises(ValueError, match=f"include lib/nope.py: no such file {tmp_path}/lib/nope.py"):
        deploy.action_code(fn, ["lib/nope.py"])
    with pytest.raises(ValueError, match="include lib/exec: exec is already part of the code"):
        deploy.action_code(fn, ["lib/exec"])
    with pytest.raises(ValueError, match="include needs a function directory"):
        deploy.action_code(fn / "exec", ["lib/exec"])
