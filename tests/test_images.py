"""Images: data loaders on data the tests create, the two-time U-Net, configs, training that
resumes exactly after SIGKILL, and data-parallel equivalence (2 gloo processes vs 1)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from gctm_mini.checkpoint import CheckpointError, load_checkpoint, load_raw
from gctm_mini.images import ImageFolder, PairedFolder, PhotoPatches, cifar10, lfw_faces, to_uint8
from gctm_mini.train_images import CONFIGS, make_config, train_images
from gctm_mini.unet import UNET_PRESETS, TwoTimeUNet, count_parameters

MICRO = [
    "net=tiny",
    "model_channels=16",
    "num_blocks=1",
    "channel_mult=1,2",
    "attn_resolutions=8",
    "batch_size=8",
    "image_size=16",
    "log_every=1",
    "sample_every=0",
]


def write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_photo_patches_are_offline_in_range_and_split_by_photo():
    train, test = PhotoPatches("train"), PhotoPatches("test")
    assert train.images.shape[1:] == (3, 32, 32) and len(train) > 1000 and len(test) > 100
    assert train.images.min() >= -1 and train.images.max() <= 1
    assert "chelsea" in test.describe() and "chelsea" not in train.describe()
    with pytest.raises(ValueError, match="split"):
        PhotoPatches("val")


def test_lfw_faces_ship_with_scikit_image():
    faces = lfw_faces(32)
    assert faces.images.shape == (200, 3, 32, 32) and "LFW" in faces.describe()


def test_image_folder_reads_and_resizes_what_the_test_wrote(tmp_path):
    rng = np.random.default_rng(0)
    for k in range(3):
        write_png(tmp_path / "sub" / f"{k}.png", rng.integers(0, 255, (40, 50, 3), dtype=np.uint8))
    ds = ImageFolder(tmp_path, size=16)
    assert (
        len(ds) == 3
        and ds[0].shape == (3, 16, 16)
        and -1 <= float(ds[0].min()) <= float(ds[0].max()) <= 1
    )
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        ImageFolder(tmp_path / "empty")


def test_paired_folder_puts_the_left_half_in_the_source(tmp_path):
    a = np.zeros((16, 16, 3), dtype=np.uint8)  # left: black = A = source X1
    b = np.full((16, 16, 3), 255, dtype=np.uint8)  # right: white = B = target X0
    b[:, :8] = 128  # asymmetric, to see the flip
    write_png(tmp_path / "p.png", np.concatenate([a, b], axis=1))
    ds = PairedFolder(tmp_path, size=16)
    x0, x1 = ds.pair(0)
    assert float(x1.max()) == -1.0 and float(x0.mean()) > 0
    f0, f1 = ds.pair(0, flip=True)
    assert torch.equal(f0, x0.flip(-1)) and torch.equal(f1, x1.flip(-1))


def test_cifar10_loader_reads_local_files_and_explains_when_missing(tmp_path, monkeypatch):
    import pickle

    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        with open(base / name, "wb") as f:
            pickle.dump(
                {"data": rng.integers(0, 255, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]},
                f,
            )
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["a"] * 10}, f)
    import torchvision.datasets.cifar as tvc

    # the stand-in files have other checksums than the real archive
    monkeypatch.setattr(tvc, "check_integrity", lambda *a, **k: True)
    monkeypatch.setattr(tvc.CIFAR10, "_check_integrity", lambda self: True)
    ds = cifar10(tmp_path, train=True)
    monkeypatch.undo()
    assert ds.images.shape == (20, 3, 32, 32)
    with pytest.raises(FileNotFoundError, match="CIFAR-10 not found"):
        cifar10(tmp_path / "nothing", train=True, download=False)


def test_to_uint8_round_trips():
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    assert torch.equal(to_uint8(x.float() / 127.5 - 1), x)


@pytest.mark.parametrize("preset", list(UNET_PRESETS))
def test_unet_presets_build_and_keep_the_shape(preset):
    net = TwoTimeUNet(32, 3, 3, **UNET_PRESETS[preset])
    n = count_parameters(net)
    if preset == "tiny":
        assert 1e6 <= n <= 3e6, n
    if preset == "paper":
        assert 60e6 <= n <= 90e6, n
    x = torch.randn(2, 3, 32, 32)
    c = torch.tensor([0.1, -0.3])
    out = net(x, c, c - 0.2)
    assert out.shape == x.shape
    assert torch.equal(out, torch.zeros_like(out))  # zero-initialized output layer


def test_unet_depends_on_both_times():
    net = TwoTimeUNet(
        16,
        3,
        3,
        model_channels=16,
        channel_mult=(1, 2),
        num_blocks=1,
        attn_resolutions=(8,),
        dropout=0.0,
    )
    for p in net.parameters():  # leave the zero initialization to see the time paths
        torch.nn.init.normal_(p, std=0.05)
    x, c = torch.randn(1, 3, 16, 16), torch.tensor([0.2])
    a = net(x, c, c)
    assert not torch.allclose(a, net(x, c + 0.5, c)) and not torch.allclose(a, net(x, c, c - 0.5))


def test_configs_and_overrides():
    cfg = make_config("patches_cpu", ["steps=40", "ckpt_every=10", "lr=1e-3", "compile=false"])
    assert cfg.steps == 40 and cfg.ckpt_every == 10 and cfg.lr == 1e-3 and cfg.compile is False
    for name in CONFIGS:
        make_config(name)
    with pytest.raises(ValueError, match="unknown config key"):
        make_config("patches_cpu", ["stepz=3"])
    with pytest.raises(ValueError, match="unknown config"):
        make_config("imagenet")
    with pytest.raises(ValueError, match="key=value"):
        make_config("patches_cpu", ["steps"])
    with pytest.raises(ValueError, match="cannot read"):
        make_config("patches_cpu", ["steps=many"])


def test_source_atom_only_for_deterministic_restoration_couplings():
    """SR and deblurring (ε = 0, noiseless H) train the velocity at t = 1; the others do not."""
    for task in ("sr2", "sr4", "deblur"):
        cfg = make_config(f"{task}_cpu")
        assert cfg.eps == 0.0 and cfg.fm_source_prob > 0
    for task in ("inpaint", "colorize", "edges"):
        assert make_config(f"{task}_cpu").fm_source_prob == 0.0
    assert make_config("patches_cpu").fm_source_prob == 0.0
    with pytest.raises(ValueError, match="fm_source_prob"):
        make_config("sr2_cpu", ["fm_source_prob=1.5"]).validate()


@pytest.mark.slow
def test_paper_config_builds_and_runs_two_steps_on_cpu(tmp_path):
    cfg = make_config(
        "cifar10",
        [
            "data=patches",
            "steps=2",
            "batch_size=2",
            "ckpt_every=1",
            "sample_every=0",
            "log_every=1",
        ],
    )
    res = train_images(cfg, tmp_path, progress=False, device="cpu")
    assert len(res.history) == 2 and all(np.isfinite(r["loss"]) for r in res.history)
    assert load_raw(tmp_path)["step"] == 2


def run_cli(args, **kw):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(
        [sys.executable, "-m", "gctm_mini", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def losses(path):
    rows = (path / "log.csv").read_text().strip().splitlines()[1:]
    return [float(r.split(",")[1]) for r in rows]


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_same_losses_as_an_uninterrupted_run(tmp_path):
    sets = [a for m in MICRO + ["steps=30", "ckpt_every=10"] for a in ("--set", m)]
    full = run_cli(
        ["train", "--config", "patches_cpu", *sets, "--out", str(tmp_path / "full"), "--quiet"]
    )
    assert full.wait(timeout=600) == 0, full.stderr.read()
    victim = run_cli(
        ["train", "--config", "patches_cpu", *sets, "--out", str(tmp_path / "cut"), "--quiet"]
    )
    deadline = time.time() + 600
    while time.time() < deadline:
        try:
            if load_raw(tmp_path / "cut")["step"] >= 10:
                break
        except (FileNotFoundError, CheckpointError):
            pass
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    step = load_raw(tmp_path / "cut")["step"]
    assert 10 <= step < 30 or step == 30
    # the killed run's lock file stays behind, unlocked: the resume takes it over
    assert (tmp_path / "cut" / ".lock").read_text().strip() == str(victim.pid)
    resumed = run_cli(
        [
            "train",
            "--config",
            "patches_cpu",
            *sets,
            "--out",
            str(tmp_path / "cut"),
            "--resume",
            "--quiet",
        ]
    )
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    assert not (tmp_path / "cut" / ".lock").exists()
    assert losses(tmp_path / "cut") == losses(tmp_path / "full")
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "cut")
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_an_existing_run_is_not_overwritten_without_resume(tmp_path):
    cfg = make_config("patches_cpu", MICRO + ["steps=2", "ckpt_every=2"])
    train_images(cfg, tmp_path, progress=False, device="cpu")
    with pytest.raises(ValueError, match="--resume"):
        train_images(cfg, tmp_path, progress=False, device="cpu")
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        train_images(cfg, tmp_path, resume=True, progress=False, device="cpu")


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_at_the_same_global_batch(tmp_path):
    sets = [a for m in MICRO + ["steps=4", "ckpt_every=4", "coupling=ot"] for a in ("--set", m)]
    one = run_cli(
        ["train", "--config", "patches_cpu", *sets, "--out", str(tmp_path / "one"), "--quiet"]
    )
    assert one.wait(timeout=600) == 0, one.stderr.read()
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "gctm_mini",
            "train",
            "--config",
            "patches_cpu",
            *sets,
            "--out",
            str(tmp_path / "two"),
            "--quiet",
            "--device",
            "cpu",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    np.testing.assert_allclose(losses(tmp_path / "two"), losses(tmp_path / "one"), rtol=1e-4)
    cfg = json.loads((tmp_path / "two" / "config.json").read_text())
    assert cfg["batch_size"] == 8


def test_gradient_accumulation_and_channels_last_match_the_plain_step():
    def run(*extra):
        cfg = make_config("patches_cpu", MICRO + ["steps=3", "ckpt_every=3", "coupling=ot", *extra])
        return train_images(cfg, None, progress=False, device="cpu")

    plain, accum, cl = run(), run("grad_accum=2"), run("channels_last=true")
    for other in (accum, cl):
        np.testing.assert_allclose(
            [r["loss"] for r in other.history], [r["loss"] for r in plain.history], rtol=1e-4
        )


@pytest.mark.slow
def test_an_image_run_with_a_huge_learning_rate_stops_and_keeps_the_last_finite_checkpoint(
    tmp_path, capsys
):
    from gctm_mini.cli import main

    sets = MICRO + ["steps=6", "ckpt_every=1", "lr=1e6"]
    args = ["train", "--config", "patches_cpu", *[a for m in sets for a in ("--set", m)]]
    assert main([*args, "--out", str(tmp_path), "--device", "cpu", "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: training diverged at step 3: non-finite loss term"), err
    assert "lower lr (now 1e+06)" in err and "step 2" in err and len(err.splitlines()) == 1
    state = load_raw(tmp_path)
    assert state["step"] == 2
    for key in ("model", "ema"):
        assert all(torch.isfinite(v).all() for v in state[key].values())
    assert all(np.isfinite(r["loss"]) for r in state["history"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "config.json", "log.csv"]


ONE_RANK_DIVERGES = """
import os, sys
import gctm_mini.methods as methods
from gctm_mini.cli import main

