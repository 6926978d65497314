"""The report's interactive figures (Plotly, drawn offline by `report.html`): per assay the
distributions on real and generated crops, and real vs synthetic effect sizes, where hovering a
point names its feature and gives its numbers. Every axis states its unit (`measure.names`):
lengths and areas are in pixels of the crop set's native size, intensities uint8 / 255.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from phenexplain.measure.names import describe

REAL, SYNTHETIC = "#e07b00", "#7b3fb5"  # orange as the paper's real boxes, violet generated
WIDTH, HEIGHT = 520, 400  # px, as the page's .plot box
D_AXIS = "(Cohen's d, pooled SDs)"  # treated - control, as the captions say
FLAG_COLOURS = {"both, same sign": "#2a7d2a", "opposite sign": "#c00000",
                "synthetic only": "#e07b00", "real only": "#1f77b4", "neither": "#999999",
                "not tested": "#cccccc"}  # fmt: skip
VERDICT_COLOURS = {
    "agrees": "#2a7d2a",
    "inflated": "#e07b00",
    "deflated": "#1f77b4",
    "wrong sign": "#c00000",
}  # fmt: skip; others (not measurable ...): grey


def unit_text(unit: str, native_size: int) -> str:
    """A unit of `measure.names` in words for an axis: which pixels, which logarithm."""
    pixels = f"of the {native_size} px crops"
    known = {
        "px^2": f"px² {pixels}",
        "px": f"px {pixels}",
        "ln(ratio)": "ln(ratio), natural log",
        "count": "count",
        "fraction": "fraction (0 to 1)",
        "uint8/255": "intensity (uint8 / 255, 0 to 1)",
        "": "no unit",
    }
    return known.get(unit, unit.replace("^2", "²"))


def axis_title(name: str, native_size: int, per: str = "") -> str:
    """The y-axis title of a measured quantity: its unit in words, and what one value is of."""
    text = unit_text(describe(name).unit, native_size)
    return f"{text}, per {per}" if per else text


def wrap(text: str, width: int = 52) -> str:
    """`text` broken into lines of at most `width` characters for a Plotly title."""
    return "<br>".join(textwrap.wrap(text, width)) or text


def _layout(fig: go.Figure, title: str, x: str, y: str) -> go.Figure:
    lines = title.count("<br>") + 1
    fig.update_layout(
        template="simple_white", width=WIDTH, height=HEIGHT,
        title={"text": title, "x": 0.02, "xanchor": "left", "font": {"size": 14}},
        margin={"l": 80, "r": 20, "t": 30 + 20 * lines, "b": 60},
        legend={"orientation": "h", "y": -0.18, "x": 0},
        font={"family": "system-ui, sans-serif", "size": 12},
    )  # fmt: skip
    fig.update_xaxes(title_text=x, automargin=True)
    fig.update_yaxes(title_text=wrap(y, 44), automargin=True)
    return fig


def real_vs_synthetic(
    real: pd.DataFrame,
    synthetic: pd.DataFrame,
    assay: str,
    conditions: list[str],
    native_size: int,
    per: str = "cell",
) -> go.Figure:
    """Per condition a box of the column `assay` on real crops (orange, as the paper) and one on
    generated crops (violet), grouped; the y axis in the assay's unit."""
    fig = go.Figure()
    for source, table, colour in (("real crops", real, REAL), ("generated", synthetic, SYNTHETIC)):
        rows = table[table["condition"].isin(conditions)]
        values = rows[assay].to_numpy(float)
        ok = np.isfinite(values)
        fig.add_trace(go.Box(
            x=rows["condition"].to_numpy()[ok], y=values[ok], name=source, marker_color=colour,
            boxpoints="outliers", line={"width": 1.2}, marker={"size": 3},
        ))  # fmt: skip
    fig.update_layout(boxmode="group")
    fig.update_xaxes(categoryorder="array", categoryarray=list(conditions))
    y = axis_title(assay, native_size, per)
    return _layout(fig, wrap(describe(assay).plain), "condition", y)


def _ci(low: pd.Series, high: pd.Series) -> list[str]:
    return [
        f"[{a:+.2f}, {b:+.2f}]" if np.isfinite(a) and np.isfinite(b) else "n/a"
        for a, b in zip(low.to_numpy(float), high.to_numpy(float), strict=True)
    ]


def _q(values: pd.Series) -> list[str]:
    return [f"{q:.2g}" if np.isfinite(q) else "n/a" for q in values.to_numpy(float)]


