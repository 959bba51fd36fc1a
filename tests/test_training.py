import json
import os
import subprocess
import sys

import pytest
import torch

from gctm_mini.checkpoint import CheckpointError, load_checkpoint, load_raw, save_checkpoint
from gctm_mini.cli import main as cli_main
from gctm_mini.data2d import make_dataset
from gctm_mini.oracle import GaussianMixtureOracle
from gctm_mini.training import Toy2DConfig, train2d


@pytest.mark.slow
def test_fm_learns_the_exact_gaussian_mixture_velocity():
    """Relative error E‖v_θ − v‖ / E‖v‖ over x ~ p_t stays below 12 % at every tested t."""
    res = train2d(Toy2DConfig(data="gmm", steps=4000, hidden=128, depth=3), progress=False)
    oracle = GaussianMixtureOracle(make_dataset("gmm"))
    for t in (0.1, 0.25, 0.5, 0.75, 1.0):
        x = oracle.sample_xt(4000, t, torch.Generator().manual_seed(5))
        exact = oracle.velocity(x, t).float()
        learned = res.ema.velocity(x, t)
        rel = float((learned - exact).norm(dim=1).mean() / exact.norm(dim=1).mean())
        assert rel < 0.12, (t, rel)


def small_cfg(**kw) -> Toy2DConfig:
    base = dict(steps=40, batch_size=64, hidden=32, depth=2, ckpt_every=10, log_every=5)
    base.update(kw)
    return Toy2DConfig(**base)


@pytest.mark.parametrize("coupling", ["independent", "ot", "sinkhorn"])
def test_resumed_run_equals_uninterrupted_run(tmp_path, coupling):
    cfg = small_cfg(coupling=coupling)
    full = train2d(cfg, tmp_path / "full", progress=False)
    train2d(cfg, tmp_path / "split", progress=False, stop_after=20)
    assert load_raw(tmp_path / "split")["step"] == 20
    resumed = train2d(cfg, tmp_path / "split", progress=False)
    for a, b in zip(
        full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    for a, b in zip(full.ema.state_dict().values(), resumed.ema.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [r["loss"] for r in full.history] == [r["loss"] for r in resumed.history]


def test_resume_refuses_a_different_config(tmp_path):
    train2d(small_cfg(steps=10), tmp_path, progress=False)
    with pytest.raises(ValueError, match="different config"):
        train2d(small_cfg(steps=10, lr=1e-4), tmp_path, progress=False)


def test_checkpoint_is_atomic_and_load_returns_ema_model(tmp_path):
    res = train2d(small_cfg(), tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "config.json", "log.csv"]
    model = load_checkpoint(tmp_path)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    x = torch.randn(8, 2)
    assert torch.equal(model.G(x, 0.7, 0.2), res.ema.G(x, 0.7, 0.2))
    assert model.velocity(x, 0.5).shape == (8, 2)


def test_truncated_or_foreign_checkpoints_are_refused(tmp_path):
    train2d(small_cfg(steps=10), tmp_path / "run", progress=False)
    raw = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="truncated or foreign"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="format tag"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing")


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, {"spec": {}, "ema": {}, "step": 1})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, {"spec": {}, "ema": {}, "step": 2})
    monkeypatch.undo()
    assert load_raw(tmp_path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"method": "ddpm"}, "unknown method"),
        ({"data": "mnist"}, "unknown dataset"),
        ({"coupling": "greedy"}, "unknown coupling"),
        ({"steps": -1}, "steps"),
    ],
)
def test_bad_config_is_rejected(kw, match):
    with pytest.raises(ValueError, match=match):
        small_cfg(**kw).validate()


def test_cli_train2d_then_eval2d_writes_readable_json(tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        cli_main(
            [
                "train2d",
                "--method",
                "fm",
                "--data",
                "moons",
                "--coupling",
                "ot",
                "--steps",
                "30",
                "--hidden",
                "32",
                "--depth",
                "2",
                "--seed",
                "1",
                "--out",
                str(run),
                "--quiet",
            ]
        )
        == 0
    )
    out = tmp_path / "eval.json"
    assert (
        cli_main(
            ["eval2d", str(run), "--nfe", "1,4", "--n", "256", "--seeds", "2", "--json", str(out)]
        )
        == 0
    )
    res = json.loads(out.read_text())
    assert res["n"] == 256 and res["seeds"] == 2 and res["floor"] > 0
    assert set(res["w2"]) == {"1", "4"} and all(v > 0 for v in res["w2"].values())
    assert "NFE" in capsys.readouterr().out


