"""Bad configuration, command-line and checkpoint input stops with one clear line; the CLI
accepts what the README shows (several KEY=VALUE after one --set, JSON configs)."""

import json
import math
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, fields
from pathlib import Path

import pytest
import torch

from gctm_mini import cli
from gctm_mini.assets import checkpoint_dir, manifest
from gctm_mini.checkpoint import (
    CHECKSUM,
    CheckpointError,
    load_checkpoint,
    load_raw,
    load_resumable,
    load_teacher,
    save_checkpoint,
)
from gctm_mini.models import build_model, mlp_spec
from gctm_mini.train_images import ImageConfig, make_config, train_images
from gctm_mini.training import Toy2DConfig, train2d
from gctm_mini.validation import field_kind

SHIPPED = checkpoint_dir()
MICRO_IMAGE = [
    "model_channels=16",
    "num_blocks=1",
    "channel_mult=1,2",
    "attn_resolutions=8",
    "batch_size=4",
    "image_size=16",
    "log_every=1",
    "sample_every=0",
]


def tiny_2d(**kw) -> Toy2DConfig:
    base = dict(steps=2, batch_size=16, hidden=8, depth=1, ckpt_every=2, log_every=1)
    return Toy2DConfig(**{**base, **kw})


def parse_error(argv, capsys) -> str:
    """Run the CLI on ``argv``, expect a usage error: exit 2 and exactly one line on stderr."""
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err


