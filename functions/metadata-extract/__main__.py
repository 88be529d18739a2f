"""metadata-extract: what is in a CXI, Cheetah or plain HDF5 file, as one JSON document.

A standalone OpenWhisk python action (standard library + h5py, numpy, and storagehttp.py,
remotehdf5.py and taskrun.py from functions/lib, shipped beside it). Called directly with `read` (and
`write`), or from a Kafka feed trigger, `{"messages": [{"value": {...}}]}`. README.md lists
the arguments.

The structure (groups; datasets with shape, dtype, chunks, compression and filters;
attributes; links) and the science metadata (CXI version, experiment identifier, photon
energy and wavelength, detector distance, pixel size, frame count, start time) are read over
HTTP Range requests: only metadata blocks are transferred, never the detector data.
"""

import datetime as dt
import json
import math
import time

import h5py
import numpy as np

from remotehdf5 import RemoteFile, find_image, open_hdf5
from storagehttp import FunctionError, Http, put, redact
from taskrun import handle, url_arg

J_PER_EV = 1.602176634e-19
HC_J_M = 6.62607015e-34 * 299792458.0       # Planck constant × speed of light
VALUE_ELEMENTS = 16                          # datasets this small have their value in the document
ATTRIBUTE_ELEMENTS = 256                     # longer attribute arrays are cut to this many
CXI = "/entry_1"
DET = "/entry_1/instrument_1/detector_1"
SRC = "/entry_1/instrument_1/source_1"
BEAMS = ("/entry_1/instrument_1/beam", "/entry_1/instrument_1/beam_1")


# -- values as JSON ------------------------------------------------------------------------

def _float(x):
    """JSON has no NaN or infinity: they become the strings "NaN", "Infinity", "-Infinity"."""
    if math.isfinite(x):
        return x
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


def _text(b):
    return b.rstrip(b"\0").decode("utf-8", "replace")


def jsonable(v, limit=ATTRIBUTE_ELEMENTS):
    """Any value h5py hands out as strict JSON: strings decoded, NaN/inf spelled out."""
    if isinstance(v, (bytes, np.bytes_)):
        return _text(bytes(v))
    if isinstance(v, (str, bool)) or v is None:
        return v
    if isinstance(v, h5py.Empty):
        return None
    if isinstance(v, (h5py.Reference, h5py.RegionReference)):
        return "<object reference>" if isinstance(v, h5py.Reference) else "<region reference>"
    if isinstance(v, np.void) and v.dtype.names:
        return {name: jsonable(v[name], limit) for name in v.dtype.names}
    if isinstance(v, np.ndarray):
        if v.ndim == 0:
            return jsonable(v[()], limit)
        flat = v.ravel()
        items = [jsonable(x, limit) for x in flat[:limit]]
        if flat.size > limit:
            return {"shape": list(v.shape), "first": items, "truncated": True}
        return np.array(items, dtype=object).reshape(v.shape).tolist() if v.ndim > 1 else items
    if isinstance(v, np.generic):
        v = v.item()
        if isinstance(v, bytes):
            return _text(v)
    if isinstance(v, complex):
        return {"real": _float(v.real), "imag": _float(v.imag)}
    if isinstance(v, float):
        return _float(v)
    if isinstance(v, (int, str, bool)):
        return v
    if isinstance(v, (list, tuple)):
        return [jsonable(x, limit) for x in v[:limit]]
    return str(v)


def dtype_name(dt_):
    s = h5py.check_string_dtype(dt_)
    if s is not None:
        length = "variable" if s.length is None else s.length
        return f"string({s.encoding}, {length})"
    if dt_.names:
        return "compound{" + ", ".join(f"{n}: {dtype_name(dt_.fields[n][0])}" for n in dt_.names) + "}"
    base = h5py.check_vlen_dtype(dt_)
    if base is not None:
        return f"vlen[{dtype_name(base)}]"
    if h5py.check_enum_dtype(dt_):
        return f"enum({dt_.name})"
    if dt_.subdtype:
        return f"{dtype_name(dt_.subdtype[0])}{list(dt_.subdtype[1])}"
    order = ">" if dt_.byteorder == ">" else ""
    return order + dt_.name


def attributes(obj):
    out = {}
    for name in obj.attrs:
        try:
            out[name] = jsonable(obj.attrs[name])
        except (OSError, TypeError, ValueError) as e:  # an attribute h5py cannot read
            out[name] = {"unreadable": str(e)}
    return out


# -- the structure -------------------------------------------------------------------------

def filters(ds):
    plist = ds.id.get_create_plist()
    out = []
    for i in range(plist.get_nfilters()):
        fid, _flags, values, name = plist.get_filter(i)
        out.append({"id": int(fid), "name": _text(name) or None, "values": [int(x) for x in values]})
    return out


