import numpy as np
import ot
import pytest
import torch

from gctm_mini.data2d import DATASETS, GaussianMixture, as_sampler, make_dataset
from gctm_mini.metrics import (
    data_floor,
    floor_values,
    format_pm,
    mmd2,
    quality_by_nfe,
    sliced_w2,
    w2,
)


@pytest.mark.parametrize("name", list(DATASETS))
def test_datasets_are_seeded_finite_and_2d(name):
    ds = make_dataset(name)
    a = ds(500, torch.Generator().manual_seed(0))
    b = ds(500, torch.Generator().manual_seed(0))
    assert a.shape == (500, 2) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert 0.2 < float(a.std()) < 3.0


def test_any_callable_is_accepted_and_checked():
    ds = as_sampler(lambda n: torch.randn(n, 2) + 1)
    assert ds(10).shape == (10, 2)
    with pytest.raises(ValueError, match="n=5"):
        as_sampler(lambda n: torch.randn(n + 1, 2))(5)
    with pytest.raises(ValueError, match="NaN"):
        as_sampler(lambda n: torch.full((n, 2), float("nan")))(5)
    with pytest.raises(ValueError, match="unknown dataset"):
        make_dataset("swissroll3d")


def test_gaussian_mixture_validates_parameters():
    with pytest.raises(ValueError, match="positive definite"):
        GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]])
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture([-1.0], [[0.0, 0.0]], 1.0)


def test_w2_of_a_shift_is_the_shift_length():
    x = torch.randn(300, 2, dtype=torch.float64)
    c = torch.tensor([0.3, -0.4], dtype=torch.float64)
    assert w2(x, x + c) == pytest.approx(0.5, rel=1e-9)
    assert w2(x, x[torch.randperm(300)]) == pytest.approx(0.0, abs=1e-6)


def test_w2_matches_pot_and_sliced_w2_is_a_lower_bound():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 2, generator=g), torch.randn(200, 2, generator=g) * 1.5
    M = ot.dist(x.double().numpy(), y.double().numpy())
    ref = np.sqrt(ot.emd2(np.full(200, 1 / 200), np.full(200, 1 / 200), M))
    assert w2(x, y) == pytest.approx(ref, rel=1e-9)
    assert sliced_w2(x, y) <= w2(x, y) + 1e-9


def test_mmd_separates_distributions():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g)
    assert abs(mmd2(x, y)) < 0.01
    assert mmd2(x, y + 1.0) > 0.1


def test_floor_is_positive_and_quality_by_nfe_reports_it():
    data = make_dataset("8gaussians")
    floor = data_floor(data, 256, seeds=2)
    assert floor > 0
    rep = quality_by_nfe(lambda x1, nfe: data(len(x1)), data, [1, 2], n=256, seeds=2)
    assert rep.floor == pytest.approx(floor)
    assert set(rep.values) == {1, 2}
    js = rep.to_json()
    assert js["n"] == 256 and js["seeds"] == 2 and set(js["w2"]) == {"1", "2"}
    # a perfect sampler is at the floor; a shifted one is far above it
    assert rep.values[1] < 1.5 * floor
    bad = quality_by_nfe(lambda x1, nfe: data(len(x1)) * 1.5, data, [1], n=256, seeds=2)
    assert bad.values[1] > 1.8 * floor


def test_floor_is_measured_on_the_reference_sets_of_the_report():
    data = make_dataset("moons")
    vals = floor_values(data, 128, seeds=3, base_seed=7)
    for k, v in enumerate(vals):  # seed k: the report's reference set, then a fresh sample
        g = torch.Generator().manual_seed(7 + k)
        ref = data(128, g)
        assert v == pytest.approx(w2(data(128, g), ref))
    assert len(set(vals)) == 3
    rep = quality_by_nfe(lambda x1, nfe: x1, data, [1], n=128, seeds=3, base_seed=7)
    assert rep.floor == pytest.approx(float(np.mean(vals)))
    assert rep.floor_std == pytest.approx(float(np.std(vals))) and rep.floor_std > 0
    assert "±" in rep.table() and rep.pm(1) == format_pm(rep.values[1], rep.stds[1])
    assert format_pm(0.14159, 0.00612) == "0.142 ± 0.006"
