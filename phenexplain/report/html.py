"""HTML pages from Jinja2 templates (``report/templates``): the report's sections of text, tables,
images (embedded as data URIs) and interactive Plotly figures.

Plotly figures are embedded as JSON and drawn by plotly.js (from the installed plotly package),
inlined once per page (about 4.8 MB): a page is one file that needs no network and draws its
figures wherever it is opened, also in MLflow's artifact viewer, which shows an HTML artifact from
a blob URL against which a script beside the page cannot be found.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup
from PIL import Image

PLOTLY_CONFIG = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"scale": 2}}

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("phenexplain.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render_template(name: str, **context: Any) -> str:
    """The template ``report/templates/<name>`` rendered with `context` (autoescaped)."""
    return _ENV.get_template(name).render(**context)


def script_json(value: Any) -> Markup:
    """`value` as JSON that is safe inside a ``<script type="application/json">`` element (no
    ``<`` left that could close it)."""
    text = value if isinstance(value, str) else json.dumps(value, allow_nan=False)
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def data_uri(data: bytes, mime: str) -> str:
    """`data` as a data: URI."""
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def png_uri(rgb: np.ndarray) -> str:
    """uint8 RGB [H, W, 3] (or grey [H, W]) as a PNG data URI."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return data_uri(buffer.getvalue(), "image/png")


def file_uri(path: str | Path) -> str:
    """A PNG or GIF file as a data URI."""
    path = Path(path)
    mime = {".gif": "image/gif", ".png": "image/png"}[path.suffix.lower()]
    return data_uri(path.read_bytes(), mime)


def plotly_js() -> Markup:
    """plotly.js of the installed plotly package, to inline in a ``<script>`` element (it holds
    no ``</script``: checked)."""
    from plotly.offline import get_plotlyjs

    code = get_plotlyjs()
    assert "</script" not in code.lower(), "plotly.js would close its <script> element"
    return Markup(code)


def _all_numbers(column: pd.Series) -> bool:
    """Whether every non-empty value of an object column is a number (a table blanked in part)."""
    values = [v for v in column if not (isinstance(v, str) and v == "")]
    return bool(values) and all(isinstance(v, int | float | np.number) for v in values)


def _cell(value: Any, digits: int) -> str:
    if isinstance(value, float):
        return "" if np.isnan(value) else f"{value:.{digits}g}"
    return str(value)


@dataclass
class Page:
    """Accumulates sections (blocks the template ``report.html.j2`` draws); `render` gives the
    whole document and `write` puts it in a folder with what it loads."""

    title: str
    blocks: list[dict[str, Any]] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append({"kind": "heading", "text": text, "level": level})

    def text(self, text: str, css: str = "") -> None:
        self.blocks.append({"kind": "text", "text": text, "css": css})

    def table(self, df: pd.DataFrame, digits: int = 4, max_rows: int = 60) -> None:
        if df.empty:
            self.text("(nothing to show)", "note")
            return
        shown = df.head(max_rows)
        rows = [[_cell(v, digits) for v in row] for row in shown.itertuples(index=False)]
        numeric = [pd.api.types.is_numeric_dtype(shown[c]) or _all_numbers(shown[c])
                   for c in shown.columns]  # fmt: skip  # right-aligned; text left
        self.blocks.append({"kind": "table", "columns": [str(c) for c in shown.columns],
                            "rows": rows, "numeric": numeric})  # fmt: skip
        if len(df) > max_rows:
            self.text(
                f"first {max_rows} of {len(df)} rows; all in the CSV next to this file", "note"
            )

    def image(self, uri: str, caption: str = "", width: int | None = None) -> None:
        self.blocks.append({"kind": "image", "uri": uri, "caption": caption, "width": width})

    def gallery(
        self, rows: list[tuple[str, list[str]]], caption: str, *, zoom: int, size: int
    ) -> None:
        """A grid of images: per row a label and image data URIs, each `size` px shown `zoom`
        times larger (pixels kept sharp)."""
        self.blocks.append({"kind": "gallery", "rows": rows, "caption": caption,
                            "px": size * zoom})  # fmt: skip

    def plot(self, figure: Any, caption: str = "") -> None:
        """An interactive Plotly figure (a ``plotly.graph_objects.Figure``), drawn offline."""
        figure_json = script_json(figure.to_json())
        self.blocks.append({"kind": "plot", "id": f"plot-{len(self.blocks)}",
                            "figure": figure_json, "caption": caption})  # fmt: skip

    def link(self, href: str, text: str, after: str = "") -> None:
        """A paragraph holding a link to `href` (relative: a file beside the page), then `after`."""
        self.blocks.append({"kind": "link", "href": href, "text": text, "after": after})

    @property
    def has_plots(self) -> bool:
        return any(block["kind"] == "plot" for block in self.blocks)

    def render(self) -> str:
        return render_template(
            "report.html.j2", title=self.title, blocks=self.blocks,
            plotly_js=plotly_js() if self.has_plots else "",
            config=script_json(PLOTLY_CONFIG), has_plots=self.has_plots,
        )  # fmt: skip

    def write(self, path: str | Path) -> Path:
        """The page as the one file `path`."""
        path = Path(path)
        path.write_text(self.render(), encoding="utf-8")
        return path
