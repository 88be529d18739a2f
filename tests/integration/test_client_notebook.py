"""The Jupyter helper without a browser: build the widgets, set them, click, and check the call
that reached the real runtime and what the output area shows."""

from __future__ import annotations

import base64
import struct
import time
import zlib

import ipywidgets as w
import pytest

from panfaas.client import Functions, Storage
from panfaas.notebook import FunctionButton, find_pngs, function_button, widget_for
from services import start_runtime, unique_topic

# A standalone action (standard library only) that draws a width x 2 PNG and echoes its arguments.
PNG_ACTION = '''import base64, struct, zlib
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
def main(args):
    w = int(args["width"])
    raw = b"".join(b"\\x00" + bytes([200 if args.get("log") else 50] * w) for _ in range(2))
    png = (b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, 2, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return {"args": args, "preview": {"png_base64": base64.b64encode(png).decode()}}
'''
URL_ACTION = "def main(args):\n    return {'png': args['url'], 'note': 'written to storage'}\n"
FAILS = "def main(args):\n    raise ValueError('frame %s out of range' % args['frame'])\n"


def png(width: int) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + bytes([9] * width) for _ in range(2))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, 2, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def fn(tmp_path_factory):
    rt = start_runtime(tmp_path_factory.mktemp("rt-nb"))
    f = Functions(rt.api_host, rt.auth)
    for name, code in (("draw", PNG_ACTION), ("from-storage", URL_ACTION), ("fails", FAILS)):
        f.put("actions", name, {"exec": {"kind": "python:3.11", "code": code}})
    yield f
    rt.proc.stop()


def test_widgets_are_chosen_as_interact_abbreviates():
    assert isinstance(widget_for("log", False), w.Checkbox)
    assert isinstance(widget_for("n", 3), w.IntText) and isinstance(widget_for("x", 0.5), w.FloatText)
    assert isinstance(widget_for("s", "text"), w.Text) and isinstance(widget_for("s", None), w.Text)
    slider = widget_for("binning", (1, 9))
    assert isinstance(slider, w.IntSlider) and (slider.min, slider.max, slider.value) == (1, 9, 5)
    assert isinstance(widget_for("gain", (0.0, 2.0)), w.FloatSlider)
    drop = widget_for("scale", ["colour", "mono"])
    assert isinstance(drop, w.Dropdown) and drop.value == "colour"
    own = w.IntSlider(min=0, max=3)
    assert widget_for("frame", own) is own and own.description == "frame"
    with pytest.raises(TypeError, match="no widget"):
        widget_for("bad", {"a": 1})


def test_click_calls_the_function_and_shows_the_png_inline(fn):
    ui = function_button(fn, "draw", {"width": (2, 10), "log": False, "scale": ["colour", "mono"], "label": None},
                         prepare=lambda v: {**v, "prepared": True})
    assert isinstance(ui.widget, w.VBox) and ui.button.description == "Run draw"
    ui.inputs["width"].value = 7
    ui.inputs["log"].value = True
    ui.inputs["scale"].value = "mono"
    since = int(time.time() * 1000)
    ui.button.click()                                   # what the browser's click does
    assert ui.error is None
    assert ui.result["args"] == {"width": 7, "log": True, "scale": "mono", "prepared": True}  # 'label' left out
    recs = [a for a in fn.activations(name="draw", limit=5) if a["start"] >= since]
    assert recs and recs[0]["response"]["result"]["args"]["width"] == 7   # the call reached the runtime
    images = [c for c in ui.output.children if isinstance(c, w.Image)]
    assert len(images) == 1 and images[0].format == "png"
    shown = bytes(images[0].value)
    assert shown.startswith(b"\x89PNG") and struct.unpack(">I", shown[16:20])[0] == 7  # the 7 pixels asked for
    html = [c for c in ui.output.children if isinstance(c, w.HTML)][0].value
    assert "&quot;prepared&quot;: true" in html
    assert ui.status.value.startswith("done in") and ui.button.disabled is False
    assert "application/vnd.jupyter.widget-view+json" in ui._repr_mimebundle_()


def test_a_png_written_to_storage_is_fetched_through_the_door(fn, storage):
    st = Storage(storage.url, *storage.auth())
    path = f"/data/{unique_topic('nb')}/f.cxi.png"
    st.mkdir(path.rsplit("/", 1)[0])
    st.upload(path, png(5))
    ui = FunctionButton(fn, "from-storage", {"url": storage.url + path}, storage=st)
    ui.run()
    images = [c for c in ui.output.children if isinstance(c, w.Image)]
    assert len(images) == 1 and bytes(images[0].value) == png(5)
    assert ui.pngs[0][0] == "result.png"


def test_a_failed_call_shows_its_error(fn):
    ui = FunctionButton(fn, "fails", {"frame": 12})
    ui.button.click()
    assert ui.result is None and ui.error.status == 502
    assert "frame 12 out of range" in ui.status.value and "failed" in ui.status.value
    assert "frame 12 out of range" in ui.output.children[0].value


def test_find_pngs_in_every_shape():
    b64 = base64.b64encode(png(3)).decode()
    found = find_pngs({"a": [b64, {"b": "data:image/png;base64," + b64}], "c": "iVBORw0KGgo-not-base64", "d": 1})
    assert [where for where, _ in found] == ["result.a[0]", "result.a[1].b"]
    assert all(data == png(3) for _, data in found)