def _diagonal(fig: go.Figure, x: np.ndarray, y: np.ndarray) -> None:
    ok = np.isfinite(x) & np.isfinite(y)
    lim = float(np.max(np.abs(np.concatenate([x[ok], y[ok]])))) * 1.1 if ok.any() else 1.0
    lim = lim or 1.0
    fig.add_trace(go.Scatter(x=[-lim, lim], y=[-lim, lim], mode="lines", hoverinfo="skip",
                             line={"color": "grey", "dash": "dash", "width": 1},
                             name="d synthetic = d real"))  # fmt: skip


def verdict_scatter(table: pd.DataFrame) -> go.Figure:
    """The verdict table's effect sizes: d real (x, bootstrap CI over wells) against d synthetic
    (y, CI over generated images), one point per (assay, condition), coloured by verdict."""
    fig = go.Figure()
    finite = np.isfinite(table["d_real"].to_numpy(float)) & np.isfinite(
        table["d_synthetic"].to_numpy(float)
    )
    table = table[finite]  # a point needs both numbers
    _diagonal(fig, table["d_real"].to_numpy(float), table["d_synthetic"].to_numpy(float))
    for verdict, rows in table.groupby("verdict", sort=False):
        x, y = rows["d_real"].to_numpy(float), rows["d_synthetic"].to_numpy(float)
        custom = np.stack([rows["feature_name"], rows["condition"], _ci(rows["d_real_ci_low"],
                           rows["d_real_ci_high"]), _ci(rows["d_synthetic_ci_low"],
                           rows["d_synthetic_ci_high"]), rows["verdict"]], axis=1)  # fmt: skip
        fig.add_trace(go.Scatter(
            x=x, y=y, mode="markers", name=str(verdict), customdata=custom,
            marker={"size": 10, "color": VERDICT_COLOURS.get(str(verdict), "#999999")},
            error_x={"type": "data", "symmetric": False,
                     "array": rows["d_real_ci_high"].to_numpy(float) - x,
                     "arrayminus": x - rows["d_real_ci_low"].to_numpy(float), "thickness": 1},
            error_y={"type": "data", "symmetric": False,
                     "array": rows["d_synthetic_ci_high"].to_numpy(float) - y,
                     "arrayminus": y - rows["d_synthetic_ci_low"].to_numpy(float),
                     "thickness": 1},
            hovertemplate="<b>%{customdata[0]}</b><br>%{customdata[1]} vs control<br>"
            "d real %{x:+.2f} %{customdata[2]}<br>d synthetic %{y:+.2f} %{customdata[3]}<br>"
            "verdict: %{customdata[4]}<extra></extra>",
        ))  # fmt: skip
    return _layout(fig, "Effect sizes: real vs generated crops", "d real " + D_AXIS,
                   "d synthetic " + D_AXIS)  # fmt: skip


def shift_scatter(shifts: pd.DataFrame) -> go.Figure:
    """Cohen's d of each panel feature and condition on real (x) and generated (y) crops,
    coloured by its `measure.stats.flag_shifts` flag; hover gives the names, d and q."""
    fig = go.Figure()
    _diagonal(fig, shifts["shift_real"].to_numpy(float), shifts["shift_synthetic"].to_numpy(float))
    for flag, rows in shifts.groupby("flag", sort=False):
        custom = np.stack([rows["feature_name"], rows["cellprofiler_name"], rows["condition"],
                           _q(rows["q_real"]), _q(rows["q_synthetic"]), rows["flag"]],
                          axis=1)  # fmt: skip
        fig.add_trace(go.Scatter(
            x=rows["shift_real"], y=rows["shift_synthetic"], mode="markers", name=str(flag),
            customdata=custom, marker={"size": 6, "opacity": 0.75,
                                       "color": FLAG_COLOURS.get(str(flag), "#999999")},
            hovertemplate="<b>%{customdata[0]}</b><br>%{customdata[1]}<br>%{customdata[2]} vs "
            "control<br>d real %{x:+.2f} (q %{customdata[3]})<br>d synthetic %{y:+.2f} "
            "(q %{customdata[4]})<br>%{customdata[5]}<extra></extra>",
        ))  # fmt: skip
    return _layout(fig, "Feature shifts: real vs generated crops", "d real " + D_AXIS,
                   "d synthetic " + D_AXIS)  # fmt: skip
