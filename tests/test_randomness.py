"""Per-step draws that do not depend on how a batch is split: dropout masks as rows of the
global batch's masks, the paired-data flip, and k processes × micro-batches vs one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from PIL import Image
from torch import nn

from gctm_mini.images import PairedFolder
from gctm_mini.randomness import Draws, SampleDropout, dropout_masks
from gctm_mini.train_images import build_image_data, draw_image_batch, make_config, train_images

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "data=lfw",
    "net=tiny",
    "model_channels=16",
    "num_blocks=1",
    "channel_mult=1,2",
    "attn_resolutions=8",
    "image_size=16",
    "batch_size=8",
    "log_every=1",
    "sample_every=0",
    "dropout=0.3",
    "steps=3",
    "ckpt_every=3",
]


def dropout_net() -> nn.Module:
    return nn.Sequential(
        nn.Linear(6, 32), SampleDropout(0.3), nn.Linear(32, 32), SampleDropout(0.3)
    )


def test_dropout_masks_are_rows_of_the_global_batch_masks():
    net = dropout_net().train()
    x = torch.randn(12, 6)
    with dropout_masks(net, seed=77):
        whole = net(x)
    parts = []
    for start in (0, 4, 8):  # three processes or micro-batches of 4
        with Draws(offset=start, total=12).dropout(net, seed=77):
            parts.append(net(x[start : start + 4]))
    assert torch.equal(torch.cat(parts), whole)
    with dropout_masks(net, seed=78):
        assert not torch.equal(net(x), whole)
    with (
        pytest.raises(ValueError, match="exceeds the global batch"),
        dropout_masks(net, seed=77, offset=10, total=12),
    ):
        net(x[:4])


def test_sample_dropout_keeps_1_minus_p_and_is_the_identity_in_eval_mode():
    drop = SampleDropout(0.3).train()
    x = torch.ones(64, 1000)
    with dropout_masks(drop, seed=1):
        y = drop(x)
    kept = (y > 0).double().mean().item()
    assert abs(kept - 0.7) < 4 * (0.21 / x.numel()) ** 0.5
    assert torch.allclose(y[y > 0], torch.full_like(y[y > 0], 1 / 0.7))
    assert torch.equal(drop.eval()(x), x)
    with pytest.raises(ValueError, match="dropout probability"):
        SampleDropout(1.0)


def write_pair(path, seed):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (8, 16, 3), dtype=np.uint8)).save(path)


def paired_config(tmp_path):
    for k in range(6):
        write_pair(tmp_path / f"{k}.png", k)
    overrides = [f"data=paired:{tmp_path}", "net=tiny", "image_size=8", "eps=0", "batch_size=6"]
    cfg = make_config("facades", overrides)
    assert cfg.flip
    return cfg, build_image_data(cfg)


def test_paired_data_indexing_is_deterministic(tmp_path):
    _, ds = paired_config(tmp_path)
    first = ds[0]
    for seed in range(8):  # the global RNG must not decide a flip
        torch.manual_seed(seed)
        assert all(torch.equal(a, b) for a, b in zip(ds[0], first, strict=True))


def test_paired_batches_flip_once_where_the_steps_draws_say(tmp_path):
    cfg, ds = paired_config(tmp_path)
    batches = []
    for seed in (0, 1):
        torch.manual_seed(seed)  # the global RNG must not matter
        batches.append(draw_image_batch(cfg, ds, Draws.for_step(0, 3, stream=1), 6))
    assert all(torch.equal(a, b) for a, b in zip(*batches, strict=True))
    rng = Draws.for_step(0, 3, stream=1)
    idx = rng.randint(0, len(ds), 6)
    flip = rng.rand(6) < 0.5
    assert 0 < int(flip.sum()) < 6  # this step mirrors some pairs and not others
    x0, x1 = batches[0]
    for b, (i, f) in enumerate(zip(idx.tolist(), flip.tolist(), strict=True)):
        e0, e1 = PairedFolder(ds.root, size=8).pair(i, flip=f)
        assert torch.equal(x0[b], e0) and torch.equal(x1[b], e1)


def test_gradient_accumulation_with_dropout_matches_the_plain_step():
    """Micro-batches draw the dropout masks of their rows of the global batch."""

    def run(*extra):
        return train_images(make_config("patches_cpu", TINY + list(extra)), None, progress=False)

    plain, accum = run(), run("grad_accum=4")
    np.testing.assert_allclose(
        [r["loss"] for r in accum.history], [r["loss"] for r in plain.history], rtol=1e-5
    )
    for a, b in zip(plain.model.parameters(), accum.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


WORKER = """
import json, os, sys, torch, torch.distributed as dist
rank, world, store, out, sets = sys.argv[1:]
rank, world = int(rank), int(world)
os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
dist.init_process_group("gloo", init_method="file://" + store, rank=rank, world_size=world)
from gctm_mini.train_images import make_config, train_images
res = train_images(make_config("patches_cpu", json.loads(sets)), None, progress=False)
if rank == 0:
    torch.save({"history": res.history, "model": res.model.state_dict()}, out)
"""


@pytest.mark.slow  # two fresh interpreters import torch: > 5 s
@pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed gloo"
)
def test_two_gloo_processes_with_accumulation_and_dropout_match_one_process(tmp_path):
    """2 processes × 2 micro-batches vs 1 process at global batch 8: same losses and weights."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore",
    }
    sets = json.dumps(TINY + ["grad_accum=2"])
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                str(r),
                "2",
                str(tmp_path / "store"),
                str(tmp_path / "two.pt"),
                sets,
            ],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()[-3000:]
    one = train_images(make_config("patches_cpu", TINY), None, progress=False)
    two = torch.load(tmp_path / "two.pt")
    np.testing.assert_allclose(
        [r["loss"] for r in two["history"]], [r["loss"] for r in one.history], rtol=1e-5
    )
    for k, v in one.model.state_dict().items():
        torch.testing.assert_close(two["model"][k], v, rtol=1e-4, atol=1e-6, msg=k)
