import torch

from tinylora import seeding

GOLDEN_P = [-0.23552916944026947, 0.09847820550203323, 0.7846199870109558, -1.8376139402389526,
            -0.9517641663551331, -2.168499708175659, 0.6330708265304565, 1.9430735111236572]
GOLDEN_Q = [1.1763782501220703, 0.8079046607017517, -0.04186677560210228]


def test_splitmix64_reference_vector():
    # First outputs of SplitMix64 seeded with 0 (Vigna's reference implementation).
    assert seeding.splitmix64(0) == 0xE220A8397B1DCDAF
    assert seeding.splitmix64(0x9E3779B97F4A7C15) == 0x6E789E6AA1B965F4


def test_projection_golden_values():
    # Pinned: P for (seed 0, module 0) and (seed 7, module 3). If these change, every adapter
    # file ever written decodes to a different model. Never update them casually.
    p = seeding.normal((2, 2, 2), 0, 0)
    q = seeding.normal((3,), 7, 3)
    assert p.flatten().tolist() == GOLDEN_P
    assert q.tolist() == GOLDEN_Q


def test_deterministic_and_distinct():
    a = seeding.normal((13, 2, 2), 0, 5)
    assert torch.equal(a, seeding.normal((13, 2, 2), 0, 5))
    assert not torch.equal(a, seeding.normal((13, 2, 2), 0, 6))
    assert not torch.equal(a, seeding.normal((13, 2, 2), 1, 5))
    # prefix property: a longer draw extends a shorter one
    assert torch.equal(seeding.normal((5,), 1, 1), seeding.normal((8,), 1, 1)[:5])


def test_distribution_is_standard_normal():
    x = seeding.normal((20000,), 11, 0).double()
    assert abs(x.mean()) < 0.03 and abs(x.std() - 1) < 0.03


def test_sign_vector():
    s = seeding.sign_vector(1000, 1)
    assert torch.allclose(s.abs() * 1000**0.5, torch.ones(1000, dtype=torch.float64))
    assert torch.equal(s, seeding.sign_vector(1000, 1)) and not torch.equal(s, seeding.sign_vector(1000, 2))
