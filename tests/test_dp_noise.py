"""The CSPRNG noise sampler: right distributions, and no seed anyone could share.

Distribution checks are Kolmogorov–Smirnov tests against scipy's CDFs with a fixed
bound: under the null hypothesis P(sqrt(n) * D > t) <= 2 exp(-2 t^2) (Dvoretzky–
Kiefer–Wolfowitz), so t = 3.3 fails a correct sampler with probability < 1e-9.
"""

import math

import numpy as np
import pytest
from scipy import stats

from fedacq.crypto import dp_noise

N = 40_000
T = 3.3
assert 2 * math.exp(-2 * T * T) < 1e-9


def _ks(sample, cdf):
    return stats.kstest(sample, cdf).statistic * math.sqrt(len(sample))


def test_uniform_is_uniform_on_the_open_interval():
    u = dp_noise.uniform(N)
    assert u.shape == (N,) and u.dtype == np.float64
    assert (u > 0).all() and (u < 1).all()
    assert _ks(u, stats.uniform.cdf) < T


@pytest.mark.parametrize("scale", [0.3, 2.0])
def test_laplace_matches_scipy(scale):
    x = dp_noise.laplace(scale, N)
    assert _ks(x, stats.laplace(0, scale).cdf) < T
    # the sign is fair and independent of the magnitude: both halves are exponential
    for half in (x[x > 0], -x[x < 0]):
        assert _ks(half, stats.expon(0, scale).cdf) < T


@pytest.mark.parametrize("sigma", [0.5, 3.0])
def test_gaussian_matches_scipy(sigma):
    x = dp_noise.gaussian(sigma, N + 1)  # odd: the last Box-Muller pair is cut
    assert x.shape == (N + 1,)
    assert _ks(x, stats.norm(0, sigma).cdf) < T
    # the cos and sin outputs of one Box-Muller pair (first and second half) are uncorrelated:
    # the sample correlation has sd 1/sqrt(N/2); 6.5 sd is exceeded with probability < 1e-10
    y = dp_noise.gaussian(sigma, N)
    assert abs(np.corrcoef(y[: N // 2], y[N // 2:])[0, 1]) < 6.5 / math.sqrt(N / 2)


def test_shapes_and_broadcast_scales():
    x = dp_noise.laplace(np.array([1.0, 100.0, 1e4]), (5000, 3))
    assert x.shape == (5000, 3)
    spread = np.median(np.abs(x), axis=0)  # median |Laplace(b)| = b ln 2
    np.testing.assert_allclose(spread / np.array([1.0, 100.0, 1e4]), math.log(2), rtol=0.15)
    assert dp_noise.gaussian(1.0, (2, 0, 4)).shape == (2, 0, 4)
    assert dp_noise.laplace(1.0, 0).shape == (0,)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), [1.0, 0.0]])
def test_bad_scales_are_refused(bad):
    with pytest.raises(ValueError, match="scale|sigma"):
        dp_noise.laplace(bad, 2)
    with pytest.raises(ValueError, match="scale|sigma"):
        dp_noise.gaussian(bad, 2)


def test_noise_comes_from_os_urandom_not_from_numpy(monkeypatch):
    """Seeding numpy's generators changes nothing; the bytes of os.urandom are the only input."""
    np.random.seed(0)
    first = dp_noise.laplace(1.0, 64)
    np.random.seed(0)
    assert not np.array_equal(first, dp_noise.laplace(1.0, 64))
    calls = []

    def fake_urandom(n):
        calls.append(n)
        return bytes(range(256)) * (n // 256) + bytes(range(n % 256))

    monkeypatch.setattr(dp_noise.os, "urandom", fake_urandom)
    a, b = dp_noise.gaussian(1.0, 100), dp_noise.gaussian(1.0, 100)
    np.testing.assert_array_equal(a, b)  # same bytes, same noise: os.urandom is the only source
    assert calls == [800, 800]


def test_permutation_is_a_uniform_shuffle():
    n = 6
    assert sorted(dp_noise.permutation(n).tolist()) == list(range(n))
    assert dp_noise.permutation(0).shape == (0,)
    # where index 0 lands: uniform over the 6 positions (chi-square, 5 dof; 60 is exceeded w.p. < 1e-10)
    hits = np.bincount([int(np.flatnonzero(dp_noise.permutation(n) == 0)[0]) for _ in range(6000)], minlength=n)
    assert stats.chisquare(hits).statistic < 60
