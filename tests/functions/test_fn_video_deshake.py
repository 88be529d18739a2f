"""video-deshake (blackbox `exec`) run with real ffmpeg/libvidstab: through dockerskeleton's
protocol (a process with the JSON in argv[1] or on stdin, run from the code as deployed: the
zip with the shared modules beside `exec`, unpacked as the runtime does) and as main(args),
against the real storage element. De-shaking is measured, not assumed: the frame-to-frame camera motion of the
output must be a fraction of the input's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import datagen
import pytest

from panfaas.runtime.executor import materialize
from services import free_port, function_code, load_function

NO_FFMPEG = datagen.ffmpeg_with_vidstab()
needs_ffmpeg = pytest.mark.skipif(NO_FFMPEG is not None, reason=f"cannot run ffmpeg with libvidstab: {NO_FFMPEG}")


@pytest.fixture(scope="module")
def deshake():
    return load_function("video-deshake")


@pytest.fixture(scope="module")
def exec_path(tmp_path_factory):
    """`exec` in the action directory as the runtime unpacks the deployed code."""
    code, binary = function_code("video-deshake")
    action = materialize({"kind": "blackbox", "code": code, "binary": binary},
                         tmp_path_factory.mktemp("deployed") / "video-deshake")
    return action / "exec"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    if NO_FFMPEG:
        pytest.skip(NO_FFMPEG)
    return datagen.shaky_video(tmp_path_factory.mktemp("video") / "shaky.mp4")


@pytest.fixture
def urls(door, clip):
    def make(source=None, write_activity="UPLOAD", split_activity="UPLOAD"):
        d = door.unique_dir("video")
        path = door.put(f"{d}/clip.mp4", source if source is not None else clip)
        out, side = f"{d}/clip-stabilized.mp4", f"{d}/clip-split.mp4"
        return ({"read": door.signed(path), "write": door.signed(out, write_activity),
                 "write_split": door.signed(side, split_activity)}, out, side)
    return make


def run_exec(exec_path, args: dict, via_stdin: bool = False, env: dict | None = None) -> dict:
    argv = [sys.executable, str(exec_path)] + ([] if via_stdin else [json.dumps(args)])
    out = subprocess.run(argv, input=json.dumps(args), capture_output=True, text=True, timeout=300,
                         env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])   # the last stdout line is the result


@needs_ffmpeg
def test_deshakes_through_the_blackbox_protocol(exec_path, urls, door, clip, tmp_path):
    args, out, side = urls()
    res = run_exec(exec_path, args)
    assert "error" not in res, res
    assert res["stabilized"] == door.bare(out) and res["split"] == door.bare(side)
    assert (res["width"], res["height"], res["frames"]) == (320, 240, 75)
    (tmp_path / "s.mp4").write_bytes(door.read_bytes(out))
    (tmp_path / "side.mp4").write_bytes(door.read_bytes(side))
    before = datagen.shake(datagen.video_frames(clip))
    after = datagen.shake(datagen.video_frames(tmp_path / "s.mp4"))
    assert before > 4 and after < 0.4 * before, (before, after)
    # The split screen is twice as wide: the original on the left, the de-shaken video on the right.
    wide = datagen.video_frames(tmp_path / "side.mp4", size=(320, 120))
    assert wide.shape == (75, 120, 320)
    left, right = datagen.shake(wide[:, :, :160]), datagen.shake(wide[:, :, 160:])
    assert right < 0.4 * left, (left, right)


@needs_ffmpeg
def test_arguments_on_stdin_and_bad_json(exec_path, urls):
    res = run_exec(exec_path, {"read": "http://127.0.0.1:9/x.mp4"}, via_stdin=True)
    assert res == {"error": "'write' (the URL to PUT the de-shaken video to) is required"}
    out = subprocess.run([sys.executable, str(exec_path), "{not json"], capture_output=True, text=True)
    assert json.loads(out.stdout.strip().splitlines()[-1])["error"].startswith("the arguments are not JSON")


def test_missing_ffmpeg_is_a_clear_error(deshake, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))   # nothing on PATH
    res = deshake.main({"read": "http://127.0.0.1:9/a.mp4", "write": "http://127.0.0.1:9/b.mp4",
                        "write_split": "http://127.0.0.1:9/c.mp4"})
    assert res == {"error": "ffmpeg and ffprobe not found on PATH: install Debian's ffmpeg "
                            "(apt-get install ffmpeg), which is built with libvidstab"}


@needs_ffmpeg
def test_ffmpeg_without_libvidstab_is_a_clear_error(deshake, monkeypatch, tmp_path):
    # No ffmpeg built without libvidstab can be installed here, so this one is a stand-in: a
    # script that lists ffmpeg's real filters minus the two vidstab ones, as such a build would.
    real = subprocess.run(["ffmpeg", "-hide_banner", "-filters"], capture_output=True, text=True).stdout
    listing = tmp_path / "filters.txt"
    listing.write_text("".join(x + "\n" for x in real.splitlines() if "vidstab" not in x))
    fake = tmp_path / "ffmpeg"
    fake.write_text(f"#!/bin/sh\n/bin/cat {listing}\n")
    fake.chmod(0o755)
    (tmp_path / "ffprobe").symlink_to(subprocess.run(["which", "ffprobe"], capture_output=True,
                                                     text=True).stdout.strip())
    monkeypatch.setenv("PATH", str(tmp_path))
    res = deshake.main({"read": "http://127.0.0.1:9/a.mp4", "write": "http://127.0.0.1:9/b.mp4",
                        "write_split": "http://127.0.0.1:9/c.mp4"})
    assert res == {"error": f"{fake} has no vidstabdetect or vidstabtransform filter (built without libvidstab): "
                            "install Debian's ffmpeg (apt-get install ffmpeg), which is built with libvidstab"}


@needs_ffmpeg
@pytest.mark.parametrize("source,message", [
    (b"not a video at all\n" * 100, "is not a readable video"),
    (b"", "is empty (0 bytes)"),
])
def test_bad_files(deshake, urls, door, source, message):
    args, out, side = urls(source)
    res = deshake.main(args)
    assert set(res) == {"error"} and message in res["error"], res
    assert not door.exists(out) and not door.exists(side)


@needs_ffmpeg
def test_unreachable_and_refused(deshake, urls, door):
    args, out, _ = urls()
    dead = f"http://127.0.0.1:{free_port()}/v.mp4"
    assert deshake.main({**args, "read": dead})["error"].startswith(f"cannot reach {dead}")
    assert "(HTTP 401" in deshake.main({**args, "read": args["read"].split("?")[0]})["error"]
    res = deshake.main({**args, "read": args["read"].split("?")[0] + "?authz=garbage"})
    assert "storage refused access" in res["error"]
    assert not door.exists(out)


@needs_ffmpeg
def test_second_upload_refused_removes_the_first(deshake, urls, door):
    args, out, side = urls(write_activity="UPLOAD,DELETE", split_activity="DOWNLOAD")
    res = deshake.main(args)
    assert "storage refused access" in res["error"] and "was removed again" in res["error"], res
    assert not door.exists(out) and not door.exists(side)
    args, out, side = urls(split_activity="DOWNLOAD")       # the write macaroon cannot delete
    res = deshake.main(args)
    assert "left in place: DELETE answered HTTP 403" in res["error"], res


@pytest.mark.parametrize("extra,message", [
    ({"shakiness": 0}, "'shakiness' must be an integer from 1 to 10, got 0"),
    ({"shakiness": 2.5}, "'shakiness' must be an integer from 1 to 10"),
    ({"crf": 60}, "'crf' must be an integer from 0 to 51"),
    ({"zoom": "big"}, "'zoom' must be a number from -100 to 100"),
    ({"preset": "warp"}, "'preset' must be one of ultrafast"),
    ({"write_split": "http://127.0.0.1:9/b.mp4"}, "'write' and 'write_split' must be different URLs"),
    ({"write_split": None}, "'write_split' (the URL to PUT the split-screen video to) is required"),
])
def test_bad_arguments(deshake, extra, message):
    args = {"read": "http://127.0.0.1:9/a.mp4", "write": "http://127.0.0.1:9/b.mp4",
            "write_split": "http://127.0.0.1:9/c.mp4", **extra}
    res = deshake.main(args)
    assert set(res) == {"error"} and message in res["error"], res
