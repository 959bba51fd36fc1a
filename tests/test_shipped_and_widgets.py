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
    rep = quality_by_nfe(sampler, make_dataset(e["data"]), [e["nfe"]], n=2048, seeds=4)
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


def _explorers():
    from gctm_mini.widgets import CouplingExplorer, GammaExplorer

    return [
        FlowMapExplorer(load_shipped("gctm_gmm"), make_dataset("gmm"), n=50),
        GammaExplorer(load_shipped("gctm_moons"), make_dataset("moons"), n=50),
        CouplingExplorer(make_dataset("moons"), n=16),
    ]


def test_widget_sliders_redraw_on_release_not_while_dragging():
    import ipywidgets as w

    for explorer in _explorers():
        controls = explorer.widget().children[0].children
        sliders = [
            c for c in controls if isinstance(c, (w.FloatSlider, w.IntSlider, w.FloatLogSlider))
        ]
        assert sliders, type(explorer).__name__
        assert all(s.continuous_update is False for s in sliders), type(explorer).__name__


def test_moving_a_widget_slider_redraws_the_readout_and_the_figure():
    """Setting a control's value (what the front end does on release) redraws once."""
    import ipywidgets as w

    from gctm_mini.widgets import GammaExplorer

    box = GammaExplorer(load_shipped("gctm_moons"), make_dataset("moons"), n=100).widget()
    (controls, label, image) = box.children
    assert isinstance(label, w.Label) and isinstance(image, w.Image)
    before, png = label.value, bytes(image.value)
    assert "NFE = 1:" in before and png.startswith(b"\x89PNG")
    controls.children[1].value = 2  # the NFE slider
    assert "NFE = 2:" in label.value and bytes(image.value) != png
    assert image.width == "450"  # shown at its own size (5 in at 90 dpi), not stretched


# The public traits of the ipywidgets 7.6.5 classes, read from ipywidgets 7.6.5 itself
# (`sorted(n for n in cls.class_trait_names() if not n.startswith("_"))`). Colab's front end
# runs ipywidgets 7: a keyword or class that 7.6 lacks would break the widgets there.
IPYWIDGETS_7_6 = {
    "FloatSlider": "continuous_update description description_tooltip disabled layout max min orientation readout readout_format step style value",
    "IntSlider": "continuous_update description description_tooltip disabled layout max min orientation readout readout_format step style value",
    "FloatLogSlider": "base continuous_update description description_tooltip disabled layout max min orientation readout readout_format step style value",
    "Dropdown": "description description_tooltip disabled index label layout options style value",
    "Label": "description description_tooltip layout placeholder style value",
    "Image": "format height layout value width",
    "VBox": "box_style children layout",
    "HBox": "box_style children layout",
}


def test_widgets_use_only_what_ipywidgets_7_6_has():
    import ast
    import inspect

    import gctm_mini.widgets as mod

    used: dict[str, set[str]] = {}
    for node in ast.walk(ast.parse(inspect.getsource(mod))):
        f = node.func if isinstance(node, ast.Call) else None
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "w":
            used.setdefault(f.attr, set()).update(k.arg for k in node.keywords if k.arg)
    assert {"FloatSlider", "IntSlider", "Image", "Label"} <= set(used), used
    for name, kwargs in used.items():
        assert name in IPYWIDGETS_7_6, f"ipywidgets 7.6 compatibility of w.{name} is not recorded"
        missing = kwargs - set(IPYWIDGETS_7_6[name].split())
        assert not missing, (
            f"w.{name}({', '.join(sorted(missing))}=…) does not exist in ipywidgets 7.6"
        )