def describe_dataset(path, ds):
    shape = None if ds.shape is None else list(ds.shape)
    d = {"path": path, "shape": shape, "dtype": dtype_name(ds.dtype),
         "size": int(ds.size or 0), "chunks": list(ds.chunks) if ds.chunks else None,
         "maxshape": None if ds.maxshape is None else [m if m is not None else "unlimited" for m in ds.maxshape],
         "compression": ds.compression, "compression_opts": jsonable(ds.compression_opts),
         "shuffle": ds.shuffle, "fletcher32": ds.fletcher32, "filters": filters(ds),
         "storage_bytes": int(ds.id.get_storage_size()), "attributes": attributes(ds)}
    if shape is not None and d["size"] <= VALUE_ELEMENTS:
        try:
            d["value"] = jsonable(ds[()])
        except (OSError, TypeError, ValueError) as e:  # e.g. a filter this h5py lacks
            d["value_error"] = str(e)
    return d


def structure(f, root, max_objects):
    """Groups, datasets and links under `root` (soft and external links are listed, not followed)."""
    start = f[root]
    groups = [{"path": root, "attributes": attributes(start)}]
    datasets, links = [], []
    truncated = False
    prefix = "" if root == "/" else root

    def visit(name, link):
        nonlocal truncated
        if len(groups) + len(datasets) + len(links) >= max_objects:
            truncated = True
            return True
        path = f"{prefix}/{name}"
        if isinstance(link, h5py.SoftLink):
            links.append({"path": path, "type": "soft", "target": link.path, "resolves": link.path in f})
            return None
        if isinstance(link, h5py.ExternalLink):
            links.append({"path": path, "type": "external", "file": link.filename, "target": link.path})
            return None
        obj = start.get(name)
        if isinstance(obj, h5py.Group):
            groups.append({"path": path, "attributes": attributes(obj)})
        elif isinstance(obj, h5py.Dataset):
            datasets.append(describe_dataset(path, obj))
        return None

    if isinstance(start, h5py.Group):
        start.visititems_links(visit)
    else:  # a single dataset was asked for
        groups, datasets = [], [describe_dataset(root, start)]
    return groups, datasets, links, truncated


# -- science metadata ----------------------------------------------------------------------

def _get(f, path):
    try:
        obj = f.get(path)
    except (KeyError, OSError, ValueError):
        return None
    return obj if isinstance(obj, h5py.Dataset) else None


def text_at(f, path):
    ds = _get(f, path)
    if ds is None or ds.size is None or ds.size == 0:
        return None
    v = jsonable(ds[()])
    if isinstance(v, list):
        v = v[0] if v else None
    return v.strip() if isinstance(v, str) else None


def number_at(f, path):
    """(value, range) of a numeric scalar or per-frame array: the mean of its finite values,
    and [min, max] when they differ; (None, None) when absent, not numeric or not finite."""
    ds = _get(f, path)
    if ds is None or ds.dtype.kind not in "iuf" or not ds.size:
        return None, None
    a = np.asarray(ds[()], dtype=np.float64).ravel()
    a = a[np.isfinite(a)]
    if not a.size:
        return None, None
    lo, hi = float(a.min()), float(a.max())
    return float(a.mean()), ([lo, hi] if hi > lo else None)


def first_number(f, paths, factor=1.0):
    for p in paths:
        v, rng = number_at(f, p)
        if v is not None:
            return v * factor, ([x * factor for x in rng] if rng else None), p
    return None, None, None


def file_format(f):
    if "cxi_version" in f or CXI in f:
        return "cxi"
    if any(p in f for p in ("/data/rawdata0", "/LCLS", "/processing/cheetah")):
        return "cheetah"
    return "hdf5"


