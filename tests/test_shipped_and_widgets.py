"""The shipped toy checkpoints load and reach their stated quality; the t→s explorer works headless."""

import pytest
import torch

from gctm_mini.assets import load_shipped, manifest, shipped_path
from gctm_mini.data2d import make_dataset
from gctm_mini.metrics import quality_by_nfe
from gctm_mini.sampling import bcm_invert, bcm_round_trip, make_sampler
from gctm_mini.widgets import FlowMapExplorer

ENTRIES = manifest()
TOY = [k for k, e in ENTRIES.items() if e.get("kind", "2d") == "2d"]
IMAGE = [k for k, e in ENTRIES.items() if e.get("kind") == "image"]


@pytest.mark.parametrize("name", TOY)
def test_shipped_checkpoint_reaches_its_quality(name):
    e = ENTRIES[name]
    model = load_shipped(name)
    assert model.train_config["method"] == e["method"] and model.train_config["data"] == e["data"]
    sampler = make_sampler(model, e["sampler"], gamma=1.0)
    rep = quality_by_nfe(sampler, make_dataset(e["data"]), [e["nfe"]], n=2048, seeds=2)
    assert rep.values[e["nfe"]] <= e["max_w2_ratio"] * rep.floor, (name, rep.values, rep.floor)
    assert shipped_path(name).stat().st_size < 1_500_000


@pytest.mark.parametrize("name", IMAGE)
def test_shipped_image_checkpoint_beats_its_proxy_threshold(name):
    """One-jump samples vs held-out patches: random-feature Fréchet distance (offline proxy)
    within the manifest's multiple of the reference-vs-reference floor, and far below noise."""
    from gctm_mini.evaluation import generate, rfd
    from gctm_mini.images import PhotoPatches

    e = ENTRIES[name]
    model = load_shipped(name)
    assert shipped_path(name).stat().st_size < 4_000_000
    ref = PhotoPatches("test").images
    ref = ref[torch.randperm(len(ref), generator=torch.Generator().manual_seed(0))[:512]]
    floor = rfd(ref[:256], ref[256:])
    x = generate(model, 256, e["nfe"], batch=128)
    score = rfd(x, ref[:256])
    noise = rfd(torch.randn(256, 3, 32, 32).clamp(-1, 1), ref[:256])
    assert score <= e["max_rfd_ratio"] * floor and score < 0.25 * noise, (score, floor, noise)


def test_unknown_shipped_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown shipped checkpoint"):
        load_shipped("gan_moons")


def test_bcm_inversion_round_trip_error_shrinks_with_nfe():
    model = load_shipped("bcm_moons")
    x0 = make_dataset("moons")(2000, torch.Generator().manual_seed(0))
    errs = []
    for k in (1, 2, 4, 8):
        _, back = bcm_round_trip(model, x0, k, generator=torch.Generator().manual_seed(1))
        errs.append(float((back - x0).norm(dim=1).mean()))
    assert errs[0] > errs[1] > errs[2] > errs[3], errs
    assert errs[3] < 0.5 * errs[0]
    z = bcm_invert(model, x0, 2, generator=torch.Generator().manual_seed(1))
    assert abs(float(z.std()) - 1.0) < 0.15  # inverted points look like the N(0, I) source


def test_flow_map_explorer_updates_headless_and_matches_the_exact_map():
    explorer = FlowMapExplorer(load_shipped("gctm_gmm"), make_dataset("gmm"), n=300)
    for t, s, gamma, steps in (
        (1.0, 0.0, 0.0, 1),
        (0.8, 0.3, 0.0, 2),
        (0.6, 0.6, 0.0, 1),
        (1.0, 0.0, 1.0, 4),
    ):
        r = explorer.update(t, s, gamma, steps)
        assert r.jump.shape == (300, 2) and torch.isfinite(r.jump).all()
        assert r.jump_error is not None and r.ode_error is not None
        if gamma == 0.0:
            assert r.jump_error < 0.2, (t, s, r.jump_error)
        assert "→" in r.readout()
    assert explorer.update(0.5, 0.9).s == 0.5  # s > t is clipped to t (forward maps)
    assert explorer.fig is not None


def test_gamma_and_coupling_explorers_update_headless():
    from gctm_mini.widgets import CouplingExplorer, GammaExplorer

    g = GammaExplorer(load_shipped("gctm_moons"), make_dataset("moons"), n=300)
    a, b = g.update(gamma=0.0, nfe=1), g.update(gamma=1.0, nfe=4)
    assert "W2" in a and a != b
    c = CouplingExplorer(make_dataset("moons"), n=32)
    texts = {c.update(coupling=k, reg=0.05) for k in ("independent", "ot", "sinkhorn")}
    assert len(texts) == 3
    cost = {k: float(c.update(coupling=k).split("= ")[-1]) for k in ("independent", "ot")}
    assert cost["ot"] < cost["independent"]


def test_widgets_build_their_controls():
    from gctm_mini.widgets import CouplingExplorer

    box = CouplingExplorer(make_dataset("moons"), n=16).widget()
    assert len(box.children) == 3  # controls, read-out, figure
