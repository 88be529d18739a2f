import pytest

from panfaas.runtime import executor as ex


@pytest.mark.parametrize("line, status, result", [
    (b'{"ok": 1}', ex.SUCCESS, {"ok": 1}),
    (b"[1, 2]", ex.SUCCESS, [1, 2]),
    (b'{"error": "bad file"}', ex.APPLICATION_ERROR, {"error": "bad file"}),
    (b"42", ex.DEVELOPER_ERROR, {"error": "The action did not return a dictionary or array."}),
])
def test_interpret_like_the_invoker(line, status, result):
    out = ex.interpret(line, [])
    assert out.status == status and out.result == result


def test_oversized_result_is_an_application_error():
    out = ex.interpret(b'{"x": "' + b"a" * ex.MAX_RESULT_BYTES + b'"}', [])
    assert out.status == ex.APPLICATION_ERROR and "exceeded" in out.result["error"]


def test_log_lines_use_openwhisk_format():
    line = ex.log_line("stdout", "hello")
    ts, rest = line[:30], line[30:]
    assert ts.rstrip().endswith("Z") and rest == " stdout: hello"


def test_log_buffer_truncates_with_a_warning():
    buf = ex.LogBuffer(limit_bytes=20)
    for _ in range(10):
        buf.add("stdout", "0123456789")
    assert buf.truncated and "truncated" in buf.lines[-1] and len(buf.lines) == 2


def test_result_over_1_mb_keeps_the_truncated_response():
    out = ex.interpret(b'{"x": "' + b"a" * (2 * ex.MAX_RESULT_BYTES) + b'"}', [])
    err = out.result["error"]
    assert err.startswith(f"The action produced a response that exceeded the allowed length: "
                          f"{2 * ex.MAX_RESULT_BYTES + 9} > {ex.MAX_RESULT_BYTES} bytes. The truncated response was: ")
    assert len(err) < ex.MAX_RESULT_BYTES + 200


def test_launcher_markers_and_non_json():
    assert ex.interpret(b'{"__launcher_oom__": true}', []).result == {"error": ex.OOM}
    assert ex.interpret(b"not json", []).status == ex.DEVELOPER_ERROR
    assert ex.interpret(b'{"error": {"code": 7}}', []).result == {"error": {"code": 7}}


def test_init_env_values_are_strings_as_openwhisk_sends_them():
    assert [ex.env_value(v) for v in ("s", None, True, 3, {"a": [1]})] == ["s", "", "true", "3", '{"a":[1]}']


def test_materialize_text_zip_and_escaping_zip(tmp_path):
    import base64
    import io
    import zipfile
    d = ex.materialize({"kind": "python:3.11", "code": "def main(a): return a"}, tmp_path / "py")
    assert (d / "__main__.py").read_text().startswith("def main")
    d = ex.materialize({"kind": "blackbox", "code": "#!/bin/sh\necho '{}'\n"}, tmp_path / "bb")
    assert (d / "exec").stat().st_mode & 0o111

    def zipped(names):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for n in names:
                z.writestr(n, "x")
        return base64.b64encode(buf.getvalue()).decode()
    d = ex.materialize({"kind": "blackbox", "code": zipped(["exec", "lib/helper.py"]), "binary": True}, tmp_path / "z")
    assert (d / "exec").stat().st_mode & 0o111 and (d / "lib" / "helper.py").exists()
    with pytest.raises(ValueError, match="escapes"):
        ex.materialize({"kind": "python:3.11", "code": zipped(["../evil.py"]), "binary": True}, tmp_path / "evil")
    with pytest.raises(ValueError, match="not a valid zip"):
        ex.materialize({"kind": "python:3.11", "code": "AAAA", "binary": True}, tmp_path / "bad")
    assert not (tmp_path / "evil.py").exists()


def test_pool_key_takes_init_parameters_of_any_json_type():
    action = {"namespace": "guest", "name": "a"}
    brokers = ex.pool_key(action, "d", 256, {"BROKERS": ["k0:9092", "k1:9092"], "OPTS": {"x": 1}})
    assert brokers == ex.pool_key(action, "d", 256, {"OPTS": {"x": 1}, "BROKERS": ["k0:9092", "k1:9092"]})
    assert brokers != ex.pool_key(action, "d", 256, {"BROKERS": ["k0:9092"], "OPTS": {"x": 1}})
    assert ex.pool_key(action, "d", 256, {}) != ex.pool_key(action, "d", 512, {})
