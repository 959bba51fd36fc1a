"""The peer benchmark's own logic: the torchcfm time-convention bridge, the equal-wall-time
budget and the missing-extra message. Only the last, slow test needs torchcfm itself."""

import sys

import pytest
import torch

from gctm_mini.checkpoint import write_csv
from gctm_mini.data2d import make_dataset
from gctm_mini.metrics import w2
from gctm_mini.networks import TwoTimeMLP
from gctm_mini.sampling import sample_ode
from gctm_mini.solvers import integrate
from gctm_mini.timegrid import uniform_grid


@pytest.fixture(scope="module")
def peers(load_script):
    return load_script("benchmarks/peers.py", "peers_benchmark")


def point_mass_cfm_velocity(a: torch.Tensor):
    """torchcfm-convention velocity of the path from noise (τ = 0) to the point a (τ = 1):
    x_τ = τ a + (1 − τ) z, u = a − z = (a − x_τ) / (1 − τ)."""
    return lambda x, tau: (a - x) / (1 - tau)[:, None]


@pytest.mark.parametrize("nfe", [1, 2, 4])
def test_bridged_cfm_velocity_carries_noise_to_the_point_mass_exactly(peers, nfe):
    # closed form: the bridged field is v(x, t) = (x − a) / t, whose Euler steps are exact
    a = torch.tensor([[1.5, -0.5]])
    v = peers.velocity_from_cfm(point_mass_cfm_velocity(a))
    x1 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    out = integrate(v, x1, uniform_grid(nfe), "euler")
    torch.testing.assert_close(out, a.expand_as(out), rtol=0, atol=1e-5)


def test_mirrored_time_without_the_sign_flip_misses_the_point_mass(peers):
    # v(x, t) = +u(x, 1 − t) sends x to 2x − a in one step: the sign of the bridge matters
    a = torch.tensor([[1.5, -0.5]])
    u = point_mass_cfm_velocity(a)
    x1 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    wrong = integrate(lambda x, t: u(x, 1 - t), x1, uniform_grid(1), "euler")
    torch.testing.assert_close(wrong, 2 * x1 - a)


def test_cfm_model_velocity_is_minus_its_network_at_the_mirrored_time(peers):
    torch.manual_seed(0)
    net = TwoTimeMLP(2, 32, 2)
    torch.nn.init.normal_(net.out.weight)
    model = peers.CFMVelocity(net)
    x, t = torch.randn(16, 2), torch.rand(16)
    torch.testing.assert_close(model._velocity(x, t), -model(x, 1 - t))
    # the network sees the project's label of t = 1 − τ, as the project's own models do
    lab = model.label(t)
    torch.testing.assert_close(model(x, 1 - t), net(x, lab, lab))


def test_equal_time_steps_scale_by_the_cost_ratio(peers):
    assert peers.equal_time_steps(2500, 0.02, 0.005) == 10_000
    assert peers.equal_time_steps(2500, 0.02, 0.02) == 2500
    assert peers.equal_time_steps(10, 0.001, 1.0) == 1  # never zero steps
    with pytest.raises(ValueError, match="positive costs"):
        peers.equal_time_steps(2500, 0.02, 0.0)


def test_interleaved_costs_alternate_blocks_and_return_per_step_costs(peers):
    now = [0.0]
    order = []

    def stepper(name, cost):
        def step(k):
            order.append(name)
            now[0] += cost

        return step

    costs = peers.interleaved_costs(
        {"a": stepper("a", 0.002), "b": stepper("b", 0.005)},
        blocks=3,
        block_steps=4,
        clock=lambda: now[0],
    )
    assert costs == pytest.approx({"a": 0.002, "b": 0.005})
    assert order == (["a"] * 4 + ["b"] * 4) * 3