def science(f, coffset=None):
    s = {"format": file_format(f)}
    version, _, _ = first_number(f, ["/cxi_version"])
    s["cxi_version"] = int(version) if version is not None else None
    s["experiment_identifier"] = next(
        (v for v in (text_at(f, f"{CXI}/experiment_identifier"), text_at(f, f"{CXI}/experimental_identifier"))
         if v), None)
    energy, energy_range, source = first_number(
        f, [f"{SRC}/energy", *(f"{b}/incident_energy" for b in BEAMS)], 1.0 / J_PER_EV)
    if energy is None:
        energy, energy_range, source = first_number(f, ["/LCLS/photon_energy_eV"])
    s["photon_energy_eV"], s["photon_energy_source"] = energy, source
    if energy_range:
        s["photon_energy_eV_range"] = energy_range
    wavelength, _, wsource = first_number(f, [f"{b}/incident_wavelength" for b in BEAMS])
    if wavelength is None:
        wavelength, _, wsource = first_number(f, ["/LCLS/photon_wavelength_A"], 1e-10)
    if wavelength is None and energy and energy > 0:
        wavelength, wsource = HC_J_M / (energy * J_PER_EV), "from photon energy"
    s["wavelength_m"] = wavelength
    s["wavelength_A"] = wavelength * 1e10 if wavelength else None
    s["wavelength_source"] = wsource
    distance, _, dsource = first_number(f, [f"{DET}/distance"])
    encoder, _, esource = first_number(f, ["/LCLS/detector0-EncoderValue", "/LCLS/detector_1/EncoderValue"])
    if encoder is not None:
        s["detector_encoder_mm"] = encoder
        if distance is None and coffset is not None:  # CrystFEL: clen = encoder (mm) + coffset (m)
            distance, dsource = encoder * 1e-3 + coffset, f"{esource} + coffset"
    s["detector_distance_m"], s["detector_distance_source"] = distance, dsource
    x, _, _ = first_number(f, [f"{DET}/x_pixel_size"])
    y, _, _ = first_number(f, [f"{DET}/y_pixel_size"])
    s["pixel_size_m"] = {"x": x, "y": y} if x is not None or y is not None else None
    name, ds = find_image(f)
    if ds is not None:
        s["image"] = {"dataset": name, "shape": list(ds.shape), "dtype": dtype_name(ds.dtype)}
        s["frames"] = int(ds.shape[0]) if ds.ndim == 3 else 1
    else:
        s["image"], s["frames"] = None, 0
    start = text_at(f, f"{CXI}/start_time") or text_at(f, "/LCLS/eventTimeString")
    if start is None:
        t, _, _ = first_number(f, ["/LCLS/machineTime"])
        if t is not None:
            start = dt.datetime.fromtimestamp(t, dt.UTC).isoformat()
    s["start_time"] = start
    for key, path in (("end_time", f"{CXI}/end_time"), ("title", f"{CXI}/title"),
                      ("experiment_description", f"{CXI}/experiment_description"),
                      ("sample", f"{CXI}/sample_1/name"), ("instrument", f"{CXI}/instrument_1/name"),
                      ("source", f"{SRC}/name")):
        v = text_at(f, path)
        if v:
            s[key] = v
    pulse, _, _ = first_number(f, [f"{SRC}/pulse_width"])
    if pulse is not None:
        s["pulse_width_s"] = pulse
    # A value out of float's range (an energy in J too big for eV) is not a value: null, not "Infinity".
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in s.items()}


# -- the action --------------------------------------------------------------------------

def parse_args(args):
    read = url_arg(args, "read", "the URL of the HDF5/CXI file")
    root = args.get("path", "/")
    if not isinstance(root, str) or not root.strip():
        raise FunctionError(f"'path' must be an HDF5 path such as /entry_1, got {root!r}")
    coffset = args.get("coffset")
    if coffset is not None:
        if isinstance(coffset, bool) or not isinstance(coffset, (int, float)) or not math.isfinite(coffset):
            raise FunctionError(f"'coffset' must be a number of metres, got {coffset!r}")
    limit = args.get("max_objects", 20000)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise FunctionError(f"'max_objects' must be an integer >= 1, got {limit!r}")
    write = url_arg(args, "write", "the URL to PUT the JSON document to", required=False)
    return read, write, "/" + root.strip().strip("/"), coffset, limit


def extract(args):
    t0 = time.perf_counter()
    read, write, root, coffset, limit = parse_args(args)
    http_ = Http()
    try:
        src = RemoteFile(read, http_)
        with open_hdf5(src, read) as f:
            if root != "/" and root not in f:
                raise FunctionError(f"{root} not found in the file")
            try:
                groups, datasets, links, truncated = structure(f, root, limit)
                sci = science(f, coffset)
            except (OSError, RuntimeError) as e:
                raise FunctionError(f"{redact(read)} is corrupt or truncated: {e}") from None
        t_read = time.perf_counter()
        doc = {"source": redact(read), "file_bytes": src.size, "path": root,
               "extracted": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
               "science": sci, "groups": groups, "datasets": datasets, "links": links,
               "truncated": truncated}
        body = json.dumps(doc, allow_nan=False, indent=1).encode()
        if write:
            put(http_, write, body, "application/json")
        t_end = time.perf_counter()
    finally:
        http_.close()
    counts = {"groups": len(groups), "datasets": len(datasets), "links": len(links),
              "attributes": sum(len(o["attributes"]) for o in groups + datasets)}
    res = {"json": redact(write) if write else None, "source": redact(read), "format": sci["format"],
           "science": sci, "counts": counts, "truncated": truncated, "json_bytes": len(body),
           "bytes_fetched": src.fetched, "requests": src.requests, "file_bytes": src.size,
           "timing": {"read": round(t_read - t0, 4), "write": round(t_end - t_read, 4),
                      "total": round(t_end - t0, 4)}}
    if not write:
        res["metadata"] = doc
    return res


def without_metadata(res):
    """The documents go to storage: a batch's answer stays small."""
    return {k: v for k, v in res.items() if k != "metadata"}


def main(args):
    # One task, or a Kafka feed batch (one document per task).
    return handle(args, extract, "metadata-extract", "extractions", brief=without_metadata)
