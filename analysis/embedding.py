"""2-D embeddings of a model's feature directions (the columns of W) and how well they fit.

MDS and t-SNE come from scikit-learn; UMAP from umap-learn, imported only when asked for, so a
machine without it still draws everything else (`EmbeddingUnavailable` says why).
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr
from scipy.spatial.distance import pdist
from scipy.stats import spearmanr

METHODS = {"mds": "MDS", "tsne": "t-SNE", "umap": "UMAP"}
MIN_POINTS = 4  # fewer points than this give no meaningful 2-D layout (t-SNE needs perplexity)


class EmbeddingUnavailable(RuntimeError):
    """An embedding that cannot be computed here; str() is a one-line reason."""


def umap_status() -> str | None:
    """None when umap-learn imports, else a one-line reason (for the figure's place)."""
    try:
        import umap  # noqa: F401
    except Exception as e:  # ImportError, or numba failing to initialise
        return f"umap-learn could not be imported ({type(e).__name__}: {e}); pip install umap-learn"
    return None


def embed(X: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """Embed the rows of X (points, dims) in 2-D with MDS, t-SNE or UMAP; returns (points, 2)."""
    X = np.asarray(X, dtype=float)
    n = len(X)
    if method not in METHODS:
        raise ValueError(f"embedding method {method!r}: expected one of {', '.join(METHODS)}")
    if n < MIN_POINTS:
        raise EmbeddingUnavailable(f"{n} points: too few to embed (need {MIN_POINTS})")
    if method == "mds":
        from sklearn import manifold

        return manifold.MDS(n_components=2, init="classical_mds", random_state=seed).fit_transform(
            X
        )
    if method == "tsne":
        from sklearn import manifold

        # perplexity must stay below the number of points; ~n/3 keeps small sets stable
        perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
        return manifold.TSNE(
            n_components=2, perplexity=perplexity, init="pca", random_state=seed
        ).fit_transform(X)
    reason = umap_status()
    if reason is not None:
        raise EmbeddingUnavailable(reason)
    import umap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_jobs overridden by random_state; spectral fallbacks
        # spectral initialisation needs a connected neighbour graph: small sets start at random
        init = "spectral" if n > 20 else "random"
        reducer = umap.UMAP(n_neighbors=min(15, n - 1), init=init, random_state=seed)
        return reducer.fit_transform(X)


def shepard(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Pairwise distances in the original space and in the embedding, and their Spearman rank
    correlation (1 = the embedding keeps the order of all distances)."""
    d_orig, d_emb = pdist(np.asarray(X, float)), pdist(np.asarray(Y, float))
    if len(d_orig) < 2 or np.ptp(d_orig) == 0 or np.ptp(d_emb) == 0:
        return d_orig, d_emb, float("nan")
    return d_orig, d_emb, float(spearmanr(d_orig, d_emb).statistic)


SUBSETS = ("all", "learned")  # every feature; only those not collapsed at the origin


def latent_cells(best: xr.Dataset) -> list[tuple[int, float]]:
    """The (m, density) cells to embed: m 5 and 20 (or the extremes) at the densest, a middle
    and the sparsest density. best: W with dims (n_hidden, density, hidden, feature)."""
    ms, ps = [int(v) for v in best["n_hidden"].values], list(best["density"].values)
    pick_m: list[int] = [m for m in (5, 20) if m in ms] or sorted({ms[0], ms[-1]})
    pick_p = list(dict.fromkeys([ps[0], ps[len(ps) // 2], ps[-1]]))
    return [(m, p) for m in pick_m for p in pick_p]


def embedding_dataset(best: xr.Dataset, threshold: float) -> xr.Dataset:
    """2-D embeddings of W's columns for the latent_cells of best, by every method, of all
    features and of the learned ones (‖W_i‖ >= threshold), with their Spearman ρ.

    Returns `embedding` (embed_cell, embedding_method, subset, feature, component), NaN for
    features left out; `embedding_rho` and `embedding_note` (embed_cell, embedding_method,
    subset), the note saying why an embedding is missing ("" when present); `collapsed`
    (embed_cell, feature).
    """
    cells = latent_cells(best)
    n_feat = best.sizes["feature"]
    shape = (len(cells), len(METHODS), len(SUBSETS))
    coords = np.full((*shape, n_feat, 2), np.nan)
    rho = np.full(shape, np.nan)
    note = np.full(shape, "", dtype=object)
    collapsed = np.zeros((len(cells), n_feat), bool)
    for r, (m, p) in enumerate(cells):
        W = best["W"].sel(n_hidden=m, density=p).transpose("hidden", "feature").values
        X = np.asarray(W, float)[~np.all(np.isnan(W), axis=-1)].T  # (feature, m): no padding
        collapsed[r] = np.linalg.norm(X, axis=1) < threshold
        present = np.isfinite(X).all(1) & (X.shape[1] > 0)  # padded features; missing cells
        for k, method in enumerate(METHODS):
            for c, keep in enumerate((present, present & ~collapsed[r])):
                try:
                    Y = embed(X[keep], method)  # (kept feature, 2)
                except EmbeddingUnavailable as e:
                    note[r, k, c] = str(e)
                    continue
                coords[r, k, c, keep] = Y
                rho[r, k, c] = shepard(X[keep], Y)[2]
    dims = ("embed_cell", "embedding_method", "subset")
    return xr.Dataset(
        {
            "embedding": ((*dims, "feature", "component"), coords),
            "embedding_rho": (dims, rho, {"description": "Spearman ρ of the Shepard plot"}),
            "embedding_note": (dims, note.astype(str)),
            "collapsed": (("embed_cell", "feature"), collapsed),
        },
        coords={
            "embed_cell": np.arange(len(cells)),
            "embed_n_hidden": ("embed_cell", [m for m, _ in cells]),
            "embed_density": ("embed_cell", [p for _, p in cells]),
            "embedding_method": list(METHODS),
            "subset": list(SUBSETS),
            "feature": best["feature"].values,
        },
        attrs={"embedding_threshold": threshold},
    )
