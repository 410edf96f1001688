"""One cell's payload: what the page shows for it (source data, Div HTML, model properties).

The served app applies it in Python (`view.Page.show`), the static export in the browser
(`view.CLICK_JS`), so both show the same numbers.
"""

from __future__ import annotations

import html

import numpy as np
from bokeh.models import LinearColorMapper
from bokeh.palettes import RdBu, Viridis256

from analysis.explore.data import CellDetail, label
from analysis.explore.style import MISSING, PHASE_COLOURS, PHASE_NAMES, axis_label, colours


def _fmt(v: float) -> str:
    return "–" if not np.isfinite(v) else f"{v:.6g}"


def _phase_span(name: str) -> str:
    colour = {v: PHASE_COLOURS[k] for k, v in PHASE_NAMES.items()}.get(name, MISSING)
    return (
        f'<span style="background:{colour};padding:0 4px;border-radius:3px">'
        f"{html.escape(name)}</span>"
    )


MAX_LISTED = 8  # features whose values the seed's text lists; more: see the bar charts


def _values(v: np.ndarray) -> str:
    if len(v) > MAX_LISTED:
        return f"({len(v)} values: hover the bars)"
    return " ".join(_fmt(x) for x in v)


def payload(det: CellDetail, n_seeds: int) -> dict:
    """What the page shows for one cell: source data, Div HTML, and model properties.

    Figures are never hidden or shown per cell (each such change lays out the whole page
    again, which took minutes with 10 seeds): an unusable seed's sources are emptied, and one
    geometry figure per seed holds both the arrows (m <= 2) and the WᵀW heatmap.
    """
    coords = ", ".join(f"{axis_label(d)} = {label(v)}" for d, v in det.coords.items())
    phases = " ".join(f"{i + 1}:{_phase_span(p)}" for i, p in enumerate(det.cell_phases))
    warn = ""
    if det.status != "finished":
        warn = (
            f'<div class="cell-warning" style="color:#D55E00;font-weight:bold">'
            f"This cell is {html.escape(det.status)}.</div>"
        )
    header = (
        f'<div class="cell-header"><h3 style="margin:4px 0">Cell: {html.escape(coords)}</h3>'
        f"{warn}<div>model {det.n} features → {det.m} hidden; status: "
        f'<span class="cell-status">{html.escape(det.status)}</span></div>'
        f"<div>aggregation <b>{det.rule}</b>: {html.escape(det.rule_text)}</div>"
        f"<div>cell phase per feature: {phases or '– (no usable seed)'}; cell loss "
        f'<span class="cell-loss">{_fmt(det.cell_loss)}</span>'
        f"{'; <b>seeds disagree</b>' if det.disagree else ''}</div></div>"
    )
    out: dict = {"sources": {}, "divs": {"header": header}, "props": {"details": {"visible": True}}}
    for k in range(n_seeds):
        s = det.seeds[k]
        ok = s.status == "finished"
        n = det.n
        feats = np.arange(1, n + 1)
        if not ok:
            ph = "–"
        elif n <= MAX_LISTED:
            ph = " ".join(f"{i + 1}:{_phase_span(p)}" for i, p in enumerate(s.phases))
        else:  # many features: counts here, each feature in the bar charts' hover
            ph = ", ".join(
                f"{s.phases.count(v)} {_phase_span(v)}"
                for v in PHASE_NAMES.values()
                if v in s.phases
            )
        exact = (
            f'exact loss <span class="seed-exact">{_fmt(s.exact_loss)}</span> (ranks the seeds)<br>'
            if np.isfinite(s.exact_loss)
            else ""
        )
        out["divs"][f"text{k}"] = (
            f'<div class="seed" data-seed="{s.seed}" style="width:250px">'
            f'<b>seed {s.seed}</b> <span class="seed-status">{s.status}</span><br>'
            f'loss <span class="seed-loss">{_fmt(s.loss)}</span> (stored)<br>{exact}'
            f"phases {ph}<br>"
            f'<span class="seed-role"><i>{html.escape(s.role)}</i></span><br>'
            f'b <span class="seed-b">{_values(s.b) if ok else "–"}</span><br>'
            f'‖W_i‖ <span class="seed-norms">{_values(s.norms) if ok else "–"}</span></div>'
        )
        arrows = det.m <= 2
        out["props"][f"geom_y{k}"] = {"flipped": not arrows}
        out["props"][f"geom_title{k}"] = {"text": "columns of W" if arrows else "WᵀW"}
        out["props"][f"gram_bar{k}"] = {"visible": ok and not arrows}
        W = np.nan_to_num(s.W) if ok else np.zeros((det.m, n))
        W2 = np.vstack([W, np.zeros_like(W)])[:2] if arrows else W[:2]
        r = np.hypot(W2[0], W2[1])
        scale = np.where(r > 1e-9, 1 + 0.15 / np.maximum(r, 1e-9), 1)
        out["sources"][f"arrows{k}"] = (
            {
                "x0": [0.0] * n,
                "y0": [0.0] * n,
                "x1": _r(W2[0]),
                "y1": _r(W2[1]),
                "lx": _r(W2[0] * scale),
                "ly": _r(W2[1] * scale),
                "label": [str(i) for i in feats],
            }
            if ok and arrows
            else empty_arrows()
        )
        t_ = np.linspace(0, 2 * np.pi, 60)
        out["sources"][f"circle{k}"] = (
            {"x": _r(np.cos(t_)), "y": _r(np.sin(t_))} if ok and arrows else {"x": [], "y": []}
        )
        G = W.T @ W  # (n, n)
        vmax = float(max(np.abs(G).max(initial=0), 1e-6))
        gi, gj = np.meshgrid(feats, feats, indexing="ij")
        # rects coloured here rather than an image glyph: an image's 2-D array does not
        # survive the export's JSON, plain columns do
        out["sources"][f"gram{k}"] = (
            {
                "i": gi.ravel().tolist(),
                "j": gj.ravel().tolist(),
                "v": _r(G.ravel()),
                "colour": colours(
                    G.ravel(), LinearColorMapper(palette=RdBu[11], low=-vmax, high=vmax)
                ),
            }
            if ok and not arrows
            else empty_gram()
        )
        out["props"][f"gram_map{k}"] = {"low": -vmax, "high": vmax}
        some = feats if ok else feats[:0]  # no bars for an unusable seed
        out["sources"][f"bias{k}"] = {
            "feature": some.tolist(),
            "b": _r(np.nan_to_num(s.b)[: len(some)]),
        }
        sup = np.nan_to_num(s.superposition)[: len(some)]
        out["sources"][f"norm{k}"] = {
            "feature": some.tolist(),
            "norm": _r(np.nan_to_num(s.norms)[: len(some)]),
            # the notebook's bar colour: sqrt(superposition) clipped to [0, 1] on viridis
            "colour": colours(
                np.clip(np.sqrt(np.clip(sup, 0, None)), 0, 1),
                LinearColorMapper(palette=Viridis256, low=0, high=1),
            ),
            "sup": _r(sup),
        }
        finite = np.isfinite(s.curve) & (s.curve > 0)
        out["sources"][f"curve{k}"] = {
            "step": s.curve_step[finite].astype(float).tolist(),
            "loss": _r(s.curve[finite]),
        }
    return out


def _r(v: np.ndarray) -> list[float]:
    """Floats to 7 significant digits (float32's precision): a smaller export, same numbers."""
    return [float(f"{x:.7g}") for x in np.asarray(v, float).ravel()]


def empty_gram() -> dict:
    return {c: [] for c in ("i", "j", "v", "colour")}


def empty_arrows() -> dict:
    return {c: [] for c in ("x0", "y0", "x1", "y1", "lx", "ly", "label")}
