"""Test data for the reference functions, generated at test time (no binary fixtures in the repo).

Detector layouts (see shared/reference/dcache-events-macaroons-cxi.md §5):
* `cxi_stack`: CXI 1.4, an N×H×W stack at /entry_1/instrument_1/detector_1/data, one frame
  per chunk, with /entry_1/data_1/data a soft link to it (panfaas.samples.write_cxi).
* `cheetah_hit`: a Cheetah single-hit file as in CXIDB-21: /data/rawdata0 int16 with
  /data/data a soft link, /processing/cheetah/peakinfo-raw, /LCLS/* scalars.
* `cheetah_cxi`: Cheetah's later CXI output: a stack, a CXI peak list in /entry_1/result_1 and
  per-frame /LCLS arrays; spells `experimental_identifier` as the CXI example file does.
* `plain_hdf5`: no known layout; groups, attributes of every kind, compressed and chunked
  datasets, links (soft, dangling, external), NaN/inf, strings fixed and variable.
* `truncated`, `not_hdf5`, `empty`: broken inputs.
* `shaky_video`: an MP4 whose camera shakes (a still test picture, cropped at a moving offset),
  made with ffmpeg's lavfi sources.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np

from panfaas.samples import CSPAD_SHAPE, frame, write_cheetah, write_cxi

# The two small CXI samples kept beside the repository (tests skip what needs them when absent).
SHARED_CXI = Path(os.environ.get("PANFAAS_SHARED_CXI", "/work/shared/data/cxi"))


def cxi_stack(path, frames: int = 10, shape=CSPAD_SHAPE, seed: int = 0, chunked: bool = True) -> Path:
    write_cxi(path, frames=frames, shape=shape, seed=seed, chunked=chunked)
    return Path(path)


def cheetah_hit(path, shape=CSPAD_SHAPE, seed: int = 0, photon_energy_ev: float = 9513.54) -> Path:
    write_cheetah(path, shape=shape, seed=seed, photon_energy_ev=photon_energy_ev)
    return Path(path)


def cheetah_cxi(path, frames: int = 3, shape=(256, 288), max_peaks: int = 64, seed: int = 0) -> Path:
    """Cheetah's CXI output: stack, per-frame peak list, per-frame LCLS values."""
    with h5py.File(path, "w") as f:
        f["cxi_version"] = 150
        e = f.create_group("entry_1")
        e["experimental_identifier"] = np.bytes_("LCLS_2013_Mar23_r0132")
        e["start_time"] = np.bytes_("2013-03-23T01:03:20-0700")
        det = e.create_group("instrument_1/detector_1")
        ds = det.create_dataset("data", shape=(frames, *shape), dtype=np.float32, chunks=(1, *shape),
                                compression="gzip", compression_opts=1, shuffle=True)
        res = e.create_group("result_1")
        n = res.create_dataset("nPeaks", shape=(frames,), dtype=np.int32)
        xs = res.create_dataset("peakXPosRaw", shape=(frames, max_peaks), dtype=np.float32)
        ys = res.create_dataset("peakYPosRaw", shape=(frames, max_peaks), dtype=np.float32)
        for i in range(frames):
            img, peaks = frame(shape, n_peaks=5 + i, seed=seed + i, dtype=np.float32)
            ds[i] = img
            n[i] = len(peaks)
            xs[i, :len(peaks)], ys[i, :len(peaks)] = peaks[:, 0], peaks[:, 1]
        e.create_group("data_1")["data"] = h5py.SoftLink("/entry_1/instrument_1/detector_1/data")
        lcls = f.create_group("LCLS")
        lcls["photon_energy_eV"] = np.linspace(9500.0, 9520.0, frames)
        lcls.create_group("detector_1")["EncoderValue"] = np.full(frames, -429.997)
        lcls["machineTime"] = np.full(frames, 1364025800, dtype=np.int64)
    return Path(path)


