"""The reference functions through the whole all-in-one path, as deployed by site.yml:
upload -> billing event -> router rule -> task topic -> Kafka feed -> function -> output in storage.

Every file goes to a fresh path, so these tests share the session's deployment with test_aio.py.
"""

from __future__ import annotations

import io
import json
import subprocess
import time
import uuid

import datagen
import h5py
import numpy as np
import pytest
import requests
from PIL import Image

from panfaas.client import Functions, Storage
from panfaas.samples import write_cxi
from services import wait_until

pytestmark = pytest.mark.slow
TIMEOUT = 120


@pytest.fixture(scope="module")
def aio_clients(aio):
    ep = aio["state"] / "endpoints.json"
    return Storage.from_endpoints(ep), Functions.from_endpoints(ep)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def activation_for(functions: Functions, name: str, since: int, needle: str, timeout: float = TIMEOUT) -> dict:
    """The activation of `name` whose result mentions `needle` (a path)."""
    def find():
        for act in functions.activations(name=name, since=since, limit=100):
            if needle in json.dumps(act.get("response", {}).get("result", {})):
                return act
        return None
    return wait_until(find, timeout, interval=0.5, what=f"an activation of {name} for {needle}")


def wait_file(storage: Storage, path: str, timeout: float = TIMEOUT) -> bytes:
    wait_until(lambda: storage.exists(path), timeout, interval=0.2, what=path)
    return storage.download(path)


def test_detector_file_gets_a_preview_and_its_metadata(aio_clients, tmp_path):
    storage, functions = aio_clients
    d = f"/data/{unique('fn-e2e')}"
    local = tmp_path / "stack.cxi"
    write_cxi(local, frames=3, shape=(512, 544), seed=11)
    storage.mkdir(d)
    since = int(time.time() * 1000)
    storage.upload(f"{d}/stack.cxi", local.read_bytes())
    png = Image.open(io.BytesIO(wait_file(storage, f"{d}/stack.cxi.png")))
    assert png.format == "PNG" and png.size == (272, 256)            # binning 2 by default
    doc = json.loads(wait_file(storage, f"{d}/stack.cxi.json"))
    sci = doc["science"]
    assert sci["frames"] == 3 and sci["cxi_version"] == 140
    assert sci["photon_energy_eV"] == pytest.approx(9513.54)
    assert {"/entry_1/data_1/data"} <= {link["path"] for link in doc["links"]}
    for name in ("hdf5-preview", "metadata-extract"):
        act = activation_for(functions, name, since, f"{d}/stack.cxi")
        assert act["response"]["status"] == "success", act["response"]
        result = act["response"]["result"]
        assert result["count"] == 1 and result["failed"] == 0
        assert "authz" not in json.dumps(result)                   # no macaroon in the records


def test_broken_detector_file_fails_metadata_extract_alone(aio_clients):
    storage, functions = aio_clients
    d = f"/data/{unique('fn-e2e-bad')}"
    storage.mkdir(d)
    since = int(time.time() * 1000)
    storage.upload(f"{d}/broken.h5", b"\x89HDF\r\n\x1a\n but cut short")
    act = activation_for(functions, "metadata-extract", since, f"{d}/broken.h5")
    assert act["response"]["status"] == "application error"
    assert "is not a readable HDF5 file" in act["response"]["result"]["error"]
    assert not storage.exists(f"{d}/broken.h5.json")


def test_completed_run_gets_its_file_list(aio_clients):
    storage, functions = aio_clients
    run = f"/data/{unique('fn-e2e-run')}"
    storage.mkdir(f"{run}/sub")
    for name, size in (("a.dat", 10), ("b.dat", 2000), ("sub/c.dat", 5)):
        storage.upload(f"{run}/{name}", b"x" * size)
    since = int(time.time() * 1000)
    storage.upload(f"{run}/RUN_COMPLETE", b"")
    listing = json.loads(wait_file(storage, f"{run}/files.json"))
    assert [f["relative"] for f in listing["files"]] == ["a.dat", "b.dat", "sub/c.dat"]  # marker left out
    assert [f["size"] for f in listing["files"]] == [10, 2000, 5]
    act = activation_for(functions, "files-in-run", since, f"{run}/files.json")
    assert act["response"]["status"] == "success", act["response"]


