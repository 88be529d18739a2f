"""hdf5-preview: a detector frame rendered to PNG, the way CrystFEL's hdfsee showed it.

A standalone OpenWhisk python action (standard library + h5py, numpy, pillow, and
storagehttp.py, remotehdf5.py and taskrun.py from functions/lib, shipped beside it). Called directly with
`read`, `write`, ... or from a Kafka feed trigger, `{"messages": [{"value": {...the same
arguments...}}]}`, one preview per message. README.md lists the arguments.

The file is read over HTTP Range requests: only its metadata and the requested frame are
transferred, so frame 7 of a stack costs one frame, not the stack.
"""

import dataclasses
import io
import math
import re
import time

import h5py
import numpy as np
from PIL import Image

from remotehdf5 import MIN_IMAGE_SIDE, RemoteFile, find_image, open_hdf5
from storagehttp import FunctionError, Http, put, redact
from taskrun import flag_arg, handle, url_arg

SCALES = ("colour", "mono", "invmono")
PEAKS_CHEETAH = "/processing/cheetah/peakinfo-raw"    # (N, 4): fs, ss, intensity, npix
PEAKS_CXI = "/entry_1/result_1"                       # nPeaks, peakXPosRaw, peakYPosRaw per frame
INDEXED_LEVELS = 254      # palette entries 0..254 hold the colour map, 255 the rings
RGB_LEVELS = 1536         # 24-bit output: hdfsee's six bands at 256 steps each
RING_RGB = (0, 255, 0)    # green is in none of the three scales


# -- arguments ---------------------------------------------------------------------------

def _int(args, key, default, lo=None):
    v = args.get(key, default)
    if v is None:
        return None
    if isinstance(v, str) and re.fullmatch(r"\s*-?\d+\s*", v):
        v = int(v)
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise FunctionError(f"'{key}' must be an integer, got {v!r}")
    if lo is not None and v < lo:
        raise FunctionError(f"'{key}' must be >= {lo}, got {v}")
    return v


def _number(args, key, default):
    v = args.get(key, default)
    try:
        if isinstance(v, bool):
            raise ValueError
        x = float(v)
    except (TypeError, ValueError):
        raise FunctionError(f"'{key}' must be a number, got {v!r}") from None
    if not (math.isfinite(x) and x > 0):
        raise FunctionError(f"'{key}' must be > 0, got {v!r}")
    return x


@dataclasses.dataclass
class Options:
    read: str
    write: str
    dataset: str = None
    frame: int = None
    binning: int = 2
    int_boost: float = 1.0
    scale: str = "colour"
    log: bool = False
    peaks: object = False        # False, True (from the file) or an (N, 2) array of fs, ss
    ring_size: float = 5.0
    indexed: bool = True


def parse_options(args):
    """Every argument checked before anything is fetched."""
    scale = args.get("scale", "colour")
    scale = "colour" if scale == "color" else scale
    if scale not in SCALES:
        raise FunctionError(f"'scale' must be one of {', '.join(SCALES)}, got {scale!r}")
    dataset = args.get("dataset")
    if dataset is not None and (not isinstance(dataset, str) or not dataset.strip("/ ")):
        raise FunctionError(f"'dataset' must be an HDF5 path such as /entry_1/data_1/data, got {dataset!r}")
    peaks = args.get("peaks", False)
    if isinstance(peaks, (list, tuple)):
        try:
            arr = np.array([[float(p[0]), float(p[1])] for p in peaks], dtype=np.float64).reshape(-1, 2)
        except (TypeError, ValueError, IndexError, KeyError):
            raise FunctionError("'peaks' must be true, false or a list of [fs, ss] pairs") from None
        if not np.isfinite(arr).all():
            raise FunctionError("'peaks' positions must be finite numbers")
        peaks = arr
    else:
        peaks = flag_arg(args, "peaks", False)
    return Options(
        read=url_arg(args, "read", "the URL of the HDF5/CXI file"),
        write=url_arg(args, "write", "the URL to PUT the PNG to"),
        dataset=("/" + dataset.strip().lstrip("/")) if dataset else None,
        frame=_int(args, "frame", None, lo=0),
        binning=_int(args, "binning", 2, lo=1),
        int_boost=_number(args, "int_boost", 1),
        scale=scale,
        log=flag_arg(args, "log", False),
        peaks=peaks,
        ring_size=_number(args, "ring_size", 5),
        indexed=flag_arg(args, "indexed", True),
    )


# -- finding and reading the image -----------------------------------------------------

