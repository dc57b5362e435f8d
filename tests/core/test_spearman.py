"""ffcore.rankcorr.spearman: the one rank correlation of the FP16 and INT8 gates."""

import numpy as np
import pytest

from ffcore.rankcorr import spearman


def test_zero_variance_rule():
    varied = np.array([0.5, 0.9, 1.2, 0.7])
    assert spearman(np.ones(4), np.ones(4)) == 1.0  # both constant: same (tied) order
    assert spearman(varied, np.full(4, 0.8)) == 0.0  # one collapsed to one value: order lost, fails a gate
    assert spearman(np.full(4, 0.8), varied) == 0.0


def test_ties_and_errors():
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486832980505138)  # scipy.stats.spearmanr
    with pytest.raises(ValueError):
        spearman([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(ValueError):
        spearman([1.0, 2.0], [1.0])
