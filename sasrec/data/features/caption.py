"""Caption text of ``kuairec_caption_category.csv`` as a dense, L2-normalised vector per video.

Captions are Chinese, without spaces between words, so they are split into character n-grams (1-2) rather
than words. The n-grams are hashed into 2^18 columns (the hashing trick, Weinberger et al., ICML 2009),
weighted by TF-IDF with sublinear term frequency (Salton & Buckley, 1988) and reduced to ``dim``
dimensions by a truncated SVD (latent semantic analysis, Deerwester et al., 1990), computed by ARPACK
(Lehoucq, Sorensen & Yang, 1998) from a seeded start vector over the hash columns that occur (empty
columns change nothing and would dominate the cost). IDF and SVD are fitted on every caption of the file,
so the vectors do not depend on which dataset is prepared. A missing or blank caption gives the zero vector.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
from sklearn.preprocessing import normalize
from sklearn.utils.extmath import svd_flip

from sasrec.data.contracts import PreparedData
from sasrec.data.features.alignment import scatter_rows
from sasrec.data.features.table import FeatureGroup, item_group
from sasrec.errors import ConfigError

SOURCE = "kuairec_caption_category.csv"
N_HASH_FEATURES = 1 << 18
NGRAM_RANGE = (1, 2)


def caption_vectors(captions: pd.Series, dim: int, seed: int) -> np.ndarray:
    """(n, dim) float32 L2-normalised caption vectors; zero rows for missing or blank captions.

    Args:
        captions: (n,) caption strings (NA allowed).
        dim: output dimensions (when the captions span fewer, the extra dimensions are zero).
        seed: random state of the SVD's start vector.
    """
    if dim < 1:
        raise ConfigError(f"caption_dim must be at least 1; got {dim}")
    text = captions.reset_index(drop=True).astype("string").fillna("").str.strip()
    has_text = (text.str.len() > 0).to_numpy(dtype=bool)  # (n,)
    out = np.zeros((len(text), dim), dtype=np.float32)
    documents = text[has_text].tolist()
    if not documents:
        return out
    hashed = HashingVectorizer(
        analyzer="char", ngram_range=NGRAM_RANGE, n_features=N_HASH_FEATURES, alternate_sign=False, norm=None
    ).transform(documents)  # (n_docs, 2^18) counts
    weighted = TfidfTransformer(sublinear_tf=True).fit_transform(hashed)  # (n_docs, 2^18), rows L2 = 1
    used = np.flatnonzero(np.bincount(weighted.indices, minlength=weighted.shape[1]) > 0)
    weighted = weighted[:, used]  # (n_docs, n_used): the same singular vectors, far fewer columns
    components = min(dim, min(weighted.shape) - 1)
    if components >= 1:
        svd = TruncatedSVD(n_components=components, algorithm="arpack", random_state=seed)
        reduced = svd.fit_transform(weighted)  # (n_docs, components)
    else:  # one caption, or one distinct n-gram: the exact SVD of a tiny matrix
        u, s, vt = np.linalg.svd(weighted.toarray(), full_matrices=False)
        u, vt = svd_flip(u, vt, u_based_decision=False)
        components = min(dim, len(s))
        reduced = u[:, :components] * s[:components]
    reduced = normalize(reduced)
    # Rounded to 1e-6: round-off noise of the SVD (about 1e-16) must not reach the table's digest.
    out[has_text, :components] = (np.round(reduced, 6) + 0.0).astype(np.float32)  # + 0.0: no -0.0
    return out


def caption_group(
    frame: pd.DataFrame, file_rows: np.ndarray, data: PreparedData, dim: int = 32, seed: int = 0
) -> FeatureGroup:
    """Caption vectors of every item: (num_items + 1, dim) float32, zeros where there is no caption."""
    vectors = caption_vectors(frame["caption"], dim, seed)  # (n_file, dim)
    values = scatter_rows(file_rows, vectors, data.num_items + 1)  # (n_items + 1, dim)
    return item_group(
        data,
        name="caption",
        kind="dense",
        source=SOURCE,
        columns=tuple(f"caption_{k}" for k in range(dim)),
        values=values,
        notes=(
            f"char {NGRAM_RANGE[0]}-{NGRAM_RANGE[1]}-grams hashed to 2^18, sublinear TF-IDF, TruncatedSVD "
            f"(ARPACK, seed {seed}) to {dim}, L2-normalised; fitted on the whole file; no caption = zeros"
        ),
    )
