"""One PCA shared by several weight trajectories.

Comparing optimisation paths in a plane only means something if every run is
projected onto the same axes: the PCA is fitted once on all runs' snapshots
stacked together, and each run's points are that one fitted transform applied
to its own rows. The exact ("full") SVD is used because scikit-learn's default
for wide data is a randomised solver whose axes and explained variance depend
on its random state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA


@dataclass(frozen=True)
class JointProjection:
    """Each trajectory's points in the shared plane, and the PCA that made them."""

    points: list[np.ndarray]
    pca: PCA

    @property
    def explained_variance_ratio(self) -> np.ndarray:
        return self.pca.explained_variance_ratio_


def project_jointly(trajectories: Sequence[np.ndarray]) -> JointProjection:
    """Fit one two-component PCA on the rows of all `trajectories` (each snapshots x features), project each run."""
    stacked = np.concatenate(trajectories, axis=0)
    pca = PCA(n_components=2, svd_solver="full").fit(stacked)
    del stacked  # a full copy of every snapshot (~150 MB for the full study), not needed once fitted
    return JointProjection([pca.transform(rows) for rows in trajectories], pca)
