"""Jupyter helper: a function call as a button with parameter widgets, PNG results inline.

    from panfaas.client import Functions, Storage
    from panfaas.notebook import function_button

    fn, st = Functions.from_endpoints(), Storage.from_endpoints()

    def urls(values):  # a path in, the pre-authorised URLs the function wants out
        path = values.pop("path")
        return {**values, "read": st.url_for(path), "write": st.url_for(path + ".png", "UPLOAD")}

    function_button(fn, "panfaas/hdf5-preview",
                    {"path": "/data/run1/f.cxi", "binning": (1, 8), "int_boost": 1.0,
                     "scale": ["colour", "mono", "invmono"], "log": False},
                    prepare=urls, storage=st)

Parameters are abbreviated as ipywidgets.interact does: a bool is a checkbox, an int or
float a number box, a str a text box, a list of choices a dropdown, (min, max[, step]) a
slider (starting in the middle), and any ipywidgets widget is used as it is. A click calls
the function (blocking) with the widgets' values, passed through `prepare` if given, and
shows every PNG the result holds - base64 (plain or a data: URL), or an http(s) URL of a
.png, fetched through `storage` when it is on that door - followed by the result as JSON.
Works the same against the all-in-one and a site's OpenWhisk (panfaas.client).
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import requests

from .client import ClientError, Functions, Storage

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PNG_B64 = "iVBORw0KGgo"  # base64 of the PNG magic
DATA_URL = "data:image/png;base64,"


def widget_for(name: str, spec: Any):
    """An ipywidgets widget for one parameter, abbreviated as ipywidgets.interact does."""
    import ipywidgets as w
    if isinstance(spec, w.Widget):
        if hasattr(spec, "description") and not spec.description:
            spec.description = name
        return spec
    style = {"description_width": "initial"}
    if isinstance(spec, bool):
        return w.Checkbox(value=spec, description=name, indent=False)
    if isinstance(spec, int):
        return w.IntText(value=spec, description=name, style=style)
    if isinstance(spec, float):
        return w.FloatText(value=spec, description=name, style=style)
    if isinstance(spec, str) or spec is None:
        return w.Text(value=spec or "", description=name, style=style)
    if isinstance(spec, tuple) and 2 <= len(spec) <= 3 and all(isinstance(x, int | float) for x in spec):
        lo, hi = spec[0], spec[1]
        if all(isinstance(x, int) for x in spec):
            return w.IntSlider(min=lo, max=hi, step=spec[2] if len(spec) == 3 else 1, value=(lo + hi) // 2,
                               description=name, style=style)
        step = spec[2] if len(spec) == 3 else (hi - lo) / 100
        return w.FloatSlider(min=lo, max=hi, step=step, value=(lo + hi) / 2, description=name, style=style)
    if isinstance(spec, list | tuple) and spec:
        return w.Dropdown(options=list(spec), value=spec[0], description=name, style=style)
    raise TypeError(f"parameter {name}: no widget for {spec!r} (give a bool, int, float, str, list of choices, "
                    "(min, max[, step]) or an ipywidgets widget)")


def _strings(value: Any, where: str = "result"):
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{where}[{i}]")


def find_pngs(result: Any, storage: Storage | None = None, timeout: float = 30.0) -> list[tuple[str, bytes]]:
    """(where, PNG bytes) for every PNG in a result: base64, data: URLs, and URLs of .png files."""
    found = []
    for where, s in _strings(result):
        data = None
        if s.startswith(DATA_URL) or s.startswith(PNG_B64):
            try:
                data = base64.b64decode(s.removeprefix(DATA_URL), validate=True)
            except (binascii.Error, ValueError):
                data = None
        elif s.startswith(("http://", "https://")) and urllib.parse.urlsplit(s).path.lower().endswith(".png"):
            path = storage.path_of(s) if storage is not None else None
            try:
                data = storage.download(path) if path else requests.get(s, timeout=timeout).content
            except (ClientError, requests.RequestException):
                data = None
        if data and data.startswith(PNG_MAGIC):
            found.append((where, data))
    return found


class FunctionButton:
    """The widgets of one function call; `widget` is what a notebook displays (or display the
    object itself). `run()` is what a click does, for scripts and tests."""

    def __init__(self, functions: Functions, name: str, params: dict | None = None, *,
                 prepare: Callable[[dict], dict] | None = None, storage: Storage | None = None,
                 title: str | None = None):
        import ipywidgets as w
        self.functions, self.name, self.prepare, self.storage = functions, name, prepare, storage
        self.specs = dict(params or {})
        self.inputs = {k: widget_for(k, v) for k, v in self.specs.items()}
        self.button = w.Button(description=title or f"Run {name}", button_style="primary", icon="play",
                               layout=w.Layout(width="auto"))
        self.status = w.HTML()
        self.output = w.VBox()
        self.widget = w.VBox([*self.inputs.values(), w.HBox([self.button, self.status]), self.output])
        self.button.on_click(lambda _b: self.run())
        self.result: Any = None
        self.error: ClientError | None = None
        self.pngs: list[tuple[str, bytes]] = []

    def values(self) -> dict:
        """The widgets' values; an empty text box whose default was None is left out."""
        out = {}
        for k, wid in self.inputs.items():
            v = wid.value
            if v == "" and self.specs.get(k) is None:
                continue
            out[k] = v
        return out

    def arguments(self) -> dict:
        values = self.values()
        return self.prepare(dict(values)) if self.prepare else values

    def run(self) -> Any:
        import ipywidgets as w
        self.button.disabled = True
        self.status.value = "running&hellip;"
        self.error, self.result, self.pngs = None, None, []
        t0 = time.monotonic()
        try:
            self.result = self.functions.invoke(self.name, self.arguments())
        except ClientError as e:
            self.error = e
            self.status.value = f'<span style="color:#b00">failed: {html.escape(str(e))}</span>'
            self.output.children = [w.HTML(_pre(e.body))]
            return None
        finally:
            self.button.disabled = False
        self.pngs = find_pngs(self.result, self.storage)
        self.status.value = f"done in {time.monotonic() - t0:.2f} s"
        self.output.children = [*(w.Image(value=png, format="png") for _, png in self.pngs),
                                w.HTML(_pre(self.result))]
        return self.result

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def _pre(value: Any) -> str:
    text = json.dumps(value, indent=2, default=str) if not isinstance(value, str) else value
    return f"<pre style='max-height:20em;overflow:auto'>{html.escape(text[:100000])}</pre>"


def function_button(functions: Functions, name: str, params: dict | None = None, **kw) -> FunctionButton:
    """A button that calls function `name` with parameter widgets; see the module docstring."""
    return FunctionButton(functions, name, params, **kw)
