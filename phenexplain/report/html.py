"""A self-contained HTML page: sections of text, tables and images embedded as data URIs."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-top:.6em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
img{max-width:100%;image-rendering:pixelated}.note{color:#555;font-size:.9em}
.warning{color:#a00;font-weight:bold}
figure{display:inline-block;margin:.5em;vertical-align:top}figcaption{font-size:.85em}
"""


def data_uri(data: bytes, mime: str) -> str:
    """`data` as a data: URI."""
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def png_uri(rgb: np.ndarray) -> str:
    """uint8 RGB [H, W, 3] as a PNG data URI."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return data_uri(buffer.getvalue(), "image/png")


def file_uri(path: str | Path) -> str:
    """A PNG or GIF file as a data URI."""
    path = Path(path)
    mime = {".gif": "image/gif", ".png": "image/png"}[path.suffix.lower()]
    return data_uri(path.read_bytes(), mime)


class Page:
    """Accumulates sections; `render` gives the whole document."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def text(self, text: str, css: str = "") -> None:
        cls = f' class="{css}"' if css else ""
        self.parts.append(f"<p{cls}>{html.escape(text)}</p>")

    def table(self, df: pd.DataFrame, digits: int = 4, max_rows: int = 60) -> None:
        if df.empty:
            self.text("(nothing to show)", "note")
            return
        shown = df.head(max_rows)

        def cell(v) -> str:
            if isinstance(v, float):
                return "" if np.isnan(v) else f"{v:.{digits}g}"
            return html.escape(str(v))

        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
        rows = "".join(
            "<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>"
            for row in shown.itertuples(index=False)
        )
        self.parts.append(f"<table><tr>{head}</tr>{rows}</table>")
        if len(df) > max_rows:
            self.text(
                f"first {max_rows} of {len(df)} rows; all in the CSV next to this file", "note"
            )

    def image(self, uri: str, caption: str = "", width: int | None = None) -> None:
        style = f' style="width:{width}px"' if width else ""
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self.parts.append(
            f'<figure><img src="{uri}"{style} alt="{html.escape(caption)}">{cap}</figure>'
        )

    def raw(self, markup: str) -> None:
        self.parts.append(markup)

    def render(self) -> str:
        body = "\n".join(self.parts)
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}"
            f"</title><style>{STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>"
            f"{body}</body></html>"
        )