loss = methods.TrainingMethod.loss
def nan_on_rank_1(self, model, ema, x0, x1, step, rng=None):
    value, logs = loss(self, model, ema, x0, x1, step, rng)
    if step == 2 and os.environ["RANK"] == "1":
        return value * float("nan"), {**logs, "fm": float("nan")}
    return value, logs
methods.TrainingMethod.loss = nan_on_rank_1
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_divergence_on_one_process_stops_every_process_at_the_same_step(tmp_path):
    script = tmp_path / "one_rank_diverges.py"
    script.write_text(ONE_RANK_DIVERGES)
    sets = [a for m in MICRO + ["steps=6", "ckpt_every=1"] for a in ("--set", m)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(script),
            "train",
            "--config",
            "patches_cpu",
            *sets,
            "--out",
            str(tmp_path / "run"),
            "--quiet",
            "--device",
            "cpu",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode != 0
    assert "error: training diverged at step 3: non-finite loss term fm = nan" in r.stderr
    assert "error: training diverged at step 3: non-finite loss on another process" in r.stderr
    assert load_raw(tmp_path / "run")["step"] == 2


def test_a_warm_start_across_couplings_keeps_the_weights_but_this_couplings_moments():
    from gctm_mini.assets import load_shipped
    from gctm_mini.train_images import (
        build_image_data,
        estimate_image_moments,
        make_config,
        train_images,
    )

    cfg = make_config("mnist_sr4", ["steps=1", "ckpt_every=1"])
    run = train_images(cfg, None, progress=False, device="cpu")
    own = estimate_image_moments(cfg, build_image_data(cfg))
    shipped = load_shipped("mnist_gctm")
    for k in ("v0", "v1", "v01"):
        assert torch.allclose(
            getattr(run.model, k), getattr(own, k).expand_as(getattr(run.model, k))
        )
    assert not torch.allclose(run.model.v01, shipped.v01.float())  # paired ≠ OT moments
    # the weights started from the shipped model: one Adam step moves each by at most ~lr
    w, w0 = run.model.net.state_dict(), shipped.net.state_dict()
    assert max((w[k] - w0[k].float()).abs().max().item() for k in w) < 5 * cfg.lr