def plain_hdf5(path) -> Path:
    """An HDF5 file in no known layout, with the awkward cases metadata extraction must survive."""
    rng = np.random.default_rng(7)
    with h5py.File(path, "w") as f:
        f.attrs["title"] = "plain file"                       # variable-length str
        f.attrs["fixed"] = np.bytes_("fixed bytes")           # fixed-length bytes
        f.attrs["nan"] = np.nan
        f.attrs["inf"] = np.array([1.0, np.inf, -np.inf])
        f.attrs["ints"] = np.arange(3, dtype=np.uint16)
        f.attrs["names"] = np.array([b"alpha", b"beta"])      # array of fixed strings
        g = f.create_group("scan/raw")
        g.attrs["NX_class"] = np.bytes_("NXdata")
        small = g.create_dataset("tiny", data=np.ones((10, 10), dtype=np.uint8))  # too small to show
        small.attrs["units"] = "counts"
        img = g.create_dataset("image", data=rng.poisson(30, size=(100, 120)).astype(np.float64),
                               chunks=(50, 60), compression="gzip", compression_opts=4, shuffle=True,
                               fletcher32=True)
        img[3, 4] = np.nan
        img.attrs["units"] = np.bytes_("ADU")
        f.create_dataset("scan/lzf", data=np.arange(1000, dtype=np.int32), compression="lzf")
        f["scan/nan_scalar"] = np.nan
        f["scan/label"] = "variable string"
        f.create_dataset("scan/labels", data=["a", "bb", "ccc"], dtype=h5py.string_dtype())
        comp = np.zeros(3, dtype=[("x", "f8"), ("name", "S4")])
        comp["x"] = [1.5, np.nan, 3.0]
        comp["name"] = [b"a", b"b", b"c"]
        f["scan/table"] = comp
        f["scan/empty"] = h5py.Empty("f4")
        f["link_to_image"] = h5py.SoftLink("/scan/raw/image")
        f["dangling"] = h5py.SoftLink("/nowhere")
        f["elsewhere"] = h5py.ExternalLink("other.h5", "/data")
    return Path(path)


def not_hdf5(path) -> Path:
    Path(path).write_bytes(b"this is a text file, not HDF5\n" * 40)
    return Path(path)


def empty(path) -> Path:
    Path(path).write_bytes(b"")
    return Path(path)


def truncated(src, path, keep: float = 0.5) -> Path:
    data = Path(src).read_bytes()
    Path(path).write_bytes(data[:int(len(data) * keep)])
    return Path(path)


def ffmpeg_with_vidstab() -> str | None:
    """The reason video tests cannot run here, or None when they can."""
    exe = shutil.which("ffmpeg")
    if not exe:
        return "ffmpeg is not installed (Debian: apt-get install ffmpeg)"
    filters = subprocess.run([exe, "-hide_banner", "-filters"], capture_output=True, text=True).stdout
    if "vidstabdetect" not in filters:
        return "this ffmpeg has no vidstab filters"
    return None


def shaky_video(path, seconds: float = 3.0, size=(320, 240), rate: int = 25, amplitude: int = 12) -> Path:
    """A still test picture seen by a shaking camera: the crop window moves every frame."""
    w, h = size
    pad = 2 * amplitude + 8
    src = (f"testsrc2=size={w + pad}x{h + pad}:rate={rate},trim=end_frame=1,"
           f"loop=loop={int(seconds * rate) - 1}:size=1:start=0,setpts=N/{rate}/TB")
    shake = (f"crop={w}:{h}:x='{pad // 2}+{amplitude}*sin(n*1.9)+{amplitude // 3}*sin(n*5.3)'"
             f":y='{pad // 2}+{amplitude}*sin(n*1.3+1)+{amplitude // 3}*cos(n*4.1)'")
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", src,
                    "-vf", shake, "-c:v", "libx264", "-preset", "veryfast", "-crf", "18",
                    "-pix_fmt", "yuv420p", str(path)], check=True, capture_output=True)
    return Path(path)


def video_frames(path, size=(160, 120)) -> np.ndarray:
    """The video's frames as an (N, H, W) uint8 grey array (for measuring shake)."""
    w, h = size
    raw = subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", str(path),
                          "-vf", f"scale={w}:{h}", "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                         check=True, capture_output=True).stdout
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, h, w)


def shake(frames: np.ndarray) -> float:
    """Mean frame-to-frame displacement in pixels, by phase correlation of the central region."""
    n, h, w = frames.shape
    core = frames[:, h // 6: h - h // 6, w // 6: w - w // 6].astype(np.float64)
    win = np.outer(np.hanning(core.shape[1]), np.hanning(core.shape[2]))
    spectra = np.fft.fft2((core - core.mean(axis=(1, 2), keepdims=True)) * win)
    moves = []
    for a, b in zip(spectra[:-1], spectra[1:], strict=True):
        cross = a * np.conj(b)
        corr = np.fft.ifft2(cross / (np.abs(cross) + 1e-9)).real
        dy, dx = np.unravel_index(np.argmax(corr), corr.shape)
        dy = dy - corr.shape[0] if dy > corr.shape[0] // 2 else dy
        dx = dx - corr.shape[1] if dx > corr.shape[1] // 2 else dx
        moves.append(np.hypot(dy, dx))
    return float(np.mean(moves))