def run_error(argv, capsys) -> str:
    """Run the CLI on ``argv``, expect a refused input: status 2 and one line on stderr."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err


# --- every config field is declared, described and checked ---------------------------------


@pytest.mark.parametrize("cls", [Toy2DConfig, ImageConfig])
def test_every_config_field_has_a_description_and_every_number_a_range(cls):
    for f in fields(cls):
        assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no description"
        if field_kind(f) in ("int", "float"):
            assert {"ge", "gt", "le", "lt"} & set(f.metadata), f"{f.name} has no range"


def _valid(cls):
    return tiny_2d() if cls is Toy2DConfig else make_config("patches_cpu")


@pytest.mark.parametrize("cls", [Toy2DConfig, ImageConfig])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_or_infinite_value_in_any_float_field_is_rejected(cls, bad):
    floats = [f.name for f in fields(cls) if field_kind(f) == "float"]
    assert len(floats) >= 8
    for name in floats:
        cfg = _valid(cls)
        setattr(cfg, name, bad)
        with pytest.raises(ValueError, match=f"^{name} must be a number"):
            cfg.validate()


@pytest.mark.parametrize(
    "override, match",
    [
        ("eps=-1", r"eps must be a number ≥ 0; got -1.0"),
        ("eps=nan", r"eps must be a number ≥ 0; got nan"),
        ("n_start=0", r"n_start must be an integer ≥ 1; got 0"),
        ("n_cap=2", r"n_cap must be ≥ n_start; got n_start=4, n_cap=2"),
        ("lam=-0.5", r"lam must be a number ≥ 0"),
        ("lam=nan", r"lam must be a number ≥ 0; got nan"),
        ("target_decay=1.5", r"target_decay must be a number in \[0, 1\)"),
        ("target_decay=1", r"target_decay must be a number in \[0, 1\)"),
        ("ema_decay=1", r"ema_decay must be a number in \[0, 1\)"),
        ("fm_source_prob=nan", r"fm_source_prob must be a number in \[0, 1\]"),
        ("sample_every=-1", r"sample_every must be an integer ≥ 0; got -1"),
        ("channel_mult=a,b", r"channel_mult takes positive integers .*got 'a,b'"),
        ("attn_resolutions=0", r"attn_resolutions takes positive integers"),
        ("attn_resolutions=12", r"attn_resolutions must be resolutions of the U-Net"),
        ("image_size=30", r"image_size must be divisible by 2\^2"),
        ("sigma_max=inf", r"sigma_max must be a number > 0.002; got inf"),
        ("sigma_max=0.001", r"sigma_max must be a number > 0.002"),
        ("dropout=1.5", r"dropout must be a number in \[0, 1\) or -1"),
        ("lr=0", r"lr must be a number in \(0, 1e\+38\]"),
        ("batch_size=0", r"batch_size must be an integer ≥ 1"),
        ("grad_accum=3", r"batch_size must be divisible by grad_accum; got 16 and 3"),
        ("seed=-1", r"seed must be an integer in \[0, 2\^63\)"),
        ("model_channels=-8", r"model_channels must be an integer ≥ 0"),
        ("data=folder:", r"data=folder: needs a directory"),
        ("fm_times=normal", r"unknown FM time sampler 'normal'"),
        ("compile=maybe", r"compile takes true or false; got 'maybe'"),
        ("steps=1.5", r"cannot read steps='1.5': expected an integer"),
        ("teacher=runs/fm", r"teacher is used only by cd, ctm; got teacher='runs/fm'"),
    ],
)
def test_bad_image_override_is_one_clear_error(override, match):
    with pytest.raises(ValueError, match=match) as exc:
        make_config("patches_cpu", override.split())
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"lam": math.nan}, "lam must be a number ≥ 0; got nan"),
        ({"ema_decay": 1.0}, r"ema_decay must be a number in \[0, 1\)"),
        ({"target_decay": -0.1}, r"target_decay must be a number in \[0, 1\)"),
        ({"sinkhorn_reg": 0.0}, "sinkhorn_reg must be a number > 0"),
        ({"eps": -0.1}, "eps must be a number ≥ 0"),
        ({"hidden": 0}, "hidden must be an integer ≥ 1"),
        ({"batch_size": 3.5}, "batch_size must be an integer ≥ 1; got 3.5"),
        ({"steps": True}, "steps must be an integer ≥ 0; got True"),
        ({"lr_decay": "ture"}, "lr_decay must be true or false; got 'ture'"),
        ({"n_start": 8, "n_cap": 4}, "n_cap must be ≥ n_start"),
        ({"method": "gctm", "teacher": "runs/fm"}, "teacher is used only by cd, ctm"),
    ],
)
def test_bad_2d_config_is_one_clear_error(kw, match):
    with pytest.raises(ValueError, match=match):
        tiny_2d(**kw).validate()


def test_an_int_given_for_a_float_field_is_stored_as_a_float():
    cfg = tiny_2d(lr=1, lam=2).validate()
    assert type(cfg.lr) is float and type(cfg.lam) is float and cfg.lr == 1.0


def test_amp_on_a_cpu_is_refused_before_training():
    cfg = make_config("patches_cpu", ["amp=fp16"])
    with pytest.raises(ValueError, match="amp=fp16 needs a CUDA device; got device cpu"):
        train_images(cfg, None, progress=False, device="cpu")


# --- the command line ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, match",
    [
        (["train2d", "--lr-decay", "ture", "--out", "x"], "--lr-decay: takes true or false"),
        (["train2d", "--out", ""], "--out: must be a path; got an empty string"),
        (["train", "--config", "patches_cpu", "--out", ""], "--out: must be a path"),
        (["eval2d", "run", "--seeds", "0"], "--seeds: must be an integer ≥ 1; got 0"),
        (["eval2d", "run", "--n", "1"], "--n: must be an integer ≥ 2; got 1"),
        (["eval2d", "run", "--gamma", "2"], r"--gamma: must be a number in \[0, 1\]"),
        (["eval2d", "run", "--json", ""], "--json: must be a path"),
        (["eval", "run", "--num", "1"], "--num: must be an integer ≥ 4; got 1"),
        (["eval", "run", "--batch", "0"], "--batch: must be an integer ≥ 1; got 0"),
        (["eval", "run", "--device", "foo"], "unknown device 'foo'; expected cpu, cuda"),
        (["demo", "--steps", "0"], "--steps: must be an integer ≥ 1"),
    ],
)
def test_bad_arguments_are_one_line_and_status_2(argv, match, capsys):
    err = parse_error(argv, capsys)
    assert err.startswith(f"gctm-mini {argv[0]}: error: argument ")
    assert re.search(match, err), err


def test_a_device_that_is_not_here_is_refused(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    argv = ["train", "--config", "patches_cpu", "--out", "x", "--device"]
    assert "needs a CUDA GPU and there is none here" in parse_error(argv + ["cuda"], capsys)
    assert "needs a CUDA GPU" in parse_error(argv + ["cuda:1"], capsys)
    assert "needs Apple's MPS backend" in parse_error(argv + ["mps"], capsys)
    assert "needs a CUDA GPU" in parse_error(["eval", "run", "--device", "cuda"], capsys)


def test_a_cuda_index_beyond_the_gpus_is_refused(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    err = parse_error(["eval", "run", "--device", "cuda:1"], capsys)
    assert "device 'cuda:1' does not exist: 1 CUDA device(s) here" in err


def test_bad_config_values_at_the_cli_are_one_line_and_status_2(capsys, tmp_path):
    out = str(tmp_path / "run")
    assert "lr must be a number in (0, 1e+38] or 0; got nan" in run_error(
        ["train2d", "--lr", "nan", "--out", out], capsys
    )
    assert "sigma_max must be a number > 0.002; got inf" in run_error(
        ["train", "--config", "patches_cpu", "--set", "sigma_max=inf", "--out", out], capsys
    )
    assert not Path(out).exists()


def test_one_set_takes_several_key_values_and_set_repeats():
    args = cli.build_parser().parse_args(
        ["train", "--config", "sr2_cpu", "--set", "steps=1200", "ckpt_every=300"]
        + ["--set", "lr=3e-4", "--out", "runs/x"]
    )
    assert args.set == ["steps=1200", "ckpt_every=300", "lr=3e-4"] and args.out == "runs/x"
    cfg = make_config(args.config, args.set)
    assert (cfg.steps, cfg.ckpt_every, cfg.lr) == (1200, 300, 3e-4)
    assert make_config("sr2_cpu", ["ckpt-every=300"]).ckpt_every == 300


def test_a_2d_runs_config_json_given_back_reproduces_its_config(tmp_path):
    cfg = tiny_2d(method="gctm", coupling="ot", lam=2.0, lr_decay=False, seed=3)
    train2d(cfg, tmp_path / "run", progress=False)
    path = str(tmp_path / "run" / "config.json")
    args = cli.build_parser().parse_args(["train2d", "--config", path, "--out", "x"])
    assert asdict(cli._config_from(args)) == asdict(cfg)
    args = cli.build_parser().parse_args(
        ["train2d", "--config", path, "--lr", "0.01", "--out", "x"]
    )
    assert asdict(cli._config_from(args)) == {**asdict(cfg), "lr": 0.01}


def test_an_image_runs_config_json_given_back_reproduces_its_config(tmp_path):
    cfg = make_config("patches_cpu", MICRO_IMAGE + ["steps=1", "ckpt_every=1", "eps=0.05"])
    train_images(cfg, tmp_path / "run", progress=False, device="cpu")
    path = str(tmp_path / "run" / "config.json")
    assert make_config(path) == cfg
    assert make_config(path, ["steps=5"]) == make_config(
        "patches_cpu", MICRO_IMAGE + ["steps=5", "ckpt_every=1", "eps=0.05"]
    )


def test_a_json_config_of_the_other_kind_names_the_right_command(tmp_path, capsys):
    p2d, pimg = tmp_path / "2d.json", tmp_path / "img.json"
    p2d.write_text(json.dumps(asdict(tiny_2d().validate())))
    pimg.write_text(json.dumps(asdict(make_config("patches_cpu"))))
    err = run_error(["train", "--config", str(p2d), "--out", str(tmp_path / "r")], capsys)
    assert "is a 2D run's config; train it with gctm-mini train2d --config" in err
    err = run_error(["train2d", "--config", str(pimg), "--out", str(tmp_path / "r")], capsys)
    assert "is an image run's config; train it with gctm-mini train --config" in err


def test_malformed_or_unknown_keys_in_a_json_config_are_refused(tmp_path):
    (tmp_path / "cut.json").write_text('{"steps": 40, "lr"')
    with pytest.raises(ValueError, match=r"cut.json is not valid JSON .*line 1"):
        make_config(str(tmp_path / "cut.json"))
    (tmp_path / "odd.json").write_text('{"name": "patches_cpu", "stepz": 3}')
    with pytest.raises(ValueError, match=r"unknown config key\(s\) in .*odd.json: stepz"):
        make_config(str(tmp_path / "odd.json"))
    with pytest.raises(FileNotFoundError, match="config file .*none.json not found"):
        make_config(str(tmp_path / "none.json"))


def test_help_lists_every_config_field_with_its_meaning_and_default(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train2d", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for f in fields(Toy2DConfig):
        assert "--" + f.name.replace("_", "-") in text
        assert " ".join(cli.field_help(f).split()) in text
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    for f in fields(ImageConfig):
        assert f"  {f.name} " in text and cli.field_help(f) in text
    assert "(default: 0.999; in [0, 1))" in cli.field_help(
        next(f for f in fields(ImageConfig) if f.name == "ema_decay")
    )


def test_usage_names_the_console_script(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert capsys.readouterr().out.startswith("usage: gctm-mini train ")


def test_module_errors_name_python_m_and_are_one_line():
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    r = subprocess.run(
        [sys.executable, "-m", "gctm_mini", "train2d", "--weighted", "ture", "--out", "x"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "python -m gctm_mini train2d: error: argument --weighted: takes true or false; "
        "got 'ture' (see python -m gctm_mini train2d --help)"
    ]


# --- runs of the wrong kind, teachers, resuming -------------------------------------------


def test_eval_commands_refuse_a_run_of_the_other_kind(capsys):
    err = run_error(["eval2d", str(SHIPPED / "gctm_patches.pt"), "--n", "8"], capsys)
    assert "is an image run (data shape (3, 32, 32)); evaluate it with the eval command" in err
    err = run_error(["eval", str(SHIPPED / "fm_moons.pt"), "--num", "8"], capsys)
    assert "is a 2D run (data shape (2,)); evaluate it with the eval2d command" in err


def test_eval2d_refuses_zero_seeds_instead_of_printing_nan():
    with pytest.raises(ValueError, match="seeds must be an integer ≥ 1; got 0"):
        cli.evaluate_run(SHIPPED / "fm_moons.pt", [1], n=64, seeds=0)


@pytest.mark.parametrize(
    "teacher, shape, match",
    [
        (
            "gctm_patches",
            (2,),
            r"is an image model of data shape \(3, 32, 32\); this run needs a 2D",
        ),
        ("fm_moons", (3, 32, 32), r"is a 2D model of data shape \(2,\); this run needs an image"),
        ("gctm_moons", (2,), "must be an FM run \\(method 'fm'\\); got method 'gctm'"),
        ("bcm_moons", (2,), "got a bidirectional \\(bcm\\) model"),
        ("fm_gmm", (2,), "was trained with data='gmm'; this run has data='moons'"),
    ],
)
def test_a_teacher_of_the_wrong_kind_is_refused(teacher, shape, match):
    with pytest.raises(ValueError, match=match):
        load_teacher(SHIPPED / f"{teacher}.pt", shape, match={"data": "moons"})
    assert load_teacher(SHIPPED / "fm_moons.pt", (2,), match={"data": "moons"}).data_shape == (2,)


def test_train2d_refuses_an_image_teacher_and_the_image_loop_a_2d_one(tmp_path, capsys):
    err = run_error(
        ["train2d", "--method", "cd", "--teacher", str(SHIPPED / "gctm_patches.pt")]
        + ["--out", str(tmp_path / "cd"), "--quiet"],
        capsys,
    )
    assert "is an image model" in err
    cfg = make_config("patches_cpu", ["method=cd", f"teacher={SHIPPED / 'fm_moons.pt'}"])
    with pytest.raises(ValueError, match="is a 2D model of data shape"):
        train_images(cfg, None, progress=False, device="cpu")


def test_resuming_into_an_exported_ema_only_file_is_refused(tmp_path, capsys):
    shipped = load_raw(SHIPPED / "fm_moons.pt")
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(SHIPPED / "fm_moons.pt", run / "checkpoint.pt")
    cfg = Toy2DConfig.from_dict(shipped["config"])
    with pytest.raises(CheckpointError, match="exported EMA-only checkpoint .* not resumed"):
        train2d(cfg, run, progress=False)
    err = run_error(["train2d", "--config", str(_json(tmp_path, cfg)), "--out", str(run)], capsys)
    assert "exported EMA-only" in err


def _json(tmp_path, cfg) -> Path:
    p = tmp_path / "cfg.json"
    p.write_text(json.dumps(asdict(cfg)))
    return p


@pytest.fixture
def small_run(tmp_path):
    cfg = tiny_2d()
    train2d(cfg, tmp_path / "run", progress=False)
    return cfg, tmp_path / "run"


@pytest.mark.parametrize("entry", ["model", "optimizer", "rng", "config", "scheduler"])
def test_resuming_a_checkpoint_without_an_entry_names_it(small_run, entry):
    cfg, run = small_run
    data = load_raw(run)
    del data[entry]
    save_checkpoint(run, data)
    with pytest.raises(CheckpointError, match=f"cannot be resumed: it lacks the '{entry}' entry"):
        train2d(cfg, run, progress=False)


def test_weights_of_the_wrong_shape_are_refused_on_load_and_resume(small_run):
    cfg, run = small_run
    data = load_raw(run)
    key = next(k for k in data["ema"] if k.endswith("weight"))
    data["ema"][key] = torch.zeros(3, 3)
    save_checkpoint(run, data)
    with pytest.raises(CheckpointError, match=f"do not fit the model .*{key} has shape \\(3, 3\\)"):
        load_checkpoint(run)
    with pytest.raises(CheckpointError, match="'ema' weights\\) do not fit"):
        train2d(cfg, run, progress=False)


def test_an_optimizer_state_of_the_wrong_shape_is_refused_on_resume(small_run):
    cfg, run = small_run
    data = load_raw(run)
    data["optimizer"]["state"][0]["exp_avg"] = torch.zeros(5)
    save_checkpoint(run, data)
    with pytest.raises(
        CheckpointError, match="optimizer exp_avg of parameter 0 has shape \\(5,\\)"
    ):
        train2d(cfg, run, progress=False)


def test_a_checkpoint_from_another_config_names_the_difference(small_run):
    cfg, run = small_run
    with pytest.raises(ValueError, match="different config \\(lr: 0.002 in the run, 0.01 now\\)"):
        load_resumable(run, {**asdict(cfg), "lr": 0.01}, mlp_spec(2, 8, 1))


# --- checksums and the manifest -----------------------------------------------------------


def test_a_flipped_byte_in_the_weights_is_detected(tmp_path):
    spec = mlp_spec(2, 8, 1)
    state = build_model(spec).state_dict()
    key = next(k for k in state if k.endswith("weight"))
    state[key] = torch.full_like(state[key], 1234.5)
    save_checkpoint(tmp_path, {"spec": spec, "ema": state})
    assert CHECKSUM in load_raw(tmp_path)
    path = tmp_path / "checkpoint.pt"
    raw = bytearray(path.read_bytes())
    at = raw.find(torch.tensor([1234.5]).numpy().tobytes())
    assert at > 0
    raw[at + 1] ^= 0x01  # the tensor is read back without complaint, but differs
    path.write_bytes(bytes(raw))
    assert not torch.equal(torch.load(path, weights_only=True)["ema"][key], state[key])
    with pytest.raises(
        CheckpointError, match="is corrupted: its tensors do not match the checksum"
    ):
        load_checkpoint(tmp_path)


def test_checkpoints_without_a_checksum_still_load(tmp_path):
    old = [k for k, e in manifest().items() if e.get("kind") != "digits"]  # digits: with one
    for name in old:
        assert CHECKSUM not in load_raw(SHIPPED / f"{name}.pt")  # shipped before checksums
        load_checkpoint(SHIPPED / f"{name}.pt")
    spec = mlp_spec(2, 8, 1)
    torch.save(
        {"format": "gctm_mini", "version": 1, "spec": spec, "ema": build_model(spec).state_dict()},
        tmp_path / "old.pt",
    )
    assert load_checkpoint(tmp_path / "old.pt").data_shape == (2,)


def test_a_truncated_or_malformed_manifest_is_one_clear_error(tmp_path):
    text = (SHIPPED / "manifest.json").read_text()
    (tmp_path / "cut.json").write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="cut.json is not valid JSON \\(truncated or malformed"):
        manifest(tmp_path / "cut.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ValueError, match="must hold a JSON object; got list"):
        manifest(tmp_path / "list.json")
    entries = json.loads(text)
    del entries["fm_moons"]["command"]
    (tmp_path / "nocmd.json").write_text(json.dumps(entries))
    with pytest.raises(ValueError, match="entry 'fm_moons' lacks command"):
        manifest(tmp_path / "nocmd.json")


def test_resuming_a_cd_run_without_its_target_network_names_it(tmp_path):
    teacher = train2d(tiny_2d(), progress=False).ema
    cfg = tiny_2d(method="cd")
    train2d(cfg, tmp_path, progress=False, teacher=teacher)
    data = load_raw(tmp_path)
    data["method"] = {}
    save_checkpoint(tmp_path, data)
    with pytest.raises(CheckpointError, match="cannot be resumed: it lacks CD's target network"):
        train2d(cfg, tmp_path, progress=False, teacher=teacher)


def test_the_colab_cifar10_config_validates_and_is_the_one_hour_t4_run():
    from gctm_mini.train_images import make_config
    from gctm_mini.unet import UNET_PRESETS, TwoTimeUNet, count_parameters

    cfg = make_config("cifar10_colab")
    assert (cfg.data, cfg.method, cfg.coupling, cfg.net) == ("cifar10", "gctm", "ot", "small")
    assert cfg.download and cfg.amp == "fp16" and cfg.steps == 10_000
    assert cfg.n_start * 2 ** (cfg.steps // cfg.n_double_every) >= cfg.n_cap  # N reaches its cap
    assert count_parameters(TwoTimeUNet(32, 3, 3, **UNET_PRESETS[cfg.net])) < 20e6
    with pytest.raises(ValueError, match="CUDA"):
        cfg.check_device(torch.device("cpu"))
