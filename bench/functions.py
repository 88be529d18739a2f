"""Benchmark of the reference functions: hdf5-preview against two baselines measured in this run.

* floor: an h5py read of the frame, a 2×2 mean binning to an 8-bit image and its PNG encode
  (the cheaper of greyscale and palette, zlib level 1): the least any implementation must do.
  Target: hdf5-preview at most 1.5× the floor.
* matplotlib: a straightforward imshow/savefig of the frame at the binned size (Agg).
  Target: hdf5-preview at least 5× faster.
* bytes fetched for frame 7 of a remote 10-frame stack, read through the storage element's
  WebDAV door. Target: at most 2 frames' worth.

hdf5-preview is timed twice: its rendering path on the floor's input (an open local file), and
end to end (main(args): Range GETs from the real storage element, PNG PUT back) for context.
Usage: .venv/bin/python bench/functions.py [--repeat N]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import requests  # noqa: E402
from PIL import Image  # noqa: E402

from panfaas.client import Storage  # noqa: E402
from panfaas.samples import write_cheetah, write_cxi  # noqa: E402
from services import load_function, start_storage  # noqa: E402

SHAPE = (1480, 1552)
FRAME_BYTES = SHAPE[0] * SHAPE[1] * 2


def timed(fn, repeat: int) -> float:
    """Median seconds per call, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def floor(source, mode: str) -> bytes:
    """h5py read, 2x2 mean, 8-bit scale, one PNG encode (mode L or P) at zlib level 1, done as
    cheaply as numpy and Pillow allow."""
    with h5py.File(source, "r") as f:
        img = f["/data/data"][()]
    top = max(float(img.max()), 10.0)
    binned = np.zeros((img.shape[0] // 2, img.shape[1] // 2), dtype=np.float32)
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):  # accumulate in place: no full-size temporaries
        binned += img[dy::2, dx::2]
    binned *= 255.0 / (4 * top)
    np.clip(binned, 0, 255, out=binned)
    u8 = binned.astype(np.uint8)
    out = io.BytesIO()
    im = Image.frombytes(mode, (u8.shape[1], u8.shape[0]), u8)
    if mode == "P":
        im.putpalette(bytes(range(256)) * 3)
    im.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def floor_http(session, read: str, write: str, mode: str) -> None:
    """The floor for a remote file: one GET of the whole file, the floor, one PUT."""
    r = session.get(read)
    r.raise_for_status()
    png = floor(io.BytesIO(r.content), mode)
    session.put(write, data=png).raise_for_status()


def matplotlib_render(path: Path) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    with h5py.File(path, "r") as f:
        img = f["/data/data"][()]
    h, w = img.shape[0] // 2, img.shape[1] // 2
    fig = plt.figure(figsize=(w / 100, h / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.imshow(img, cmap="gnuplot2", vmin=0, vmax=float(img.max()))
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100)
    plt.close(fig)
    return out.getvalue()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=15, help="timed runs per figure (median reported)")
    opts = ap.parse_args()
    preview = load_function("hdf5-preview")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        hit = Path(write_cheetah(tmp / "hit.h5"))
        stack = Path(write_cxi(tmp / "stack.cxi", frames=10))
        storage = start_storage(tmp / "storage", None)
        try:
            st = Storage(storage.url, *storage.auth("admin"))
            st.mkdir("/data/bench")
            st.upload("/data/bench/hit.h5", hit.read_bytes())
            st.upload("/data/bench/stack.cxi", stack.read_bytes())
            read = st.url_for("/data/bench/hit.h5", "DOWNLOAD")
            write = st.url_for("/data/bench/hit.png", "UPLOAD,DELETE")
            args = {"read": read, "write": write}
            popts = preview.parse_options(args)

            def function_local():
                with h5py.File(hit, "r") as f:  # everything main() does except the HTTP transfers
                    loaded = preview.load(f, popts)
                preview.frame_stats(loaded["image"])
                return preview.picture(loaded, popts)[0]

            def function_http():
                res = preview.main(args)
                assert "error" not in res, res
                return res

            # The cheaper 8-bit encoding counts: greyscale (L) or palette (P).
            t_floor = min(timed(lambda m=m: floor(hit, m), opts.repeat) for m in ("L", "P"))
            session = requests.Session()
            t_floor_http = min(timed(lambda m=m: floor_http(session, read, write, m), opts.repeat)
                               for m in ("L", "P"))
            t_local = timed(function_local, opts.repeat)
            t_http = timed(function_http, opts.repeat)
            t_mpl = timed(lambda: matplotlib_render(hit), max(3, opts.repeat // 3))
            breakdown = function_http()["timing"]
            res7 = preview.main({"read": st.url_for("/data/bench/stack.cxi", "DOWNLOAD"),
                                 "write": st.url_for("/data/bench/stack-7.png", "UPLOAD,DELETE"),
                                 "frame": 7})
            assert "error" not in res7, res7
        finally:
            storage.proc.stop()

    def ms(t):
        return f"{t * 1000:8.1f} ms"

    print(f"hdf5-preview, one {SHAPE[0]}x{SHAPE[1]} int16 frame, binning 2, colour (median of {opts.repeat})")
    print(f"  floor (h5py read + 2x2 bin + 8-bit PNG)    {ms(t_floor)}")
    print(f"  hdf5-preview, same local input             {ms(t_local)}   {t_local / t_floor:5.2f}x the floor"
          f"   (target <= 1.5x)  {'MET' if t_local <= 1.5 * t_floor else 'MISSED'}")
    print(f"  matplotlib imshow + savefig                {ms(t_mpl)}   {t_mpl / t_local:5.1f}x slower than"
          f" hdf5-preview   (target >= 5x)  {'MET' if t_mpl >= 5 * t_local else 'MISSED'}")
    print(f"  floor over HTTP (GET file + floor + PUT)   {ms(t_floor_http)}")
    print(f"  hdf5-preview end to end over HTTP          {ms(t_http)}   {t_http / t_floor_http:5.2f}x the HTTP floor"
          f"   (Range GETs from the storage door + PUT)")
    print("     breakdown: " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in breakdown.items()))
    frames = res7["bytes_fetched"] / FRAME_BYTES
    print(f"remote 10-frame stack, frame 7: fetched {res7['bytes_fetched']:,} of {res7['file_bytes']:,} bytes"
          f" in {res7['requests']} requests = {res7['bytes_fetched'] / res7['file_bytes']:.1%} of the file,"
          f" {frames:.2f} frames' worth   (target <= 2)  {'MET' if frames <= 2 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
