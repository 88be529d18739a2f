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
