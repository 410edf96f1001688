"""2-D embeddings of a model's feature directions (the columns of W) and how well they fit.

MDS and t-SNE come from scikit-learn; UMAP from umap-learn, imported only when asked for, so a
machine without it still draws everything else (`EmbeddingUnavailable` says why).
"""

from __future__ import annotations

import warnings

import numpy as np
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
        from sklearn.manifold import MDS

        return MDS(n_components=2, init="classical_mds", random_state=seed).fit_transform(X)
    if method == "tsne":
        from sklearn.manifold import TSNE

        # perplexity must stay below the number of points; ~n/3 keeps small sets stable
        perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
        return TSNE(
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
