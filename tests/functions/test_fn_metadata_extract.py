"""metadata-extract called directly (main(args)) against the real storage element and a counting
HTTP server, on generated CXI, Cheetah and plain HDF5 files and the shared CXI samples."""

from __future__ import annotations

import json

import datagen
import h5py
import numpy as np
import pytest

J_PER_EV = 1.602176634e-19
HC = 6.62607015e-34 * 299792458.0


def strict_json(data: bytes) -> dict:
    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")
    return json.loads(data, parse_constant=refuse)


@pytest.fixture
def run(door, fn):
    """Upload a file and extract its metadata to <file>.json: (result, document)."""
    def call(local, name=None, **args):
        d = door.unique_dir("meta")
        path = door.put(f"{d}/{name or local.name}", local)
        res = fn("metadata-extract").main({"read": door.signed(path), "write": door.signed(path + ".json", "UPLOAD"),
                                           **args})
        doc = strict_json(door.read_bytes(path + ".json")) if "error" not in res else None
        return res, doc, path
    return call


def by_path(items):
    return {i["path"]: i for i in items}


def test_cxi_stack_science_and_structure(run, data, door):
    res, doc, path = run(data.path("stack"))
    assert "error" not in res, res
    assert res["json"] == door.bare(path + ".json") and res["format"] == "cxi"
    sci = doc["science"]
    assert sci == res["science"]
    assert sci["cxi_version"] == 140 and sci["experiment_identifier"] == "PANFAAS_SYNTHETIC_r0001"
    assert sci["photon_energy_eV"] == pytest.approx(9513.54)                  # stored in J
    assert sci["photon_energy_source"] == "/entry_1/instrument_1/source_1/energy"
    assert sci["wavelength_m"] == pytest.approx(HC / (9513.54 * J_PER_EV))
    assert sci["wavelength_A"] == pytest.approx(1.3032, abs=1e-4)
    assert sci["detector_distance_m"] == pytest.approx(0.152)
    assert sci["pixel_size_m"] == {"x": pytest.approx(110e-6), "y": pytest.approx(110e-6)}
    assert sci["frames"] == 10 and sci["image"]["dataset"] == "/entry_1/data_1/data"
    assert sci["start_time"] == "2026-11-22T07:00:00+0100"
    ds = by_path(doc["datasets"])["/entry_1/instrument_1/detector_1/data"]
    assert ds["shape"] == [10, 1480, 1552] and ds["dtype"] == "int16" and ds["chunks"] == [1, 1480, 1552]
    assert by_path(doc["links"])["/entry_1/data_1/data"] == {
        "path": "/entry_1/data_1/data", "type": "soft", "target": "/entry_1/instrument_1/detector_1/data",
        "resolves": True}
    assert by_path(doc["datasets"])["/cxi_version"]["value"] == 140
    assert {"/", "/entry_1", "/entry_1/instrument_1/detector_1"} <= set(by_path(doc["groups"]))
    # Only metadata crossed the wire: a few blocks of a 46 MB file.
    assert res["bytes_fetched"] < 1_000_000 < 40_000_000 < res["file_bytes"]


def test_only_metadata_is_fetched_counted_by_the_server(served, data, fn, tmp_path):
    (tmp_path / "s.cxi").write_bytes(data.path("stack").read_bytes())
    srv = served()
    res = fn("metadata-extract").main({"read": srv.url("s.cxi"), "write": srv.url("s.cxi.json")})
    assert "error" not in res, res
    assert srv.sent == res["bytes_fetched"] < 1_000_000
    assert strict_json((tmp_path / "s.cxi.json").read_bytes())["science"]["frames"] == 10


