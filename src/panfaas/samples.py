"""Synthetic detector data in the layouts facilities write (no binary fixtures in the repo).

* `write_cxi`: CXI 1.4 (`/entry_1/instrument_1/detector_1/data`, with
  `/entry_1/data_1/data` a soft link), one frame or an N×H×W stack.
* `write_cheetah`: a Cheetah single-hit file as in CXIDB-21 (`/data/rawdata0`
  int16, `/data/data` a soft link, `/LCLS/*` scalars, peak list).
Frames look like serial crystallography: a noisy background, a water ring and
Bragg peaks, on the CSPAD raw slab shape 1480×1552 by default.
"""

from __future__ import annotations

import math

import h5py
import numpy as np

CSPAD_SHAPE = (1480, 1552)
PLANCK_C = 1.98644586e-25  # h*c in J*m


def frame(shape=CSPAD_SHAPE, n_peaks: int = 40, seed: int = 0, dtype=np.int16):
    """One synthetic diffraction frame and its peak list (fs, ss, intensity, npix)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    y, x = np.ogrid[:h, :w]
    cy, cx = h / 2.0, w / 2.0
    r = np.hypot(y - cy, x - cx)
    img = rng.normal(20.0, 4.0, size=shape).astype(np.float32)
    img += (60.0 * np.exp(-((r - 0.28 * min(h, w)) ** 2) / (2 * 18.0 ** 2))).astype(np.float32)
    peaks = []
    for _ in range(n_peaks):
        py, px = rng.uniform(10, h - 10), rng.uniform(10, w - 10)
        amp = rng.uniform(200, 3000)
        y0, y1, x0, x1 = int(py) - 4, int(py) + 5, int(px) - 4, int(px) + 5
        yy, xx = np.mgrid[y0:y1, x0:x1]
        spot = amp * np.exp(-((yy - py) ** 2 + (xx - px) ** 2) / 2.0)
        img[y0:y1, x0:x1] += spot.astype(np.float32)
        peaks.append((px, py, float(spot.sum()), 9.0))
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    if info:
        img = np.clip(img, info.min, info.max)
    return img.astype(dtype), np.array(peaks, dtype=np.float64).reshape(-1, 4)


def write_cxi(path, frames: int = 1, shape=CSPAD_SHAPE, dtype=np.int16, photon_energy_ev=9513.54,
              distance_m=0.152, pixel_m=110e-6, seed: int = 0, chunked: bool = True) -> str:
    """A CXI file; `frames > 1` writes an N×H×W stack chunked one frame per chunk."""
    with h5py.File(path, "w") as f:
        f["cxi_version"] = 140
        f["number_of_entries"] = 1
        e = f.create_group("entry_1")
        e["experiment_identifier"] = np.bytes_("PANFAAS_SYNTHETIC_r0001")
        e["start_time"] = np.bytes_("2026-11-22T07:00:00+0100")
        det = e.create_group("instrument_1/detector_1")
        src = e.create_group("instrument_1/source_1")
        src["energy"] = photon_energy_ev * 1.602176634e-19
        src["pulse_width"] = 5e-14
        det["distance"] = distance_m
        det["x_pixel_size"] = pixel_m
        det["y_pixel_size"] = pixel_m
        stack = frames > 1
        full = (frames, *shape) if stack else shape
        chunks = ((1, *shape) if stack else shape) if chunked else None
        ds = det.create_dataset("data", shape=full, dtype=dtype, chunks=chunks)
        for i in range(frames):
            img, peaks = frame(shape, seed=seed + i, dtype=dtype)
            if stack:
                ds[i] = img
            else:
                ds[...] = img
        e.create_group("data_1")
        e["data_1"]["data"] = h5py.SoftLink("/entry_1/instrument_1/detector_1/data")
    return str(path)


def write_cheetah(path, shape=CSPAD_SHAPE, photon_energy_ev=9513.54, seed: int = 0) -> str:
    """A Cheetah single-hit HDF5 file (CXIDB-21 layout)."""
    img, peaks = frame(shape, seed=seed, dtype=np.int16)
    with h5py.File(path, "w") as f:
        f["data/rawdata0"] = img
        f["data/data"] = h5py.SoftLink("/data/rawdata0")
        f["data/rawdata"] = h5py.SoftLink("/data/rawdata0")
        f["processing/cheetah/peakinfo-raw"] = peaks
        f["LCLS/photon_energy_eV"] = np.array([photon_energy_ev])
        f["LCLS/photon_wavelength_A"] = np.array([PLANCK_C / (photon_energy_ev * 1.602176634e-19) * 1e10])
        f["LCLS/detector0-EncoderValue"] = np.array([-429.997])
        f["LCLS/eventTimeString"] = np.bytes_("Sat Mar 23 01:03:20 2013")
    return str(path)


def wavelength_m(photon_energy_ev: float) -> float:
    return PLANCK_C / (photon_energy_ev * 1.602176634e-19) if photon_energy_ev > 0 else math.nan
