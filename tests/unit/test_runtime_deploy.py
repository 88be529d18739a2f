"""panfaas.deploy's comparisons: what the openwhisk_* modules call "no change"."""

from panfaas import deploy


def action(**over):
    doc = {"exec": {"kind": "python:3.11", "code": "c", "binary": False},
           "limits": {"timeout": 60000, "memory": 256, "logs": 10, "concurrency": 1},
           "parameters": [{"key": "a", "value": 1}],
           "annotations": [{"key": "provide-api-key", "value": False}, {"key": "exec", "value": "python:3.11"}]}
    doc.update(over)
    return doc


def test_a_packaged_action_shows_its_package_parameters_without_being_different():
    want = {"exec": {"kind": "python:3.11", "code": "c"}, "parameters": deploy.as_kv({"a": 1}), "annotations": []}
    cur = action(parameters=[{"key": "a", "value": 1}, {"key": "bucket", "value": "results"}])
    assert deploy._same_action(cur, want, inherited={"bucket": "results"})
    assert not deploy._same_action(cur, want)                                   # not inherited: a real extra
    assert not deploy._same_action(cur, want, inherited={"bucket": "other"})   # overridden by the action


def test_sequence_components_compare_with_the_default_namespace_resolved():
    want = {"exec": {"kind": "sequence", "components": ["/_/pkg/a", "/_/b"]}, "parameters": [], "annotations": []}
    cur = action(exec={"kind": "sequence", "components": ["/guest/pkg/a", "/guest/b"]},
                 parameters=[{"key": "_actions", "value": ["/guest/pkg/a", "/guest/b"]}],
                 annotations=[{"key": "exec", "value": "sequence"}])
    assert deploy._same_action(cur, want)
    assert not deploy._same_action(cur, {**want, "exec": {"kind": "sequence", "components": ["/_/b", "/_/pkg/a"]}})
    assert not deploy._same_action(cur, {**want, "exec": {"kind": "sequence", "components": ["/other/pkg/a", "/_/b"]}})


def test_main_image_and_code_removal_are_changes():
    want = {"exec": {"kind": "python:3.11", "code": "c", "main": "handler"}, "parameters": deploy.as_kv({"a": 1}),
            "annotations": []}
    assert not deploy._same_action(action(), want)
    bb = action(exec={"kind": "blackbox", "image": "img:1", "code": "#!/bin/sh", "binary": False})
    assert not deploy._same_action(bb, {"exec": {"kind": "blackbox", "image": "img:1"},
                                        "parameters": deploy.as_kv({"a": 1}), "annotations": []})


def test_rule_references():
    assert deploy._same_ref({"path": "guest/pkg", "name": "a"}, "/_/pkg/a")
    assert deploy._same_ref({"path": "guest", "name": "t"}, "/guest/t")
    assert not deploy._same_ref({"path": "guest", "name": "t"}, "/other/t")
    assert not deploy._same_ref({"path": "guest/pkg", "name": "a"}, "/_/a")


def test_executable_files_stay_executable_in_the_zip(tmp_path):
    import base64
    import io
    import zipfile
    (tmp_path / "exec").write_text("#!/bin/sh\n")
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    (tmp_path / "run.sh").chmod(0o755)
    (tmp_path / "lib.py").write_text("X = 1\n")
    (tmp_path / "requirements.txt").write_text("numpy\n")
    code, binary = deploy.action_code(tmp_path)
    z = zipfile.ZipFile(io.BytesIO(base64.b64decode(code)))
    modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in z.infolist()}
    assert binary and modes == {"exec": 0o755, "lib.py": 0o644, "run.sh": 0o755}   # requirements.txt left out