def test_cheetah_hit_lcls_metadata_and_camera_length(run, data):
    res, doc, _ = run(data.path("cheetah"), coffset=0.582)
    assert "error" not in res, res
    sci = doc["science"]
    assert sci["format"] == "cheetah" and sci["cxi_version"] is None
    assert sci["photon_energy_eV"] == pytest.approx(9513.54) and sci["photon_energy_source"] == "/LCLS/photon_energy_eV"
    assert sci["wavelength_source"] == "/LCLS/photon_wavelength_A"
    assert sci["wavelength_A"] == pytest.approx(HC / (9513.54 * J_PER_EV) * 1e10)
    assert sci["detector_encoder_mm"] == pytest.approx(-429.997)
    assert sci["detector_distance_m"] == pytest.approx(0.152003)          # encoder in mm + coffset
    assert sci["image"] == {"dataset": "/data/data", "shape": [1480, 1552], "dtype": "int16"}
    assert sci["frames"] == 1 and sci["start_time"] == "Sat Mar 23 01:03:20 2013"
    assert by_path(doc["links"])["/data/rawdata"]["target"] == "/data/rawdata0"
    # Without coffset there is no distance to report, only the encoder value.
    res, doc, _ = run(data.path("cheetah"), name="no-coffset.h5")
    assert doc["science"]["detector_distance_m"] is None


def test_cheetah_cxi_per_frame_values_and_the_other_identifier_spelling(run, data):
    res, doc, _ = run(data.path("cheetah_cxi"))
    assert "error" not in res, res
    sci = doc["science"]
    assert sci["experiment_identifier"] == "LCLS_2013_Mar23_r0132"       # spelled experimental_identifier
    assert sci["photon_energy_eV"] == pytest.approx(9510.0)              # mean over the frames
    assert sci["photon_energy_eV_range"] == [9500.0, 9520.0]
    assert sci["frames"] == 3 and sci["cxi_version"] == 150
    data_ds = by_path(doc["datasets"])["/entry_1/instrument_1/detector_1/data"]
    assert data_ds["compression"] == "gzip" and data_ds["compression_opts"] == 1 and data_ds["shuffle"] is True
    assert [f["name"] for f in data_ds["filters"]] == ["shuffle", "deflate"]
    assert data_ds["storage_bytes"] < 3 * 256 * 288 * 4                   # compressed


def test_plain_hdf5_strings_nan_inf_links_and_filters(run, data):
    res, doc, _ = run(data.path("plain"))
    assert "error" not in res, res
    root = by_path(doc["groups"])["/"]["attributes"]
    assert root == {"title": "plain file", "fixed": "fixed bytes", "nan": "NaN",
                    "inf": [1.0, "Infinity", "-Infinity"], "ints": [0, 1, 2], "names": ["alpha", "beta"]}
    ds = by_path(doc["datasets"])
    assert ds["/scan/raw/image"]["attributes"] == {"units": "ADU"}
    assert ds["/scan/raw/image"]["fletcher32"] is True and ds["/scan/raw/image"]["chunks"] == [50, 60]
    assert ds["/scan/lzf"]["compression"] == "lzf"
    assert ds["/scan/label"]["value"] == "variable string" and ds["/scan/label"]["dtype"] == "string(utf-8, variable)"
    assert ds["/scan/labels"]["value"] == ["a", "bb", "ccc"]
    assert ds["/scan/nan_scalar"]["value"] == "NaN"
    assert ds["/scan/table"]["value"][1] == {"x": "NaN", "name": "b"}
    assert ds["/scan/empty"]["shape"] is None
    assert by_path(doc["links"])["/dangling"]["resolves"] is False
    assert by_path(doc["links"])["/elsewhere"] == {"path": "/elsewhere", "type": "external", "file": "other.h5",
                                                   "target": "/data"}
    assert doc["science"]["format"] == "hdf5" and doc["science"]["image"]["dataset"] == "/scan/raw/image"
    assert res["counts"] == {"groups": 3, "datasets": 8, "links": 3, "attributes": 9}


def test_shared_cxi_samples(run):
    sample = datagen.SHARED_CXI / "typical_raw.cxi"
    if not sample.exists():
        pytest.skip(f"{sample} is not available on this machine")
    res, doc, _ = run(sample)
    assert "error" not in res, res
    sci = doc["science"]
    assert sci["experiment_identifier"] == "LCLS_2009_Dec11_170451_21963"
    assert sci["photon_energy_eV"] == pytest.approx(2.8893e-16 / J_PER_EV, rel=1e-3)   # about 1.80 keV
    assert sci["detector_distance_m"] == 0.15 and sci["sample"] == "Mimivirus" and sci["instrument"] == "AMO"
    assert sci["cxi_version"] == 120


