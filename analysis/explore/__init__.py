"""Explore a sweep store in the browser: `python -m analysis.explore <store>` (see __main__).

A map of the store's cells (the phase diagram with its closed-form boundaries for the 2→1 and
3→2 phase grids; a heatmap over two chosen axes for every other grid) and, on a click, each
seed's models: columns of W, bias, norms and superposition, loss curve, phases, and what the
aggregation rule did with the seed. Modules: `data` (lazy reads of the store), `view` (the
page), `payload` (one cell's numbers for the page), `style` (palette, labels), `app` (the
server and the static export).

Why Bokeh (3.x), and not Panel, hvPlot/HoloViews or Plotly Dash:
- The static export must open offline with cell clicks working. Bokeh's `file_html` with
  INLINE resources writes one HTML file with its JavaScript inside (~1.8 MB for a small
  store), and clicks there run a small `CustomJS` over ColumnDataSources. Dash has no
  serverless export of callbacks; Panel's `save(embed=True)` precomputes every widget state
  (one per cell here), which grows with the grid and cannot express "load this cell".
- The live app is the same page on a Bokeh server: Python callbacks read one cell from zarr on
  a click, and the page (selectors as GroupFilters linked to Selects, the quantity menu) is
  the same models, so the server and the export cannot drift apart.
- One dependency (bokeh, with tornado) instead of Panel's stack over it; Panel and HoloViews
  build on Bokeh anyway, and we need none of their widget abstractions.
No JavaScript framework is hand-written: two short CustomJS snippets (`view.CLICK_JS`,
`view.QUANTITY_JS`) copy precomputed data into Bokeh models.
"""