def image_dataset(f, dataset=None):
    """(path, dataset): the one asked for, CXI's, Cheetah's, or the first big 2-D one."""
    if dataset:
        try:
            obj = f.get(dataset)
        except (KeyError, OSError, ValueError) as e:  # e.g. a dangling soft link
            raise FunctionError(f"dataset {dataset} cannot be opened: {e}") from None
        if obj is None:
            link = f.get(dataset, getlink=True)
            if isinstance(link, h5py.SoftLink):
                raise FunctionError(f"dataset {dataset} is a soft link to {link.path}, which is not in the file")
            if isinstance(link, h5py.ExternalLink):
                raise FunctionError(f"dataset {dataset} is an external link to {link.filename}:{link.path}, "
                                    "which cannot be followed from a URL")
            raise FunctionError(f"dataset {dataset} not found in the file")
        if not isinstance(obj, h5py.Dataset):
            raise FunctionError(f"{dataset} is a group, not a dataset")
        return dataset, obj
    name, ds = find_image(f)
    if ds is None:
        raise FunctionError("no image in the file: no CXI or Cheetah image dataset and no 2-D "
                            f"dataset larger than {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}")
    return name, ds


def read_frame(name, ds, frame):
    """(image, number of frames): one H×W frame, read alone from an N×H×W stack."""
    if not (ds.dtype.kind in "iu" or ds.dtype.kind == "f" and ds.dtype.itemsize <= 8):
        raise FunctionError(f"{name} holds {ds.dtype}, not numbers an image can be made of")
    if ds.ndim == 2:
        if frame not in (None, 0):
            raise FunctionError(f"frame {frame} out of range: {name} holds one frame (0)")
        sel, n = (), 1
    elif ds.ndim == 3:
        n = ds.shape[0]
        idx = frame or 0
        if not 0 <= idx < n:
            last = f"0..{n - 1}" if n else "none"
            raise FunctionError(f"frame {frame} out of range: {name} holds {n} frames ({last})")
        sel = (idx,)
    else:
        raise FunctionError(f"{name} has {ds.ndim} dimensions; an image is 2-D and a stack 3-D")
    try:
        img = ds[sel] if sel else ds[()]
    except (OSError, ValueError) as e:
        raise FunctionError(f"cannot read {name}: the file is truncated or corrupt ({e})") from None
    if min(img.shape) == 0:
        raise FunctionError(f"{name} is empty (shape {list(ds.shape)})")
    return img, n


def file_peaks(f, frame):
    """(N×2 fs/ss positions, where they came from): Cheetah's peakinfo-raw, or a CXI peak list."""
    try:
        if PEAKS_CHEETAH in f:
            raw = np.asarray(f[PEAKS_CHEETAH][()], dtype=np.float64)
            if raw.ndim == 2 and raw.shape[1] >= 2:
                return raw[:, :2], PEAKS_CHEETAH
        g = f.get(PEAKS_CXI)
        if isinstance(g, h5py.Group) and {"nPeaks", "peakXPosRaw", "peakYPosRaw"} <= set(g):
            row = frame or 0
            if row < g["nPeaks"].shape[0]:
                k = int(g["nPeaks"][row])
                xs, ys = g["peakXPosRaw"][row, :k], g["peakYPosRaw"][row, :k]
                return np.stack([xs, ys], axis=1).astype(np.float64), PEAKS_CXI
    except (OSError, ValueError, TypeError) as e:
        raise FunctionError(f"cannot read the peak list: {e}") from None
    return np.zeros((0, 2)), None


def load(f, opts):
    """Everything the picture needs from an open file."""
    name, ds = image_dataset(f, opts.dataset)
    img, nframes = read_frame(name, ds, opts.frame)
    peaks, source = (None, None)
    if isinstance(opts.peaks, np.ndarray):
        peaks, source = opts.peaks, "argument"
    elif opts.peaks:
        peaks, source = file_peaks(f, opts.frame)
    return {"dataset": name, "image": img, "frames": nframes, "peaks": peaks, "peaks_source": source}


# -- rendering: hdfsee's algorithm -------------------------------------------------------

