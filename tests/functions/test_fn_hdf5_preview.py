"""hdf5-preview called directly (main(args)) against the real storage element and a counting
HTTP server; the pictures are checked against hdfsee's algorithm written out independently here."""

from __future__ import annotations

import io

import datagen
import h5py
import numpy as np
import pytest
from PIL import Image

FRAME_BYTES = 1480 * 1552 * 2  # one CSPAD int16 frame


def hdfsee(img, binning=2, boost=1.0, scale="colour"):
    """The reference's rendering, written plainly: max/boost (10 if <= 6), b×b mean, render_scale."""
    vmax = float(np.nanmax(img)) / boost
    if vmax <= 6:
        vmax = 10.0
    b = binning
    h, w = img.shape[0] // b * b, img.shape[1] // b * b
    val = img[:h, :w].astype(np.float64).reshape(h // b, b, w // b, b).mean(axis=(1, 3))
    if scale in ("mono", "invmono"):
        p = np.clip(val / vmax, 0, 1)
        g = p if scale == "mono" else 1 - p
        rgb = np.stack([g, g, g], axis=-1)
    else:
        band = vmax / 6
        s = np.floor(val / band)
        p = (val - s * band) / band
        z, o = np.zeros_like(p), np.ones_like(p)
        choices = [np.stack(c, axis=-1) for c in (
            (z, z, p), (p, z, o), (o, z, 1 - p), (o, p / 2, z), (o, 0.5 + p / 2, z), (o, o, p))]
        rgb = np.ones(val.shape + (3,))                       # above max: white
        for k in range(6):
            rgb = np.where((s == k)[..., None], choices[k], rgb)
        rgb = np.where((val < 0)[..., None], 0.0, rgb)        # below zero: black
    return rgb * 255


def png_rgb(data: bytes) -> np.ndarray:
    im = Image.open(io.BytesIO(data))
    assert im.format == "PNG"
    return np.asarray(im.convert("RGB")).astype(np.int32)


@pytest.fixture
def run(door, fn):
    """Upload a file, call hdf5-preview on it with macaroon URLs; (result, PNG path)."""
    def call(local, name=None, **args):
        d = door.unique_dir("preview")
        path = door.put(f"{d}/{name or local.name}", local)
        out = f"{path}.png"
        res = fn("hdf5-preview").main({"read": door.signed(path), "write": door.signed(out, "UPLOAD"), **args})
        return res, out
    return call


def test_cheetah_hit_renders_as_hdfsee_would(run, door, data):
    res, out = run(data.path("cheetah"))
    assert "error" not in res, res
    with h5py.File(data.path("cheetah")) as f:
        img = f["/data/rawdata0"][()]
    assert res["dataset"] == "/data/data" and res["dtype"] == "int16" and res["shape"] == [1480, 1552]
    assert (res["min"], res["max"]) == (img.min(), img.max())
    assert res["mean"] == pytest.approx(img.mean())
    assert res["frames"] == 1 and res["png_shape"] == [740, 776]
    assert res["png"] == door.bare(out) and "authz" not in str(res)  # no macaroon in the record
    assert set(res["timing"]) == {"open", "read", "render", "upload", "total"}
    got = png_rgb(door.read_bytes(out))
    assert got.shape == (740, 776, 3)
    # Indexed PNG: 255 levels over [0, max] -> within one level (6/254 of a band) of the exact map.
    assert np.abs(got - hdfsee(img)).max() <= 7


@pytest.mark.parametrize("scale", ["mono", "invmono", "colour"])
def test_scales_binning_and_boost_match_the_algorithm(run, door, data, scale):
    res, out = run(data.path("cheetah"), name=f"b-{scale}.h5", scale=scale, binning=4, int_boost=8,
                   indexed=False)
    assert "error" not in res, res
    with h5py.File(data.path("cheetah")) as f:
        img = f["/data/data"][()]
    got = png_rgb(door.read_bytes(out))
    assert got.shape == (370, 388, 3)
    assert np.abs(got - hdfsee(img, binning=4, boost=8, scale=scale)).max() <= 2  # 24-bit: 1536 levels


def test_boost_brightens_and_log_lifts_the_background(run, door, data):
    plain, p1 = run(data.path("cheetah"), name="plain.h5", scale="mono")
    boosted, p2 = run(data.path("cheetah"), name="boost.h5", scale="mono", int_boost=10)
    logged, p3 = run(data.path("cheetah"), name="log.h5", scale="mono", log=True)
    means = [png_rgb(door.read_bytes(p)).mean() for p in (p1, p2, p3)]
    assert means[0] < means[1] and means[0] < means[2]
    assert logged["log"] is True


@pytest.mark.parametrize("layout", ["chunked", "contiguous"])
def test_frame_7_of_a_remote_stack_fetches_one_frame_not_the_stack(served, data, fn, tmp_path, layout):
    stack = data.path("stack") if layout == "chunked" else \
        datagen.cxi_stack(tmp_path / "contiguous.cxi", frames=10, chunked=False)
    (tmp_path / "stack.cxi").write_bytes(stack.read_bytes())
    srv = served()
    res = fn("hdf5-preview").main({"read": srv.url("stack.cxi"), "write": srv.url("stack-7.png"), "frame": 7})
    assert "error" not in res, res
    size = stack.stat().st_size
    assert size > 10 * FRAME_BYTES
    # Counted by the server, not by the function: at most two frames' worth crossed the wire.
    assert srv.sent <= 2 * FRAME_BYTES, f"{srv.sent} bytes sent for a {size}-byte stack"
    assert res["bytes_fetched"] == srv.sent and res["file_bytes"] == size
    with h5py.File(stack) as f:
        frame7 = f["/entry_1/data_1/data"][7]
    assert res["frame"] == 7 and res["frames"] == 10 and res["dataset"] == "/entry_1/data_1/data"
    assert (res["min"], res["max"]) == (frame7.min(), frame7.max())
    assert np.abs(png_rgb((tmp_path / "stack-7.png").read_bytes()) - hdfsee(frame7)).max() <= 7


def test_stack_through_the_storage_door_default_frame_0(run, data):
    res, _ = run(data.path("stack"), frame=None)
    assert "error" not in res, res
    assert res["frame"] == 0 and res["frames"] == 10
    assert res["bytes_fetched"] <= 2 * FRAME_BYTES < res["file_bytes"]


def test_server_without_range_support_still_works(served, data, fn, tmp_path):
    (tmp_path / "hit.h5").write_bytes(data.path("cheetah").read_bytes())
    srv = served(honour_range=False)
    res = fn("hdf5-preview").main({"read": srv.url("hit.h5"), "write": srv.url("hit.png")})
    assert "error" not in res, res
    assert res["bytes_fetched"] == res["file_bytes"] == srv.sent  # one plain GET of the file


def test_redirects_are_followed_for_read_and_write(served, data, fn, tmp_path):
    (tmp_path / "hit.h5").write_bytes(data.path("cheetah").read_bytes())
    srv = served()
    res = fn("hdf5-preview").main({"read": srv.url("redirect/hit.h5"), "write": srv.url("redirect/out.png")})
    assert "error" not in res, res
    assert (tmp_path / "out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plain_hdf5_falls_back_to_the_first_big_2d_dataset(run, data):
    res, _ = run(data.path("plain"))
    assert "error" not in res, res
    assert res["dataset"] == "/scan/raw/image"  # /scan/raw/tiny (10x10) is too small to be an image
    assert res["shape"] == [100, 120] and res["dtype"] == "float64"
    assert res["min"] is not None and np.isfinite(res["mean"])  # the NaN pixel does not poison them


def test_explicit_dataset_and_the_shared_cxi_samples(run, data):
    res, _ = run(data.path("plain"), name="explicit.h5", dataset="scan/raw/tiny", binning=1)
    assert "error" not in res, res
    assert res["dataset"] == "/scan/raw/tiny" and res["png_shape"] == [10, 10]
    for name in ("minimal.cxi", "typical_raw.cxi"):
        sample = datagen.SHARED_CXI / name
        if not sample.exists():
            pytest.skip(f"{sample} is not available on this machine")
        res, _ = run(sample)
        assert "error" not in res, (name, res)
        assert res["dataset"] == "/entry_1/data_1/data" and res["shape"] == [50, 100]


def test_peaks_from_peakinfo_raw_are_ringed(run, door, data):
    res, out = run(data.path("cheetah"), name="peaks.h5", peaks=True, ring_size=6, scale="invmono")
    assert "error" not in res, res
    with h5py.File(data.path("cheetah")) as f:
        peaks = f["/processing/cheetah/peakinfo-raw"][()]
    assert res["peaks"] == {"count": len(peaks), "source": "/processing/cheetah/peakinfo-raw"}
    got = png_rgb(door.read_bytes(out))
    green = (got == (0, 255, 0)).all(axis=-1)
    fs, ss = peaks[0, 0] / 2, peaks[0, 1] / 2
    assert green[int(round(ss)), int(round(fs + 6))] or green[int(round(ss)), int(round(fs + 6)) - 1]
    assert green.sum() > 10 * len(peaks)
    assert not green[int(round(ss)), int(round(fs))]  # a ring, not a disc


def test_peaks_from_a_list_and_from_a_cxi_peak_list(run, door, data):
    res, out = run(data.path("cxi1"), peaks=[[100, 200], [800.5, 600]], ring_size=4, indexed=False)
    assert "error" not in res, res
    assert res["peaks"] == {"count": 2, "source": "argument"}
    got = png_rgb(door.read_bytes(out))
    assert (got[100, 54] == (0, 255, 0)).all()  # (fs 100, ss 200) binned by 2, radius 4 to the right
    res, _ = run(data.path("cheetah_cxi"), frame=2, peaks=True)
    assert "error" not in res, res
    assert res["peaks"] == {"count": 7, "source": "/entry_1/result_1"} and res["dtype"] == "float32"


def test_kafka_batch_applies_defaults_and_reports_each_task(door, data, fn):
    d = door.unique_dir("batch")
    good = door.put(f"{d}/a.h5", data.path("cheetah"))
    bad = door.put(f"{d}/b.h5", data.path("text"))
    msgs = [{"value": {"read": door.signed(p), "write": door.signed(p + ".png", "UPLOAD"), "task_id": p}}
            for p in (good, bad)] + [{"value": "not json"}]
    res = fn("hdf5-preview").main({"messages": msgs, "binning": 4})
    assert res["count"] == 3 and res["failed"] == 2 and res["error"] == "2 of 3 previews failed"
    first = res["results"][0]
    assert first["png_shape"] == [370, 388] and first["task_id"] == good
    assert "not a readable HDF5 file" in res["results"][1]["error"]
    assert res["results"][2] == {"error": "message value is not a task object"}
    assert door.exists(good + ".png") and not door.exists(bad + ".png")


# -- bad input: one clear error, nothing written ----------------------------------------

BAD_FILE_CASES = [
    ("text", {}, "not a readable HDF5 file: no HDF5 signature"),
    ("truncated", {}, "not a readable HDF5 file: truncated"),
    ("empty", {}, "is empty (0 bytes)"),
    ("cheetah", {"dataset": "/data/nope"}, "dataset /data/nope not found in the file"),
    ("cheetah", {"dataset": "/data"}, "/data is a group, not a dataset"),
    ("plain", {"dataset": "/dangling"}, "dataset /dangling is a soft link to /nowhere, which is not in the file"),
    ("plain", {"dataset": "/elsewhere"}, "is an external link to other.h5:/data, which cannot be followed"),
    ("stack", {"frame": 10}, "frame 10 out of range: /entry_1/data_1/data holds 10 frames (0..9)"),
    ("cheetah", {"frame": 1}, "frame 1 out of range: /data/data holds one frame (0)"),
    ("cheetah", {"binning": 5000}, "binning 5000 is larger than the image (1480x1552)"),
    ("plain", {"dataset": "/scan/labels"}, "not numbers an image can be made of"),
]


@pytest.mark.parametrize("kind,args,message", BAD_FILE_CASES, ids=[f"{c[0]}-{c[2][:24]}" for c in BAD_FILE_CASES])
def test_bad_files_give_one_clear_error_and_no_png(run, door, data, kind, args, message):
    res, out = run(data.path(kind), **args)
    assert set(res) == {"error"} and message in res["error"], res
    assert not door.exists(out)


BAD_ARGS = [
    ({"binning": 0}, "'binning' must be >= 1, got 0"),
    ({"binning": -2}, "'binning' must be >= 1"),
    ({"binning": 2.5}, "'binning' must be an integer, got 2.5"),
    ({"binning": "two"}, "'binning' must be an integer"),
    ({"binning": True}, "'binning' must be an integer"),
    ({"frame": -1}, "'frame' must be >= 0"),
    ({"int_boost": 0}, "'int_boost' must be > 0"),
    ({"int_boost": "lots"}, "'int_boost' must be a number"),
    ({"scale": "rainbow"}, "'scale' must be one of colour, mono, invmono"),
    ({"peaks": [[1]]}, "'peaks' must be true, false or a list of [fs, ss] pairs"),
    ({"ring_size": -1}, "'ring_size' must be > 0"),
    ({"read": None}, "'read' (the URL of the HDF5/CXI file) is required"),
    ({"write": "ftp://x/y.png"}, "'write' must be an http(s) URL"),
]


@pytest.mark.parametrize("args,message", BAD_ARGS, ids=[m[:30] for _, m in BAD_ARGS])
def test_bad_arguments_are_refused_before_anything_is_fetched(served, fn, args, message):
    srv = served()
    res = fn("hdf5-preview").main({"read": srv.url("x.h5"), "write": srv.url("x.png"), **args})
    assert res == {"error": res["error"]} and message in res["error"], res
    assert srv.requests == []


def test_unreachable_and_refused_urls(door, data, fn):
    from services import free_port
    d = door.unique_dir("refused")
    path = door.put(f"{d}/hit.h5", data.path("cheetah"))
    main = fn("hdf5-preview").main
    dead = f"http://127.0.0.1:{free_port()}/data/x.h5"
    res = main({"read": dead, "write": door.signed(path + ".png", "UPLOAD")})
    assert res["error"].startswith(f"cannot reach {dead}: ") and "refused" in res["error"].lower()
    res = main({"read": door.bare(path), "write": door.signed(path + ".png", "UPLOAD")})
    assert "storage refused access to" in res["error"] and "(HTTP 401" in res["error"]
    res = main({"read": door.signed(path, "UPLOAD"), "write": door.signed(path + ".png", "UPLOAD")})
    assert "storage refused access to" in res["error"] and "(HTTP 403" in res["error"]
    assert "authz" not in res["error"]  # the macaroon stays out of the message
    res = main({"read": door.signed(f"{d}/missing.h5"), "write": door.signed(path + ".png", "UPLOAD")})
    assert res == {"error": f"{door.bare(d + '/missing.h5')} does not exist (HTTP 404)"}
    # The PNG cannot be written: the read-only macaroon is refused for PUT, nothing appears.
    res = main({"read": door.signed(path), "write": door.signed(path + ".png", "DOWNLOAD")})
    assert "storage refused access to" in res["error"] and "(HTTP 403" in res["error"]
    assert not door.exists(path + ".png")
