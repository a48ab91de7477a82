"""Figure helpers: what they promise a reader of the figure."""

import numpy as np
import pytest

from hw1track.reporting.plotting import limit_to_lines, subplots


@pytest.mark.parametrize("scale", ["linear", "log"])
def test_panels_sharing_a_y_axis_are_fitted_to_all_their_lines_together(scale):
    fig, (train, test) = subplots(1, 2, width=6.0, height=4.0, sharey=True)
    train.plot([0, 1, 2], [2.3, 0.4, 0.15])  # each panel reaches past the other at one end
    test.plot([0, 1, 2], [2.6, 0.5, 0.3])
    train.fill_between([0, 1, 2], [1e-3] * 3, [50.0] * 3)  # a band wider than its curve may run off the panel
    for ax in (train, test):
        ax.set_yscale(scale)
    limit_to_lines(train, test)
    for ax in (train, test):
        low, high = ax.get_ylim()
        drawn = np.concatenate([line.get_ydata() for line in ax.get_lines()])
        assert low <= drawn.min() and drawn.max() <= high
        assert low > 1e-3 and high < 50.0  # fitted to the lines, not to the band