def test_cli_reports_bad_names_without_a_traceback(capsys):
    assert cli_main(["train2d", "--data", "mnist", "--out", "/tmp/x", "--quiet"]) == 2
    assert "unknown dataset 'mnist'" in capsys.readouterr().err
    assert cli_main(["eval2d", "/nonexistent/run"]) == 2


def test_module_entry_point_runs():
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    r = subprocess.run(
        [sys.executable, "-m", "gctm_mini", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 0 and "demo" in r.stdout and "train2d" in r.stdout


@pytest.mark.parametrize("method", ["cd", "ct", "ctm", "gctm", "bcm"])
def test_every_method_trains_resumes_and_evaluates(tmp_path, method):
    teacher = train2d(small_cfg(steps=20), progress=False).ema if method in ("cd", "ctm") else None
    cfg = small_cfg(method=method, steps=20)
    full = train2d(cfg, tmp_path / "full", progress=False, teacher=teacher)
    train2d(cfg, tmp_path / "split", progress=False, stop_after=10, teacher=teacher)
    resumed = train2d(cfg, tmp_path / "split", progress=False, teacher=teacher)
    for a, b in zip(full.ema.state_dict().values(), resumed.ema.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    out = tmp_path / "eval.json"
    assert (
        cli_main(
            [
                "eval2d",
                str(tmp_path / "full"),
                "--nfe",
                "1,2",
                "--n",
                "128",
                "--seeds",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads(out.read_text())
    assert res["method"] == method and set(res["w2"]) == {"1", "2"}
    assert load_checkpoint(tmp_path / "full").bidirectional == (method == "bcm")


def test_cd_without_teacher_trains_one_into_the_run_directory(tmp_path, capsys):
    cfg = small_cfg(method="cd", steps=10)
    import gctm_mini.training as tr

    orig = dict(tr.DEFAULT_STEPS_2D)
    tr.DEFAULT_STEPS_2D["fm"] = 10  # keep the automatic teacher short in this test
    try:
        train2d(cfg, tmp_path, progress=False)
    finally:
        tr.DEFAULT_STEPS_2D.update(orig)
    assert (tmp_path / "teacher" / "checkpoint.pt").exists()
    assert "training an FM teacher" in capsys.readouterr().out


def test_callback_rows_are_recorded_and_do_not_change_training():
    cfg = small_cfg(steps=20)
    plain = train2d(cfg, progress=False)
    seen = train2d(
        cfg, progress=False, callback=lambda k, m: {"r": float(torch.rand(()))}, callback_every=5
    )
    assert [e["step"] for e in seen.evals] == [5, 10, 15, 20]
    for a, b in zip(plain.ema.state_dict().values(), seen.ema.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_translation_between_two_2d_data_sets(tmp_path):
    cfg = small_cfg(method="gctm", data="moons", source="8gaussians", coupling="ot", eps=0.05)
    res = train2d(cfg, tmp_path, progress=False)
    x1 = make_dataset("8gaussians")(16)
    assert res.ema.G(x1, 1.0, 0.0).shape == (16, 2)
    assert cli_main(["eval2d", str(tmp_path), "--nfe", "1", "--n", "128", "--seeds", "1"]) == 0


def test_demo_runs_end_to_end_on_a_small_budget(tmp_path, capsys):
    from gctm_mini.demo import run_demo

    res = run_demo(tmp_path, steps=30, n=128, seeds=1, progress=False)
    assert set(res) >= {"fm_euler", "fm_heun", "gctm", "floor"} and res["floor"] > 0
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    assert "GCTM (OT)" in capsys.readouterr().out


def test_write_csv_keeps_first_seen_columns_leaves_gaps_blank_and_no_temporary(tmp_path):
    import csv

    from gctm_mini.checkpoint import write_csv

    path = write_csv(tmp_path / "t.csv", [{"a": 1, "b": 2.5}, {"a": 3, "c": "x"}])
    with path.open() as f:
        rows = list(csv.reader(f))
    assert rows == [["a", "b", "c"], ["1", "2.5", ""], ["3", "", "x"]]
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]
    with pytest.raises(ValueError, match="no rows"):
        write_csv(tmp_path / "empty.csv", [])


def test_toy_config_rejects_a_source_atom_outside_0_1():
    with pytest.raises(ValueError, match="fm_source_prob"):
        Toy2DConfig(method="gctm", fm_source_prob=-0.1).validate()
