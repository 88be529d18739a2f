import base64
import io
import zipfile

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
