"""The browser explorer (analysis/explore): per-cell numbers, one cell's models, bad input, and
a real headless Chromium clicking a cell of the served app and of the static export."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from analysis import aggregate
from analysis.explore import data as explore_data
from analysis.explore.__main__ import main
from analysis.explore.data import Explorer
from analysis.explore.payload import payload
from analysis.explore.view import build, choose_axes
from tests.conftest import ROOT, cells_written, make_config, run_cli

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A small trained 2→1 phase store: 3 × 3 cells × 2 seeds × 200 steps."""
    path = tmp_path_factory.mktemp("explore") / "phase"
    r = run_cli(
        [
            "-m",
            "sweep",
            "+grid=phase",
            "train.steps=200",
            "grid.seeds=2",
            "grid.axes.density=[log,0.03,1.0,3]",
            "grid.axes.relative_importance=[log,0.3,3.0,3]",
            "analysis.run=false",
            "progress=false",
            # pinned: with threads=0 the launcher gives jobs train.threads=<share of idle
            # cores>, which (main at a51fc04) changes their fingerprint and they write nothing
            "train.threads=1",
            "analysis.aggregate=drop_worst",  # the rule with the most to explain per seed
            f"store.path={path}",
        ],
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return path


def _exact_losses(cell: xr.Dataset) -> np.ndarray:
    """Each seed's exact expected loss (quadrature), the loss the analysis ranks seeds by."""
    from sweep.quadrature import expected_loss

    W = cell["W"].values[:, :1, :2].astype(float)  # (seed, hidden, feature)
    b = cell["b"].values[:, :2].astype(float)
    imp, dens = cell["importance"].values[:2], cell["feature_density"].values[:2]
    return np.array([float(expected_loss(W[k], b[k], imp, dens)) for k in range(len(W))])


def _settings(store: Path) -> aggregate.Settings:
    ds = xr.open_zarr(store)
    return aggregate.Settings.from_config(explore_data.config_of(ds))


def _copy(store: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(store, out, ignore=shutil.ignore_patterns(".jobs"))
    return out


def test_summary_slab_by_slab_equals_whole_store_analysis(store, monkeypatch):
    whole = aggregate.analyse_store(xr.open_zarr(store), _settings(store))
    monkeypatch.setattr(explore_data, "SLAB_BYTES", 1)  # one row of cells per slab
    ex = Explorer(store)
    assert len(ex._slabs) == 3
    t = ex.summary()
    phase = whole["phase"].transpose("relative_importance", "density", "feature").values
    np.testing.assert_array_equal(t["phase"].to_numpy(), phase[..., -1].ravel())
    np.testing.assert_allclose(t["loss"].to_numpy(), whole["loss"].values.ravel(), rtol=1e-6)
    np.testing.assert_array_equal(t["n_superposed"].to_numpy(), (phase == 2).sum(-1).ravel())
    assert (t["status"] == "finished").all()


def test_cell_detail_reads_the_cell_and_names_the_dropped_seed(store):
    ex = Explorer(store)
    ds = xr.open_zarr(store)
    det = ex.cell_detail((1, 2))
    cell = ds.isel(relative_importance=1, density=2)
    for k, s in enumerate(det.seeds):
        np.testing.assert_allclose(s.W, cell["W"].values[k, :1, :2])
        assert s.loss == pytest.approx(float(cell["loss"].values[k]))
    # seeds are ranked by their exact expected loss (2 -> 1 has one), computed here directly
    exact = _exact_losses(cell)
    np.testing.assert_allclose([s.exact_loss for s in det.seeds], exact, rtol=1e-9)
    worst = int(np.argmax(exact))
    assert det.seeds[worst].role.startswith("dropped: highest exact loss")
    assert det.seeds[1 - worst].role.startswith("kept")
    # the export's path (a slab read once, cells taken from memory) gives the same cell
    (again,) = ex.cell_details([(1, 2)])
    for a, b in zip(det.seeds, again.seeds, strict=True):
        np.testing.assert_array_equal(a.W, b.W)
        assert (a.loss, a.role, a.phases) == (b.loss, b.role, b.phases)
    whole = aggregate.analyse_store(ds, _settings(store))
    codes = whole["phase"].isel(relative_importance=1, density=2).values
    assert det.cell_phases == [explore_data.PHASES[int(c)] for c in codes]


def test_unfinished_and_diverged_cells_say_so_and_refresh_sees_new_cells(store, tmp_path):
    path = _copy(store, tmp_path)
    with cells_written(path, (0, 0, slice(None)), finished=False):
        pass  # a cell not trained yet
    with cells_written(path, (2, 2, slice(None))) as group:
        group["diverged"][2, 2, :] = True  # a cell whose every seed blew up
    ex = Explorer(path)
    t = ex.summary().set_index(["i_relative_importance", "i_density"])
    assert t.loc[(0, 0), "status"] == "unfinished" and t.loc[(0, 0), "phase"] == -1
    assert t.loc[(2, 2), "status"].startswith("diverged") and t.loc[(2, 2), "missing"]
    header = payload(ex.cell_detail((0, 0)), 2)["divs"]["header"]
    assert "This cell is unfinished" in header
    det = ex.cell_detail((2, 2))
    assert all(s.role.startswith("left out: diverged") for s in det.seeds)
    page = build(ex)
    assert page.src.data["status"][0] == "unfinished"
    assert page.src.data["fill"][0] == "#CCCCCC"  # missing: grey
    # a sweep finishes the cell: refresh recomputes only the slab that changed
    with cells_written(path, (0, 0, slice(None))):
        pass  # its values were kept on disk
    assert ex.refresh() == 1
    assert ex.summary().loc[0, "status"] == "finished"
    page.redraw(ex.summary())  # the served page's refresh button
    assert page.src.data["status"][0] == "finished"
    assert page.src.data["fill"][0] != "#CCCCCC"


@pytest.mark.parametrize("grid", sorted(p.stem for p in (ROOT / "conf" / "grid").glob("*.yaml")))
def test_every_grid_store_maps_and_shows_a_cell(grid, tmp_path):
    """Each grid's store (its template, with one cell filled by hand): the page builds, an
    unfinished cell says so, and a finished one shows W's columns as arrows (m <= 2) or WᵀW."""
    from sweep import layout
    from sweep.grid import GridPlan

    cfg = make_config([f"+grid={grid}"], store=tmp_path / grid)
    plan = GridPlan(cfg)
    path = tmp_path / grid
    layout.create(path, plan, cfg)
    ex = Explorer(path)
    assert (ex.summary()["status"] == "unfinished").all()
    build(ex)
    x, y = choose_axes(ex, None, None)
    assert x in ex.cell_dims and (y in ex.cell_dims or len(ex.cell_dims) == 1)
    last = tuple(n - 1 for n in ex.shape)
    header = payload(ex.cell_detail(last), len(ex.seeds))["divs"]["header"]
    assert "This cell is unfinished" in header
    # fill that cell as a job would: weights, loss, then its finished flags
    det = ex.cell_detail(last)
    m, n = det.m, det.n
    rng = np.random.default_rng(0)
    W = rng.normal(size=(len(ex.seeds), m, n)).astype(np.float32)
    with cells_written(path, (*last, slice(None))) as group:
        group["W"][(*last, slice(None), slice(0, m), slice(0, n))] = W
        group["loss"][last] = np.arange(1, len(ex.seeds) + 1, dtype=np.float32)
    assert ex.refresh() == 1
    p = payload(ex.cell_detail(last), len(ex.seeds))
    if m <= 2:
        x1 = np.array(p["sources"]["arrows0"]["x1"])
        np.testing.assert_allclose(x1, W[0, 0], rtol=1e-6)
        assert p["sources"]["gram0"]["v"] == []
    else:
        G = np.array(p["sources"]["gram0"]["v"]).reshape(n, n)
        np.testing.assert_allclose(G, W[0].T.astype(float) @ W[0], rtol=1e-5, atol=1e-5)
        assert p["sources"]["arrows0"]["x1"] == []
    assert "finished" in p["divs"]["text0"]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: "), err
    return err


def test_bad_input_one_line_exit_2(store, tmp_path, capsys):
    assert main([str(tmp_path / "nothing")]) == 2
    assert "no such store" in _error_line(capsys)
    f = tmp_path / "file"
    f.write_text("x")
    assert main([str(f)]) == 2
    assert "is a file" in _error_line(capsys)
    damaged = _copy(store, tmp_path)
    (damaged / ".zmetadata").write_text("{ not json")
    assert main([str(damaged)]) == 2
    assert "cannot be opened as a zarr store" in _error_line(capsys)
    assert main([str(store), "--x", "seed"]) == 2
    assert "--x=seed is not allowed" in _error_line(capsys)
    assert main([str(store), "--export", str(tmp_path / "out.html"), "--select", "density=7"]) == 2
    assert "--select density=7 is not allowed" in _error_line(capsys)
    assert not (tmp_path / "out.html").exists()


def test_port_in_use_one_line_exit_2(store, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main([str(store), "--port", str(port)]) == 2
    assert f"--port={port} is not allowed" in _error_line(capsys)


def test_export_is_self_contained(store, tmp_path):
    out = tmp_path / "e.html"
    assert main([str(store), "--export", str(out), "--select", "density=1"]) == 0
    text = out.read_text()
    assert not re.search(r"<script[^>]+src=", text)  # Bokeh's JS is inlined
    assert not re.search(r"<link[^>]+href=\"?https?:", text)
    assert '\\"0,2\\"' in text or '"0,2"' in text  # a density=1 cell's models are embedded
    assert '\\"0,0\\"' not in text and '"0,0":' not in text  # other densities are not


# ---------------------------------------------------------------- in a real browser

# Screen position of a cell of the map: the glyph's own scales, from Bokeh's view of it.
CELL_XY_JS = """(key) => {
  const r = Bokeh.documents[0].get_model_by_name('cellmap');
  const rv = Bokeh.index.find_one(r); const d = r.data_source.data;
  const i = d.key.indexOf(key);
  const sx = rv.coordinates.x_scale.compute(d.x[i]);
  const sy = rv.coordinates.y_scale.compute(d.y[i]);
  const pv = rv.parent; const el = pv.canvas_view ? pv.canvas_view.el : pv.el;
  const b = el.getBoundingClientRect();
  return [b.left + sx, b.top + sy];
}"""
READY_JS = (
    "() => window.Bokeh && Bokeh.documents.length > 0 && "
    "Bokeh.documents[0].get_model_by_name('cellmap') !== null && "
    "Bokeh.index.find_one(Bokeh.documents[0].get_model_by_name('cellmap')) != null"
)


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split()]


def _click_and_check(page, store: Path, key: str, shot: Path) -> None:
    """Click the cell `key` ("i_r,i_p"); each seed's panel shows the store's numbers."""
    page.wait_for_function(READY_JS, timeout=60_000)
    page.mouse.click(*page.evaluate(CELL_XY_JS, key))
    page.wait_for_selector(".seed-loss", timeout=30_000)
    ir, ip = map(int, key.split(","))
    cell = xr.open_zarr(store).isel(relative_importance=ir, density=ip).load()
    header = page.locator(".cell-header").inner_text()
    assert f"density p = 1 − S = {float(cell.density):.4g}" in header
    for k, seed in enumerate(cell["seed"].values):
        box = page.locator(f'.seed[data-seed="{int(seed)}"]')
        W = cell["W"].values[k, 0, :2].astype(float)
        assert float(box.locator(".seed-loss").inner_text()) == pytest.approx(
            float(cell["loss"].values[k]), rel=1e-5
        )
        np.testing.assert_allclose(
            _floats(box.locator(".seed-b").inner_text()),
            cell["b"].values[k, :2],
            rtol=1e-5,
            atol=1e-7,
        )
        np.testing.assert_allclose(
            _floats(box.locator(".seed-norms").inner_text()), np.abs(W), rtol=1e-5, atol=1e-7
        )
    worst = int(np.argmax(_exact_losses(cell)))
    role = page.locator(f'.seed[data-seed="{int(cell.seed[worst])}"] .seed-role').inner_text()
    assert role.startswith("dropped: highest exact loss")
    # the arrows drawn for each seed are its columns of W (m = 1: along x)
    for k in range(cell.sizes["seed"]):
        x1 = page.evaluate(
            f"() => Array.from(Bokeh.documents[0].get_model_by_name('arrows{k}').data.x1)"
        )
        np.testing.assert_allclose(x1, cell["W"].values[k, 0, :2], rtol=1e-6, atol=1e-7)
    page.wait_for_timeout(300)
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("TOYSWEEP_ARTEFACTS"):
        dest = Path(os.environ["TOYSWEEP_ARTEFACTS"])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, dest / shot.name)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
        if os.environ.get("TOYSWEEP_REQUIRE_BROWSER") == "1":
            pytest.fail(f"TOYSWEEP_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.mark.browser
def test_browser_served_app_and_static_export(store, browser, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "analysis.explore", str(store), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        url = None
        for line in proc.stdout:  # "explorer of ... at http://localhost:PORT/ (Ctrl-C to stop)"
            m = re.search(r"(http://localhost:\d+/)", line)
            if m:
                url = m.group(1)
                break
        assert url, proc.stderr.read() if proc.poll() is not None else "no URL printed"
        page = browser.new_page(viewport={"width": 1280, "height": 1500})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        _click_and_check(page, store, "1,2", tmp_path / "explorer-served.png")
        assert not errors, errors
        page.close()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    # the static export, offline: any network request would fail the page
    out = tmp_path / "explorer.html"
    r = run_cli(["-m", "analysis.explore", str(store), "--export", str(out)], cwd=ROOT)
    assert r.returncode == 0, r.stderr
    ctx = browser.new_context(offline=True, viewport={"width": 1280, "height": 1500})
    requests: list[str] = []
    ctx.on("request", lambda req: requests.append(req.url))
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(out.as_uri())
    _click_and_check(page, store, "2,0", tmp_path / "explorer-static.png")
    assert not errors, errors
    assert all(u.startswith("file://") for u in requests), requests
    ctx.close()


@pytest.mark.unit
def test_closed_form_lines_land_on_the_map_whether_the_axes_are_log_or_slots():
    """The explorer's closed-form boundaries, in the map's coordinates: on a log axis r and p
    themselves; on an axis spanning less than 10× (one slot per value), the slot a value falls
    in, linear between slot centres. Read back into (r, p), every point lies on the paper's
    2→1 curves p = 4r/(2+5r) (r ≤ 1) and p = 4/(5+2r) (r ≥ 1), inside the map."""
    from analysis.explore.view import Axis, boundary_lines

    p = np.geomspace(0.01, 1.0, 7)
    for r in (np.array([0.5, 0.75, 1.0, 1.25, 1.5]), np.geomspace(0.1, 10, 7)):
        ax, ay = Axis.of("relative_importance", r), Axis.of("density", p)
        assert ax.log == (r.max() / r.min() >= 10) and ay.log
        lines = boundary_lines("2to1", ax, ay)
        seen = 0
        for k, (x, y) in enumerate(lines[:2]):
            ok = np.isfinite(x) & np.isfinite(y)
            assert ok.sum() > 50, k
            assert (x[ok] >= ax.lo.min()).all() and (x[ok] <= ax.hi.max()).all()
            rr = x[ok] if ax.log else np.interp(x[ok], np.arange(len(r)), r)  # slots -> r
            want = 4 * rr / (2 + 5 * rr) if k == 0 else 4 / (5 + 2 * rr)
            np.testing.assert_allclose(y[ok], want, rtol=1e-9)
            seen += ok.sum()
        x_edge, y_edge = lines[2]  # the r = 1 edge: at r = 1's place on the map
        edge = np.isfinite(y_edge)
        assert edge.any() and np.allclose(x_edge[edge], 1.0 if ax.log else 2.0)
        assert seen > 200