def colour_map(scale, levels):
    """hdfsee's render_scale() sampled at levels+1 points over [0, max], as uint8 RGB."""
    v = np.arange(levels + 1, dtype=np.float64) / levels
    if scale in ("mono", "invmono"):
        g = v if scale == "mono" else 1.0 - v
        rgb = np.stack([g, g, g], axis=1)
    else:  # six bands: black-blue-pink-red-orange-yellow-white
        s = np.minimum((v * 6).astype(int), 5)
        p = v * 6 - s
        z, o = np.zeros_like(p), np.ones_like(p)
        bands = [np.stack(t, axis=1) for t in (
            (z, z, p), (p, z, o), (o, z, 1 - p), (o, 0.5 * p, z), (o, 0.5 + 0.5 * p, z), (o, o, p))]
        rgb = np.choose(s[:, None], bands)
        rgb[-1] = (1.0, 1.0, 1.0)  # at (and above) max: white
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def bin_image(img, b):
    """Mean of b×b blocks as float32; leftover rows and columns are dropped (as hdfsee did)."""
    h, w = (img.shape[0] // b) * b, (img.shape[1] // b) * b
    if h == 0 or w == 0:
        raise FunctionError(f"binning {b} is larger than the image ({img.shape[0]}x{img.shape[1]})")
    if b == 1:
        return img.astype(np.float32)
    out = np.zeros((h // b, w // b), dtype=np.float32)
    for dy in range(b):  # b*b strided adds: one pass over the pixels, whatever b is
        for dx in range(b):
            out += img[dy:h:b, dx:w:b]
    out *= 1.0 / (b * b)
    return out


def scale_top(img, int_boost):
    """hdfsee: the image's maximum divided by the boost; never below 10 when it is <= 6."""
    if img.dtype.kind == "f":
        finite = img[np.isfinite(img)]
        vmax = float(finite.max()) if finite.size else 0.0
    else:
        vmax = float(img.max())
    top = vmax / int_boost
    return 10.0 if top <= 6 else top


def render(img, opts):
    """(pixels, palette): palette indices (indexed) or an H×W×3 RGB array."""
    top = scale_top(img, opts.int_boost)
    binned = bin_image(img, opts.binning)
    if img.dtype.kind == "f":  # NaN shows black; +inf white
        np.nan_to_num(binned, copy=False, nan=0.0, posinf=top, neginf=0.0)
    if opts.log:  # log(1 + v) for v >= 0, against log(1 + top)
        np.log1p(np.maximum(binned, 0, out=binned), out=binned)
        top = math.log1p(top)
    levels = INDEXED_LEVELS if opts.indexed else RGB_LEVELS
    binned *= levels / top
    np.clip(binned, 0, levels, out=binned)   # below 0: index 0; above max: the last (white)
    if opts.indexed:
        palette = np.zeros((256, 3), dtype=np.uint8)
        palette[:levels + 1] = colour_map(opts.scale, levels)
        palette[255] = RING_RGB
        return binned.astype(np.uint8), palette
    return colour_map(opts.scale, levels)[binned.astype(np.int32)], None


def draw_rings(pixels, peaks, binning, ring_size, value):
    """Circles of ring_size screen pixels around peaks given in raw (fs, ss) pixels."""
    if peaks is None or len(peaks) == 0:
        return
    h, w = pixels.shape[:2]
    t = np.linspace(0, 2 * np.pi, max(16, int(2 * np.pi * ring_size * 1.5)), endpoint=False)
    cx = peaks[:, 0:1] / binning
    cy = peaks[:, 1:2] / binning
    xs = np.rint(cx + ring_size * np.cos(t)).astype(np.int64).ravel()
    ys = np.rint(cy + ring_size * np.sin(t)).astype(np.int64).ravel()
    ok = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    pixels[ys[ok], xs[ok]] = value


def encode_png(pixels, palette):
    out = io.BytesIO()
    if palette is not None:
        im = Image.frombytes("P", (pixels.shape[1], pixels.shape[0]), np.ascontiguousarray(pixels))
        im.putpalette(palette.tobytes(), "RGB")
    else:
        im = Image.fromarray(np.ascontiguousarray(pixels))
    im.save(out, format="PNG", compress_level=1)  # level 1: 2-4x faster than 6, ~20% larger
    return out.getvalue()


def frame_stats(img):
    if img.dtype.kind == "f":
        finite = img[np.isfinite(img)]
        if not finite.size:
            return {"min": None, "max": None, "mean": None}
        return {"min": float(finite.min()), "max": float(finite.max()), "mean": float(finite.mean())}
    return {"min": float(img.min()), "max": float(img.max()), "mean": float(img.mean(dtype=np.float64))}


def picture(loaded, opts):
    """(PNG bytes, its width and height) for what load() returned."""
    pixels, palette = render(loaded["image"], opts)
    draw_rings(pixels, loaded["peaks"], opts.binning, opts.ring_size,
               255 if palette is not None else RING_RGB)
    return encode_png(pixels, palette), pixels.shape[:2]


# -- the action --------------------------------------------------------------------------

def preview(args):
    t0 = time.perf_counter()
    opts = parse_options(args)
    http_ = Http()
    try:
        src = RemoteFile(opts.read, http_)
        with open_hdf5(src, opts.read) as f:
            t_open = time.perf_counter()
            loaded = load(f, opts)
        t_read = time.perf_counter()
        png, (ph, pw) = picture(loaded, opts)
        t_render = time.perf_counter()
        put(http_, opts.write, png, "image/png")
        t_end = time.perf_counter()
    finally:
        http_.close()
    img = loaded["image"]
    return {"png": redact(opts.write), "source": redact(opts.read), "dataset": loaded["dataset"],
            "frame": opts.frame or 0, "frames": loaded["frames"], "shape": list(img.shape),
            "dtype": str(img.dtype), **frame_stats(img),
            "binning": opts.binning, "scale": opts.scale, "log": opts.log,
            "png_shape": [int(ph), int(pw)], "png_bytes": len(png),
            "peaks": None if loaded["peaks"] is None else
            {"count": int(len(loaded["peaks"])), "source": loaded["peaks_source"]},
            "bytes_fetched": src.fetched, "requests": src.requests, "file_bytes": src.size,
            "timing": {"open": round(t_open - t0, 4), "read": round(t_read - t_open, 4),
                       "render": round(t_render - t_read, 4), "upload": round(t_end - t_render, 4),
                       "total": round(t_end - t0, 4)}}


def main(args):
    # One task, or a Kafka feed batch (one preview per task).
    return handle(args, preview, "hdf5-preview", "previews")
