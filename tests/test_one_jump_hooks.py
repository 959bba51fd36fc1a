"""The one-jump study's variants (``benchmarks/one_jump.py``): config overrides over a pinned
base, and screen hooks for knobs that are not config fields, applied inside a job's own
process."""

import pytest
import torch

import gctm_mini.consistency as cons
import gctm_mini.training as training
from gctm_mini.models import build_model
from gctm_mini.training import Toy2DConfig, model_spec


@pytest.fixture(scope="module")
def one_jump(load_script):
    return load_script("benchmarks/one_jump.py", "one_jump_benchmark")


def test_fourier_variants_are_config_fields_over_a_base_that_pins_x_alone(one_jump):
    base = Toy2DConfig(**{**one_jump.BASE, "data": "moons"}).validate()
    assert base.x_fourier == 0.0  # the earlier defaults stay x alone under the new auto value
    over = one_jump.parse_variant("xff3")
    cfg = Toy2DConfig(**{**one_jump.BASE, **over, "data": "moons"}).validate()
    assert model_spec(cfg)["net_kwargs"]["x_fourier"] == 3.0


def test_the_defaults_variant_is_the_package_default_run(one_jump):
    over = one_jump.parse_variant("defaults")
    for data in ("moons", "checkerboard"):
        cfg = Toy2DConfig(**{**one_jump.BASE, **over, "data": data}).validate()
        assert cfg == Toy2DConfig(method="gctm", coupling="ot", data=data).validate()


def test_huber_c_hook_sets_the_2d_pseudo_huber_c(one_jump, monkeypatch):
    monkeypatch.setattr(cons, "HUBER_SCALE", cons.HUBER_SCALE)  # restored afterwards
    monkeypatch.setattr(training, "EMA", training.EMA)
    over = one_jump.parse_variant("hc05")
    one_jump._install_hooks(over)
    assert over == {}
    assert cons.huber_c(torch.zeros(3, 2)) == pytest.approx(0.05)


def test_x_freqs_hook_sets_the_number_of_fourier_frequencies(one_jump, monkeypatch):
    monkeypatch.setattr(training, "model_spec", training.model_spec)  # restored afterwards
    monkeypatch.setattr(training, "EMA", training.EMA)
    over = one_jump.parse_variant("defaults+ff64")
    one_jump._install_hooks(over)
    assert "x_freqs" not in over  # the rest is a plain config
    cfg = Toy2DConfig(**{**one_jump.BASE, **over, "data": "moons"}).validate()
    spec = training.model_spec(cfg)
    assert spec["net_kwargs"]["x_freqs"] == 64 and spec["net_kwargs"]["x_fourier"] == 3.0
    assert build_model(spec).net.x_features.out_dim == 2 + 2 * 64


def test_the_defaults_variant_trains_the_peers_benchmark_gctm_ot_run(one_jump, load_script):
    """So the head-to-head's GCTM-OT scores and the study's ``defaults`` rows are one model's."""
    peers = load_script("benchmarks/peers.py", "peers_benchmark")
    over = one_jump.parse_variant("defaults")
    for data, seed in (("moons", 0), ("checkerboard", 3)):
        cfg = Toy2DConfig(**{**one_jump.BASE, **over, "data": data, "seed": seed}).validate()
        cfg.ckpt_every = cfg.log_every = 10**9  # as run_job sets them
        assert cfg == peers.base_config("gctm_ot", data, seed, quick=False)
        assert one_jump.draws_base(seed) == peers.head_draws_base(seed)


def test_optimizer_hook_sets_adams_beta2_and_clips_the_gradient_norm(one_jump, monkeypatch):
    monkeypatch.setattr(torch.optim, "Adam", torch.optim.Adam)  # restored afterwards
    monkeypatch.setattr(training, "EMA", training.EMA)
    over = one_jump.parse_variant("defaults+b2_99+clip1")
    one_jump._install_hooks(over)
    assert not {"adam_beta2", "grad_clip"} & set(over)
    w = torch.nn.Parameter(torch.zeros(4))
    opt = torch.optim.Adam([w], lr=1e-3)  # what train2d builds, through the module's torch
    assert opt.defaults["betas"] == (0.9, 0.99)
    w.grad = torch.full((4,), 5.0)  # norm 10
    opt.step()
    assert float(w.grad.norm()) == pytest.approx(1.0)


def test_lr_end_hook_ends_the_cosine_schedule_at_the_given_fraction(one_jump, monkeypatch):
    monkeypatch.setattr(training, "lr_factor", training.lr_factor)
    monkeypatch.setattr(training, "EMA", training.EMA)
    cfg = Toy2DConfig(steps=1000)
    assert training.lr_factor(cfg, 1000) == pytest.approx(0.05)  # the package's schedule
    over = one_jump.parse_variant("lrend50")
    one_jump._install_hooks(over)
    assert over == {}
    assert training.lr_factor(cfg, 1000) == pytest.approx(0.5)
    assert training.lr_factor(cfg, 500) == pytest.approx(0.75)
    assert training.lr_factor(cfg, 9) == pytest.approx(0.1, abs=1e-4)  # the warm-up is kept