def test_machine_time_start_and_a_subtree_without_write(door, fn, tmp_path):
    f = tmp_path / "lcls.h5"
    with h5py.File(f, "w") as h:
        h["LCLS/machineTime"] = np.array([1364025800])
        h["LCLS/photon_energy_eV"] = np.array([np.nan])                  # not a usable value
        h["other/x"] = np.arange(4)
    d = door.unique_dir("meta")
    path = door.put(f"{d}/lcls.h5", f)
    res = fn("metadata-extract").main({"read": door.signed(path), "path": "/LCLS"})
    assert "error" not in res, res
    assert res["json"] is None and res["science"]["start_time"] == "2013-03-23T08:03:20+00:00"
    assert res["science"]["photon_energy_eV"] is None
    assert [g["path"] for g in res["metadata"]["groups"]] == ["/LCLS"]
    assert {x["path"] for x in res["metadata"]["datasets"]} == {"/LCLS/machineTime", "/LCLS/photon_energy_eV"}
    res = fn("metadata-extract").main({"read": door.signed(path), "max_objects": 2})
    assert res["truncated"] is True and sum(res["counts"][k] for k in ("groups", "datasets", "links")) == 2


def test_a_science_value_out_of_range_is_null(served, fn, tmp_path):
    with h5py.File(tmp_path / "huge.cxi", "w") as h:
        h["entry_1/instrument_1/source_1/energy"] = 1e300                # J: beyond any float in eV
    srv = served()
    res = fn("metadata-extract").main({"read": srv.url("huge.cxi")})
    assert "error" not in res, res
    assert res["science"]["photon_energy_eV"] is None and res["science"]["wavelength_A"] is None


def test_kafka_batch(door, data, fn):
    d = door.unique_dir("meta-batch")
    good = door.put(f"{d}/a.h5", data.path("cheetah"))
    msgs = [{"value": {"read": door.signed(good), "write": door.signed(good + ".json", "UPLOAD"), "task_id": "t1"}}]
    res = fn("metadata-extract").main({"messages": msgs, "coffset": 0.5})
    assert res["count"] == 1 and res["failed"] == 0 and "error" not in res
    assert res["results"][0]["task_id"] == "t1"
    assert res["results"][0]["science"]["detector_distance_m"] == pytest.approx(0.070003)


BAD = [
    ("text", {}, "is not a readable HDF5 file: no HDF5 signature"),
    ("truncated", {}, "is not a readable HDF5 file: truncated"),
    ("empty", {}, "is empty (0 bytes)"),
    ("cheetah", {"path": "/nope"}, "/nope not found in the file"),
    ("cheetah", {"coffset": "far"}, "'coffset' must be a number of metres"),
    ("cheetah", {"max_objects": 0}, "'max_objects' must be an integer >= 1"),
]


@pytest.mark.parametrize("kind,args,message", BAD, ids=[b[2][:30] for b in BAD])
def test_bad_input_gives_one_clear_error_and_no_json(run, door, data, kind, args, message):
    res, _, path = run(data.path(kind), **args)
    assert set(res) == {"error"} and message in res["error"], res
    assert not door.exists(path + ".json")


def test_unreachable_and_refused(door, data, fn):
    from services import free_port
    main = fn("metadata-extract").main
    d = door.unique_dir("meta-refused")
    path = door.put(f"{d}/hit.h5", data.path("cheetah"))
    out = door.signed(path + ".json", "UPLOAD")
    assert main({"read": f"http://127.0.0.1:{free_port()}/x.h5", "write": out})["error"].startswith("cannot reach")
    assert "(HTTP 401" in main({"read": door.bare(path), "write": out})["error"]
    assert "(HTTP 403" in main({"read": door.signed(path, "UPLOAD"), "write": out})["error"]
    assert main({"read": door.signed(d + "/none.h5"), "write": out})["error"].endswith("does not exist (HTTP 404)")
    assert main({"write": out}) == {"error": "'read' (the URL of the HDF5/CXI file) is required"}
    res = main({"read": door.signed(path), "write": door.signed(path + ".json", "DOWNLOAD")})
    assert "storage refused access" in res["error"] and "(HTTP 403" in res["error"]
    assert not door.exists(path + ".json")
