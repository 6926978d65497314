"""The interactive explorer: one static HTML file (no server needed) to choose a source and a
target condition and a seed, scrub along the traversal with a slider, and compare with real crops
of both conditions. Frames are pre-rendered (method 3, one intensity mapping for the whole page)
and embedded as PNG data URIs; `phenexplain serve` can also serve the folder over HTTP.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import torch

from phenexplain.display import IntensityMapping, composite
from phenexplain.explain.traversal import synthesize, traverse
from phenexplain.nets import Generator
from phenexplain.nets.ops import to_uint8
from phenexplain.nets.sampling import seed_latent
from phenexplain.report.html import STYLE, png_uri

SCRIPT = """
const D = JSON.parse(document.getElementById('data').textContent);
const $ = (id) => document.getElementById(id);
function key() { return $('source').value + '\\u2192' + $('target').value; }
function fill(select, names) {
  select.innerHTML = names.map(n => `<option value="${n}">${n}</option>`).join('');
}
function showReal() {
  for (const side of ['source', 'target']) {
    const name = $(side).value;
    $(side + '-real').innerHTML = (D.real[name] || []).map(
      u => `<img class="crop" src="${u}" alt="real ${name}">`).join('');
    $(side + '-name').textContent = name;
  }
}
function show() {
  const frames = D.frames[key()];
  if (!frames) { $('frame').removeAttribute('src'); $('t').textContent = 'no traversal'; return; }
  const i = Number($('slider').value);
  $('frame').src = frames[Number($('seed').value)][i];
  $('frame').dataset.index = String(i);
  $('t').textContent = 't = ' + (i / D.steps).toFixed(2);
}
function targets() {
  const s = $('source').value;
  fill($('target'), D.conditions.filter(n => D.frames[s + '\\u2192' + n]));
}
window.addEventListener('DOMContentLoaded', () => {
  fill($('source'), D.conditions.filter(s => D.conditions.some(t => D.frames[s + '\\u2192' + t])));
  $('seed').innerHTML = D.seeds.map((s, i) => `<option value="${i}">seed ${s}</option>`).join('');
  $('slider').max = String(D.steps);
  targets(); showReal(); show();
  $('source').addEventListener('change', () => { targets(); showReal(); show(); });
  $('target').addEventListener('change', () => { showReal(); show(); });
  $('seed').addEventListener('change', show);
  $('slider').addEventListener('input', show);
});
"""

PAGE_STYLE = (
    STYLE
    + """
.crop{width:96px;margin:2px}#frame{width:288px;height:288px;border:1px solid #999}
.controls label{margin-right:1em}.side{display:inline-block;vertical-align:top;margin:1em}
"""
)


def explorer_pairs(conditions: list[str], control: str) -> list[tuple[str, str]]:
    """Every ordered pair for up to 4 conditions; otherwise control <-> each other condition."""
    if len(conditions) <= 4:
        return [(a, b) for a in conditions for b in conditions if a != b]
    others = [c for c in conditions if c != control]
    return [(control, c) for c in others] + [(c, control) for c in others]


def explorer_data(
    G: Generator,
    conditions: list[str],
    control: str,
    colours: list[str],
    seeds: list[int],
    steps: int,
    real: dict[str, np.ndarray],
) -> dict:
    """Frames (data URIs) per "source→target" pair and seed, and real crops per condition."""
    device = next(G.parameters()).device
    z = torch.cat([seed_latent(s, G.z_dim) for s in seeds]).to(device)
    pairs = explorer_pairs(conditions, control)
    images = {}
    for source, target in pairs:
        w = traverse(
            G, z, conditions.index(source), conditions.index(target), method=3, steps=steps
        )
        images[(source, target)] = to_uint8(synthesize(G, w)).numpy()  # [T, S, C, H, W]
    everything = np.concatenate([v.reshape(-1, *v.shape[2:]) for v in images.values()])
    mapping = IntensityMapping.fit(everything)  # one mapping for the whole page
    frames = {
        f"{s}\u2192{t}": [
            [png_uri(composite(stack[i, k], colours, mapping)) for i in range(steps + 1)]
            for k in range(len(seeds))
        ]
        for (s, t), stack in images.items()
    }
    crops = {name: [png_uri(composite(c, colours, mapping)) for c in x] for name, x in real.items()}
    return {
        "conditions": conditions,
        "seeds": seeds,
        "steps": steps,
        "frames": frames,
        "real": crops,
    }


def write_explorer(data: dict, out: str | Path, title: str) -> Path:
    """The explorer page with `data` embedded as JSON."""
    payload = json.dumps(data).replace("</", "<\\/")
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{PAGE_STYLE}</style></head><body><h1>{html.escape(title)}</h1>
<p class="note">Generated cells: the same seed drawn under the source condition (t = 0) and moved
in W towards the target condition (t = 1, method 3). Real crops of both conditions below.</p>
<div class="controls"><label>source <select id="source"></select></label>
<label>target <select id="target"></select></label>
<label>seed <select id="seed"></select></label>
<label>traversal <input id="slider" type="range" min="0" value="0" step="1"></label>
<span id="t"></span></div>
<img id="frame" alt="generated frame">
<div><div class="side"><h3>real: <span id="source-name"></span></h3>
<div id="source-real"></div></div>
<div class="side"><h3>real: <span id="target-name"></span></h3>
<div id="target-real"></div></div></div>
<script type="application/json" id="data">{payload}</script>
<script>{SCRIPT}</script></body></html>"""
    out = Path(out)
    out.write_text(body, encoding="utf-8")
    return out
