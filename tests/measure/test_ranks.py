"""Rank correlations between score vectors (``measure/ranks.py``): Spearman's rho as the Pearson correlation of
the ranks, ties broken by position."""
import numpy as np
import pytest
import torch

from xlprune_lib.measure import ranks


def test_spearman_of_a_known_permutation():
    """rho = 1 - 6 sum(d^2) / (n (n^2 - 1)) without ties: two neighbour swaps in 5 give d = (1, 1, 0, 1, 1),
    rho = 1 - 24 / 120 = 0.8."""
    a = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])
    b = torch.tensor([1.0, 0.0, 2.0, 4.0, 3.0])
    assert ranks.spearman(a, b) == pytest.approx(0.8, abs=1e-12)
    assert ranks.spearman(a, a) == pytest.approx(1.0, abs=1e-12)
    assert ranks.spearman(a, a.flip(0)) == pytest.approx(-1.0, abs=1e-12)
    # one swap of the ends of 4: d = (3, 0, 0, 3), rho = 1 - 6 * 18 / 60 = -0.8
    assert ranks.spearman(torch.arange(4.0), torch.tensor([3.0, 1.0, 2.0, 0.0])) == pytest.approx(-0.8, abs=1e-12)


def test_spearman_sees_only_the_order():
    """Any increasing transform leaves the ranks, and so rho, unchanged; a decreasing one flips its sign."""
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(300, generator=g), torch.rand(300, generator=g)
    rho = ranks.spearman(a, b)
    assert ranks.spearman(a.exp(), b ** 3) == pytest.approx(rho, abs=1e-12)
    assert ranks.spearman(-a, b) == pytest.approx(-rho, abs=1e-12)
    assert ranks.spearman(a, a.exp()) == pytest.approx(1.0, abs=1e-12)


def test_ties_are_broken_by_position():
    """Equal scores are ranked in the order they come: a constant vector ranks like 0, 1, 2, ..."""
    const = torch.ones(6)
    assert ranks.spearman(const, torch.arange(6.0)) == pytest.approx(1.0, abs=1e-12)
    assert ranks.spearman(const, -torch.arange(6.0)) == pytest.approx(-1.0, abs=1e-12)
    # [2, 1, 1, 0] ranks as (3, 1, 2, 0), the same as [3, 1, 2, 0]
    assert ranks.spearman(torch.tensor([2.0, 1.0, 1.0, 0.0]), torch.tensor([3.0, 1.0, 2.0, 0.0])) == \
        pytest.approx(1.0, abs=1e-12)


def test_spearman_matrix_is_symmetric_with_ones_on_the_diagonal():
    g = torch.Generator().manual_seed(2)
    vectors = [torch.rand(50, generator=g) for _ in range(4)]
    m = ranks.spearman_matrix(vectors)
    assert m.shape == (4, 4) and isinstance(m, np.ndarray)
    np.testing.assert_array_equal(np.diag(m), np.ones(4))
    np.testing.assert_array_equal(m, m.T)
    for i in range(4):
        for j in range(4):
            if i != j:
                assert m[i, j] == pytest.approx(ranks.spearman(vectors[i], vectors[j]), abs=1e-12)
                assert -1.0 <= m[i, j] <= 1.0
    assert ranks.spearman_matrix([vectors[0]]).tolist() == [[1.0]]


def test_spearman_matrix_matches_pearson_of_ranks():
    """Rank correlations against numpy's Pearson correlation of independently computed ranks (no ties)."""
    import numpy as np

    g = torch.Generator().manual_seed(0)
    a = torch.rand(500, generator=g)
    b = a + 0.5 * torch.rand(500, generator=g)     # correlated with a
    c = torch.rand(500, generator=g)
    vectors = [a, b, c, -a]
    ranked = np.stack([np.argsort(np.argsort(v.numpy())) for v in vectors])
    expected = np.corrcoef(ranked)
    got = ranks.spearman_matrix(vectors)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    assert got[0, 3] == pytest.approx(-1.0) and got[0, 1] > 0.8 and abs(got[0, 2]) < 0.2
    assert ranks.spearman(a, b) == pytest.approx(expected[0, 1])