def test_missing_torchcfm_exits_with_one_line_naming_the_extra(peers, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchcfm", None)
    monkeypatch.setitem(sys.modules, "torchcfm.conditional_flow_matching", None)
    with pytest.raises(SystemExit) as err:
        peers.main(["--quick"])
    msg = str(err.value.code)
    assert "\n" not in msg and "gctm-mini[bench]" in msg and "torchcfm" in msg


def _job_rows(peers, data, seed, steps=2500, methods=None):
    return [
        {
            "data": data,
            "seed": seed,
            "method": m,
            "budget": b,
            "nfe": nfe,
            "steps": steps,
            "cost_per_step": 0.01 * (i + 1),
            "gctm_recipe": peers.gctm_recipe(quick=steps == 200),
        }
        for i, m in enumerate(methods or peers.METHODS)
        for b in ("equal_steps", "equal_time")
        for nfe in peers.NFES
    ]


def test_resume_keeps_complete_jobs_only_with_their_costs(peers):
    rows = _job_rows(peers, "moons", 0) + _job_rows(peers, "moons", 1, methods=["gctm_ot"])
    done, costs = peers.finished_jobs(rows, quick=False)
    assert done == {("moons", 0)}  # seed 1 lacks four methods: trained again
    assert costs["moons"] == {m: 0.01 * (i + 1) for i, m in enumerate(peers.METHODS)}


def test_resume_refuses_runs_of_other_defaults_with_one_line(peers):
    with pytest.raises(SystemExit) as err:
        peers.finished_jobs(_job_rows(peers, "moons", 0, steps=1234), quick=False)
    msg = str(err.value.code)
    assert "\n" not in msg and "1234" in msg and "--resume" in msg


def test_resume_refuses_rows_of_another_recipe_with_one_line(peers):
    rows = _job_rows(peers, "moons", 0)
    for r in rows:
        r["gctm_recipe"] = "0123456789"  # e.g. trained before the EMA solve became Euler
    with pytest.raises(SystemExit) as err:
        peers.finished_jobs(rows, quick=False)
    msg = str(err.value.code)
    assert "\n" not in msg and "0123456789" in msg and "--resume" in msg
    assert peers.gctm_recipe(quick=False) in msg


def test_resume_with_every_job_finished_trains_nothing_and_keeps_other_sets(
    peers, tmp_path, monkeypatch
):
    monkeypatch.setattr(peers, "_matcher", lambda method: None)  # torchcfm not needed here
    monkeypatch.setattr(peers, "calibrate", lambda *a, **k: pytest.fail("calibrated again"))
    monkeypatch.setattr(peers, "run_job", lambda job: pytest.fail(f"trained {job[:2]}"))
    rows = _job_rows(peers, "moons", 0, steps=200) + _job_rows(peers, "8gaussians", 0, steps=200)
    for i, r in enumerate(rows):
        r.update(sampler="euler", w2=0.1 + 0.001 * i, cost_model_seconds=1.0, train_seconds=1.0)
    write_csv(tmp_path / "peers_runs.csv", rows)
    peers.main(["--quick", "--resume", "--data", "moons", "--workers", "1", "--out", str(tmp_path)])
    kept = peers.read_runs(tmp_path / "peers_runs.csv")
    assert {r["data"] for r in kept} == {"moons", "8gaussians"} and len(kept) == len(rows)
    assert (tmp_path / "peers.csv").exists() and (tmp_path / "peers.png").exists()


@pytest.mark.slow
def test_torchcfm_trained_model_sampled_through_the_bridge_reaches_the_data(peers):
    pytest.importorskip("torchcfm")
    from gctm_mini.training import Toy2DConfig

    torch.set_num_threads(1)
    cfg = Toy2DConfig(method="fm", data="8gaussians", steps=600, hidden=128, depth=3)
    model, _ = peers.CFMRun("otcfm", cfg).train()
    g = torch.Generator().manual_seed(1)
    data = make_dataset("8gaussians")
    ref, x1 = data(1024, g), torch.randn(1024, 2, generator=g)
    good = w2(sample_ode(model, x1, 8, "euler"), ref)
    noise = w2(x1, ref)
    # the wrong convention (data at t = 1, no sign flip) integrates away from the data
    wrong = w2(integrate(lambda x, t: model(x, t), x1, uniform_grid(8), "euler"), ref)
    floor = w2(data(1024, g), data(1024, g))
    assert good < 1.5 * floor, (good, floor)  # sensible: near the data–data floor
    assert good < 0.5 * noise, (good, noise)
    assert wrong > 2 * good, (wrong, good)


def _head_rows(diffs: dict[int, list[float]], gctm: float = 0.1) -> list[dict]:
    """Head-to-head rows whose GCTM-OT NFE 1 − OT-CFM NFE 8 on (seed, draw j) is diffs[seed][j]."""
    rows = []
    for seed, per_draw in diffs.items():
        for j, dlt in enumerate(per_draw):
            for m, nfe, w in (("gctm_ot", 1, gctm), ("gctm_ot", 8, 9.0), ("otcfm", 1, 9.0)):
                rows.append(
                    {
                        "data": "moons",
                        "seed": seed,
                        "draw": j,
                        "method": m,
                        "steps": 100,
                        "nfe": nfe,
                        "w2": w,
                        "floor": 0.05,
                    }
                )
            rows.append(
                {
                    "data": "moons",
                    "seed": seed,
                    "draw": j,
                    "method": "otcfm",
                    "steps": 200,
                    "nfe": 8,
                    "w2": gctm - dlt,
                    "floor": 0.05,
                }
            )
    return rows


def test_head_to_head_pairs_each_draw_and_reports_the_standard_error_over_seeds(peers):
    diffs = {0: [0.01, 0.03], 1: [-0.02, 0.0], 2: [0.04, 0.02]}  # seed means 0.02, -0.01, 0.03
    (r,) = peers.head_to_head_summary(_head_rows(diffs))
    assert (r["seeds"], r["draws"], r["seeds_below"]) == (3, 2, 1)
    assert r["diff"] == pytest.approx(0.04 / 3)
    seed_means = torch.tensor([0.02, -0.01, 0.03], dtype=torch.float64)
    assert r["diff_se"] == pytest.approx(float(seed_means.std() / 3**0.5))
    assert r["gctm_ot_nfe1"] == pytest.approx(0.1)
    assert r["otcfm_nfe8"] == pytest.approx(0.1 - 0.04 / 3)
    assert r["floor"] == pytest.approx(0.05)
    assert r["gctm_ot_nfe8"] == pytest.approx(9.0)
    assert r["diff_nfe8"] == pytest.approx(9.0 - (0.1 - 0.04 / 3))
    assert r["diff_nfe8_se"] == pytest.approx(r["diff_se"])  # the same spread over seeds


def test_head_to_head_from_runs_prints_the_summary_of_the_csv(peers, tmp_path, capsys):
    write_csv(tmp_path / "peers_head_to_head.csv", _head_rows({0: [0.01], 1: [0.03]}))
    peers.main(["--head-to-head", "1", "--from-runs", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "+0.0200 ± 0.0100 (below on 0 of 2 seeds)" in out


def test_head_to_head_refuses_a_data_set_without_an_equal_time_otcfm_run(
    peers, tmp_path, monkeypatch
):
    monkeypatch.setattr(peers, "_matcher", lambda method: None)
    monkeypatch.setattr(peers, "head_to_head_job", lambda job: pytest.fail("trained"))
    rows = _job_rows(peers, "moons", 0, steps=200)
    for r in rows:
        r.update(sampler="euler", w2=0.1, cost_model_seconds=1.0, train_seconds=1.0)
    write_csv(tmp_path / "peers_runs.csv", rows)
    with pytest.raises(SystemExit) as err:
        peers.main(
            ["--quick", "--head-to-head", "2", "--data", "8gaussians", "--out", str(tmp_path)]
        )
    msg = str(err.value.code)
    assert "\n" not in msg and "8gaussians" in msg
    with pytest.raises(SystemExit) as err:
        peers.main(["--head-to-head", "-1", "--out", str(tmp_path)])
    assert "\n" not in str(err.value.code) and "-1" in str(err.value.code)


def test_head_to_head_job_scores_both_runs_on_every_draw_with_its_floor(peers, monkeypatch):
    from gctm_mini.metrics import floor_values

    class Untrained:  # OT-CFM's run without torchcfm: an untrained bridged network
        def __init__(self, method, cfg):
            self.steps = cfg.steps

        def train(self):
            return peers.CFMVelocity(TwoTimeMLP(2, 16, 1)), 0.0

    monkeypatch.setattr(peers, "CFMRun", Untrained)
    torch.set_num_threads(1)
    rows = peers.head_to_head_job(("moons", 1, 7, 256, 3, True))
    assert len(rows) == 2 * 3 * len(peers.HEAD_NFES)
    assert {(r["method"], r["steps"]) for r in rows} == {("gctm_ot", 200), ("otcfm", 7)}
    floors = floor_values(make_dataset("moons"), 256, 3, "w2", peers.head_draws_base(1))
    assert [r["floor"] for r in rows if (r["method"], r["nfe"]) == ("otcfm", 8)] == floors
    assert peers.head_draws_base(0) == peers.EVAL_BASE  # seed 0's first draw is the main run's
