"""A tiny own catalog with targets, written by the tests: synthetic galaxies (galaxy_finetune.data.synthetic) as
PNGs, with volunteer vote counts and vote fractions that depend on each galaxy's shape."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from galaxy_finetune.data.synthetic import render_galaxy

# question -> its answer count columns (an own catalog's data.schema)
SCHEMA = {"smooth-or-featured": ["smooth-or-featured_smooth", "smooth-or-featured_featured"],
          "edge-on": ["edge-on_yes", "edge-on_no"]}
FRACTIONS = ["featured_fraction", "edge_on_fraction"]  # regression targets
# per synthetic class (smooth_round, smooth_cigar, edge_on_disk, unbarred_spiral): p(featured), p(edge-on)
P_FEATURED = (0.1, 0.2, 0.8, 0.9)
P_EDGE_ON = (0.1, 0.3, 0.9, 0.1)


def write_vote_catalog(folder: Path, n_per_class: int = 10, size: int = 32, seed: int = 0,
                       volunteers: int = 20) -> Path:
    """folder/catalog.csv (file_loc, id_str, the vote counts of SCHEMA, the fractions of FRACTIONS) and its PNGs."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for label in range(4):
        for i in range(n_per_class):
            index = label * n_per_class + i
            name = f"g{index:04d}.png"
            Image.fromarray(render_galaxy(label, seed, index, size)).save(folder / name)
            featured = rng.binomial(volunteers, P_FEATURED[label])
            asked = featured  # edge-on is asked of those who answered featured
            edge = rng.binomial(asked, P_EDGE_ON[label]) if asked else 0
            rows.append({"file_loc": name, "id_str": f"g{index:04d}",
                         "smooth-or-featured_smooth": volunteers - featured, "smooth-or-featured_featured": featured,
                         "edge-on_yes": edge, "edge-on_no": asked - edge,
                         "featured_fraction": featured / volunteers,
                         "edge_on_fraction": (edge / asked) if asked else 0.0, "shape": label})
    path = folder / "catalog.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path