def test_archived_file_is_checked_against_the_storage_checksum(aio_clients):
    storage, functions = aio_clients
    d = f"/archive/{unique('fn-e2e')}"
    storage.mkdir(d)
    data = np.random.default_rng(5).bytes(1_500_000)
    since = int(time.time() * 1000)
    storage.upload(f"{d}/frames.bin", data)
    act = activation_for(functions, "checksum-validate", since, f"{d}/frames.bin")
    report = json.loads(wait_file(storage, f"{d}/frames.bin.checksum.json"))
    assert report["validated"] is True and report["size"] == len(data)
    assert act["response"]["status"] == "success"


@pytest.mark.skipif(datagen.ffmpeg_with_vidstab() is not None, reason=str(datagen.ffmpeg_with_vidstab()))
def test_uploaded_video_is_deshaken_by_the_blackbox_function(aio_clients, tmp_path):
    storage, functions = aio_clients
    clip = datagen.shaky_video(tmp_path / "clip.mp4", seconds=2)
    name = unique("e2e-clip")
    since = int(time.time() * 1000)
    storage.mkdir("/data/video")
    storage.upload(f"/data/video/{name}.mp4", clip.read_bytes())
    stab = tmp_path / "stabilized.mp4"
    stab.write_bytes(wait_file(storage, f"/data/video/{name}-stabilized.mp4"))
    side = tmp_path / "split.mp4"
    side.write_bytes(wait_file(storage, f"/data/video/{name}-split.mp4"))
    act = activation_for(functions, "video-deshake", since, f"/data/video/{name}-split.mp4")
    assert act["response"]["status"] == "success", act["response"]
    assert {"key": "kind", "value": "blackbox"} in act["annotations"]
    sizes = [subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                             "stream=width,height", "-of", "csv=p=0", str(p)], capture_output=True,
                            text=True, check=True).stdout.strip() for p in (stab, side)]
    assert sizes == ["320,240", "640,240"]
    assert datagen.shake(datagen.video_frames(stab)) < 0.4 * datagen.shake(datagen.video_frames(clip))
    # The outputs are .mp4 files in /data/video too; the rule ignores them, so no activation
    # ever reads one (tests/functions/test_fn_shared.py checks every rule's outputs).
    time.sleep(2)
    sources = [r.get("source", "") for a in functions.activations(name="video-deshake", since=since, limit=100)
               for r in a["response"]["result"].get("results", [])]
    assert sources and not [s for s in sources if s.endswith(("-stabilized.mp4", "-split.mp4"))]


def test_functions_are_callable_from_a_notebook_with_the_same_arguments(aio_clients, tmp_path):
    storage, functions = aio_clients
    d = f"/data/{unique('fn-e2e-nb')}"
    storage.mkdir(d)
    local = tmp_path / "hit.h5"
    datagen.cheetah_hit(local, shape=(300, 320))
    with h5py.File(local) as f:
        peaks = len(f["/processing/cheetah/peakinfo-raw"])
    storage.upload(f"{d}/hit.h5", local.read_bytes())
    res = functions.invoke("panfaas/hdf5-preview", read=storage.url_for(f"{d}/hit.h5"),
                           write=storage.url_for(f"{d}/hit-peaks.png", "UPLOAD"), peaks=True, scale="mono")
    assert res["peaks"] == {"count": peaks, "source": "/processing/cheetah/peakinfo-raw"}
    listing = functions.invoke("panfaas/files-in-run", url=storage.url_for(d, "LIST,DOWNLOAD"), glob="*.h5",
                               macaroons=True)
    link = listing["files"][0]["url"]
    assert requests.get(link, timeout=10).content == local.read_bytes()
