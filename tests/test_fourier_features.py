"""Random Fourier features of x in the 2D MLP (``x_fourier``): the input they build, the fixed
frequencies, the boundary condition through them, the 2D default that turns them on, and
checkpoints with and without them."""

import math
import shlex
from dataclasses import asdict, replace

import pytest
import torch

from gctm_mini.assets import load_shipped, manifest
from gctm_mini.checkpoint import load_checkpoint, load_raw
from gctm_mini.cli import _config_from, build_parser
from gctm_mini.methods import DEFAULT_X_FOURIER_2D
from gctm_mini.models import build_model, mlp_spec
from gctm_mini.networks import X_FREQ_SEED, RandomFourierFeatures, TwoTimeMLP
from gctm_mini.parameterization import CouplingMoments
from gctm_mini.training import Toy2DConfig, model_spec, train2d


def test_features_are_x_then_sin_and_cos_of_fixed_gaussian_frequencies():
    torch.manual_seed(123)  # the global RNG does not enter B
    feats = RandomFourierFeatures(2, 16, 3.0)
    torch.manual_seed(7)
    again = RandomFourierFeatures(2, 16, 3.0)
    b = 3.0 * torch.randn(2, 16, generator=torch.Generator().manual_seed(X_FREQ_SEED))
    assert torch.equal(feats.freqs, b) and torch.equal(again.freqs, b)
    x = torch.randn(5, 2)
    z = 2 * math.pi * x @ b
    out = feats(x)
    assert out.shape == (5, 2 + 32) == (5, feats.out_dim)
    torch.testing.assert_close(out, torch.cat([x, z.sin(), z.cos()], dim=1))


def test_mlp_reads_the_features_in_place_of_x_and_without_them_is_unchanged():
    torch.manual_seed(0)
    net = TwoTimeMLP(2, 32, 2, emb_dim=8, x_fourier=3.0, x_freqs=16)
    assert net.body[0].in_features == 2 + 32 + 2 * 8
    torch.nn.init.normal_(net.out.weight)
    x, c = torch.randn(6, 2), torch.rand(6)
    h = torch.cat([net.x_features(x), net.embed(c), net.embed(c)], dim=1)
    torch.testing.assert_close(net(x, c, c), net.out(net.body(h)))
    assert "x_features.freqs" in net.state_dict()  # checkpoints carry B
    torch.manual_seed(0)
    plain = TwoTimeMLP(2, 32, 2, emb_dim=8)
    assert plain.x_features is None and plain.body[0].in_features == 2 + 2 * 8
    assert not any("x_features" in k for k in plain.state_dict())


def test_boundary_condition_holds_through_the_features():
    torch.manual_seed(0)
    model = build_model(mlp_spec(2, 32, 2, x_fourier=3.0), CouplingMoments(0.5, 1.0, 0.1))
    torch.nn.init.normal_(model.net.out.weight, std=0.5)
    x = 2 * torch.randn(64, 2)
    for t in (1.0, 0.7, 0.01):
        assert torch.equal(model.G(x, t, t), x)
    assert not torch.equal(model.G(x, 1.0, 0.0), x)  # and the network is in use


def test_spec_without_the_key_is_the_spec_before_the_option():
    spec = mlp_spec(2, 32, 2)
    assert "x_fourier" not in spec["net_kwargs"]
    assert mlp_spec(2, 32, 2, x_fourier=0.0) == spec
    assert mlp_spec(2, 32, 2, x_fourier=2.0)["net_kwargs"]["x_fourier"] == 2.0
    for name in ("gctm_moons", "fm_moons"):  # shipped before the option: still x alone
        assert load_shipped(name).net.x_features is None


@pytest.mark.parametrize("bad", [-1.0, 1e4, float("nan"), "3"])
def test_a_bad_sigma_in_a_spec_is_one_line(bad):
    spec = mlp_spec(2, 8, 1)
    spec["net_kwargs"]["x_fourier"] = bad
    with pytest.raises(ValueError, match="x_fourier") as err:
        build_model(spec)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("kw", "sigma"),
    [
        ({"method": "gctm", "coupling": "ot"}, DEFAULT_X_FOURIER_2D),  # measured there
        ({"method": "gctm"}, 0.0),  # independent coupling: unmeasured
        ({"method": "gctm", "coupling": "ot", "source": "8gaussians"}, 0.0),  # translation
        ({"method": "fm", "coupling": "ot"}, 0.0),  # other methods keep x alone
        ({"method": "ctm", "coupling": "ot"}, 0.0),
        ({"method": "gctm", "coupling": "ot", "x_fourier": 0.0}, 0.0),  # explicit values kept
        ({"method": "fm", "x_fourier": 1.5}, 1.5),
    ],
)
def test_auto_x_fourier_resolves_per_source_coupling_and_method(kw, sigma):
    cfg = Toy2DConfig(**kw).validate()
    assert cfg.x_fourier == sigma
    assert cfg == replace(cfg).validate()  # resolving is idempotent: a stored config is final
    assert model_spec(cfg)["net_kwargs"].get("x_fourier", 0.0) == sigma


@pytest.mark.parametrize("bad", [-0.5, 2000.0, float("inf"), "3"])
def test_a_bad_x_fourier_in_the_config_is_one_line(bad):
    with pytest.raises(ValueError, match="x_fourier") as err:
        Toy2DConfig(method="gctm", x_fourier=bad).validate()
    assert "\n" not in str(err.value)


def test_a_run_with_features_saves_them_and_resumes_exactly(tmp_path):
    cfg = Toy2DConfig(
        method="gctm", coupling="ot", steps=8, batch_size=32, hidden=16, depth=1, ckpt_every=2
    )
    full = train2d(cfg, tmp_path / "full", progress=False)
    assert full.model.net.x_features is not None
    train2d(cfg, tmp_path / "split", progress=False, stop_after=4)
    resumed = train2d(cfg, tmp_path / "split", progress=False)
    assert [r["loss"] for r in full.history] == [r["loss"] for r in resumed.history]
    for a, b in zip(full.ema.state_dict().values(), resumed.ema.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    raw = load_raw(tmp_path / "full")
    assert raw["spec"]["net_kwargs"]["x_fourier"] == DEFAULT_X_FOURIER_2D
    assert raw["config"]["x_fourier"] == DEFAULT_X_FOURIER_2D
    loaded = load_checkpoint(tmp_path / "full")
    x = torch.randn(16, 2)
    assert torch.equal(loaded.G(x, 1.0, 0.0), full.ema.G(x, 1.0, 0.0))


@pytest.mark.parametrize(
    "name", [k for k, e in manifest().items() if e["kind"] == "2d"], ids=lambda k: k
)
def test_shipped_2d_regeneration_commands_rebuild_the_shipped_config_and_network(name):
    """The manifest's train2d command, parsed as the CLI parses it, gives the shipped file's
    model spec and, on every key the file records, its config (later knobs pinned where their
    auto value would differ; GCTM's λ, whose default changed, is read by GCTM alone)."""
    train = shlex.split(manifest()[name]["command"].split("&&")[0])
    args = build_parser().parse_args(train[train.index("train2d") :])
    args.prog = "gctm_mini"
    cfg = _config_from(args)
    shipped = load_shipped(name)
    assert model_spec(cfg) == shipped.spec
    now, then = asdict(cfg), dict(shipped.train_config)
    if cfg.method != "gctm":
        del now["lam"], then["lam"]
    assert {k: now[k] for k in then} == then
