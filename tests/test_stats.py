"""The bench's statistics against plain loops written from their definitions, and the power formula against a
simulation of the design it sizes."""

import math

import numpy as np
import pytest

from benchmarks.stats import (item_variance, iqm, minimal_detectable_difference, paired_difference,
                              probability_of_improvement)


def _loop_paired_bootstrap(a, b, reps, rng):
    """Draw seeds (whole rows) and, independently, items with replacement; the mean difference over the drawn
    seeds x items of each replicate (plain loops)."""
    seeds, items = a.shape
    out = []
    for _ in range(reps):
        rows = [rng.integers(seeds) for _ in range(seeds)]
        cols = [rng.integers(items) for _ in range(items)]
        total = 0.0
        for s in rows:
            for i in cols:
                total += a[s, i] - b[min(s, b.shape[0] - 1), i]
        out.append(total / (items * seeds))
    return np.percentile(out, [2.5, 97.5])


@pytest.mark.parametrize("seeds", [1, 3])
def test_paired_difference_matches_a_plain_loop_bootstrap(seeds):
    rng = np.random.default_rng(seeds)
    a = (rng.random((seeds, 40)) < 0.6).astype(float)
    b = (rng.random((seeds, 40)) < 0.4).astype(float)
    got = paired_difference(a, b, reps=2000)
    lo, hi = _loop_paired_bootstrap(a, b, 2000, np.random.default_rng(7))
    assert got.value == pytest.approx((a - b).mean())
    assert got.lo == pytest.approx(lo, abs=0.03) and got.hi == pytest.approx(hi, abs=0.03)


def test_paired_difference_edge_cases():
    same = (np.random.default_rng(0).random((2, 32)) < 0.5).astype(float)
    assert paired_difference(same, same).value == 0.0 and paired_difference(same, same).contains_zero
    better = np.ones((2, 32))
    worse = np.zeros((2, 32))
    assert str(paired_difference(better, worse)) == "+1.000 [+1.000, +1.000]"  # all-correct vs all-wrong
    clear = paired_difference(np.tile([1.0, 1.0, 0.0, 1.0], (2, 8)), np.tile([0.0, 1.0, 0.0, 0.0], (2, 8)))
    assert not clear.contains_zero and clear.lo > 0
    ref = paired_difference(better, np.zeros((1, 32)))  # a one-row reference (the untrained team) broadcasts
    assert ref.value == 1.0
    with pytest.raises(ValueError, match="same items"):
        paired_difference(np.ones((1, 3)), np.ones((1, 4)))


def test_a_seed_effect_shared_by_every_item_widens_the_interval():
    """Three seeds whose differences are constant over items (-0.30, 0.00, -0.15: training noise, not item noise).
    Any bootstrap that resamples seeds within each item averages them to about -0.15 on every replicate; the crossed
    bootstrap draws whole seeds, so the CI spans what three seeds can say (all three drawn as the 0.00 seed has
    probability 1/27 > 2.5 %: the CI reaches 0)."""
    d = np.repeat(np.array([[-0.30], [0.00], [-0.15]]), 128, axis=1)
    got = paired_difference(d, np.zeros((1, 128)))
    assert got.value == pytest.approx(-0.15)
    assert got.lo == pytest.approx(-0.30) and got.hi == pytest.approx(0.0) and got.contains_zero
    one = paired_difference(d[:1], np.zeros((1, 128)))  # one seed: nothing to resample but items
    assert (one.lo, one.hi) == pytest.approx((-0.30, -0.30))


def test_pairing_is_what_makes_a_small_difference_visible():
    """Two methods that agree on most items and differ on a few: the paired CI excludes 0 where the difference of
    two independent means would not (the reason the bench scores every method on the same items)."""
    rng = np.random.default_rng(3)
    base = (rng.random((1, 128)) < 0.5).astype(float)
    a = base.copy()
    flip = np.flatnonzero(base[0] == 0)[:12]
    a[0, flip] = 1.0  # a = b plus 12 items
    d = paired_difference(a, base)
    assert d.lo > 0
    unpaired_se = math.sqrt(a.var() / 128 + base.var() / 128)
    assert d.value - 1.96 * unpaired_se < 0  # unpaired: would contain 0


def test_iqm_and_probability_of_improvement_match_their_definitions():
    rng = np.random.default_rng(1)
    x, y = rng.random((5, 2)), rng.random((5, 2)) - 0.2
    flat = np.sort(x.ravel())  # 10 scores: the interquartile mean drops the lowest and the highest 2 (25 % each)
    assert iqm(x).value == pytest.approx(flat[2:8].mean())
    loop = 0.0
    for t in range(2):
        wins = sum((xi > yj) + 0.5 * (xi == yj) for xi in x[:, t] for yj in y[:, t])
        loop += wins / (5 * 5) / 2
    p = probability_of_improvement(x, y)
    assert p.value == pytest.approx(loop) and p.lo <= p.value <= p.hi


def test_rliable_intervals_repeat_and_leave_the_global_random_stream_alone():
    """rliable 1.2 resamples with the global ``np.random`` whatever ``random_state`` it is given, so the table's IQM
    CIs moved by ~0.003 from one process to the next. Same inputs, same seed: same CI, in any global state; the
    caller's global stream continues as if no bootstrap had run."""
    rng = np.random.default_rng(3)
    x, y = rng.random((6, 2)), rng.random((6, 2)) - 0.1
    np.random.seed(11)
    first = (iqm(x, reps=200), probability_of_improvement(x, y, reps=200))
    after_first = np.random.random()
    np.random.seed(12345)  # another global state: the CIs must not depend on it
    second = (iqm(x, reps=200), probability_of_improvement(x, y, reps=200))
    assert first == second
    np.random.seed(11)
    assert np.random.random() == after_first  # the bootstrap consumed nothing of the caller's stream
    assert iqm(x, reps=200, seed=1) != first[0]  # the seed does reach the resampling


def test_minimal_detectable_difference_has_the_power_it_claims():
    """Simulate the design (seeds with training noise, Bernoulli items) at a true difference equal to the formula's
    MDD: a two-sided 5 % test of the paired mean difference rejects about 80 % of the time."""
    rng = np.random.default_rng(0)
    items, seeds, p, seed_sd = 64, 3, 0.5, 0.03
    item_var = 2 * p * (1 - p)  # independent methods at accuracy ~p
    mdd = minimal_detectable_difference(items, seeds, item_var, seed_sd)
    se = math.sqrt(item_var / (items * seeds) + 2 * seed_sd ** 2 / seeds)
    trials, rejected = 4000, 0
    for _ in range(trials):
        pa = p + mdd / 2 + rng.normal(0, seed_sd, seeds)[:, None]
        pb = p - mdd / 2 + rng.normal(0, seed_sd, seeds)[:, None]
        a = rng.random((seeds, items)) < pa
        b = rng.random((seeds, items)) < pb
        rejected += abs((a.astype(float) - b).mean()) > 1.96 * se
    assert rejected / trials == pytest.approx(0.8, abs=0.03)
    # more items or more seeds can only help; seeds are the only cure for training noise
    assert minimal_detectable_difference(4 * items, seeds, item_var, seed_sd) < mdd
    assert minimal_detectable_difference(10 ** 9, seeds, item_var, seed_sd) > 0.05  # seed noise remains
    a = (rng.random((2, 50)) < 0.5).astype(float)
    assert item_variance(a, a) == 0.0


def test_report_pairs_a_method_only_in_the_second_folder_with_the_first_folders_methods(tmp_path):
    """An ablation run later, in its own folder, on the same held-out items: `ccpo bench report A B` gives its paired
    difference from each of A's methods (same items, common seeds), hand-computed here."""
    import json

    from benchmarks.suite import report

    ids = ["t0", "t1", "t2", "t3"]

    def run(label, seed, rewards):
        return {"label": label, "env": "vote_v0", "seed": seed, "items": [
            {"task_id": t, "reward": r} for t, r in zip(ids, rewards)],
            "final": {"eval/charts/accuracy_joint": sum(rewards) / 4}}

    a = {"runs": [run("grpo", 0, [1, 0, 0, 1]), run("grpo", 1, [1, 1, 0, 1]), run("ccpo", 0, [0, 0, 0, 1])],
         "references": []}
    b = {"runs": [run("ccpo[trunc_fail]", 0, [1, 1, 1, 1]), run("ccpo[trunc_fail]", 1, [1, 1, 1, 1])],
         "references": []}
    for name, res in (("A", a), ("B", b)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(res))
    rep = report(tmp_path / "A", tmp_path / "B")
    vs_grpo = next(ln for ln in rep.splitlines() if ln.startswith("| vote_v0 | ccpo[trunc_fail] | grpo |"))
    vs_ccpo = next(ln for ln in rep.splitlines() if ln.startswith("| vote_v0 | ccpo[trunc_fail] | ccpo |"))
    assert vs_grpo.split("|")[4].strip().startswith(f"{(1 - 0.5 + 1 - 0.75) / 2:+.3f}")  # seeds 0 and 1
    assert vs_ccpo.split("|")[4].strip().startswith(f"{1 - 0.25:+.3f}")  # seed 0 only: the common one


def test_across_topologies_with_more_seeds_on_one_uses_the_lowest_seeds_and_says_so():
    """rliable takes a (runs, topologies) matrix: with 4 vote seeds and 2 dyad seeds the IQM uses seeds 0-1 of
    each topology (hand-computed) and the section says so; the per-topology rows still use every seed."""
    from benchmarks.compare import comparison_section

    ids = ["t0", "t1"]

    def run(label, env, seed, rewards):
        return {"label": label, "env": env, "seed": seed, "items": [
            {"task_id": t, "reward": r} for t, r in zip(ids, rewards)]}

    vote = {0: [1, 1], 1: [1, 0], 2: [0, 0], 3: [0, 0]}
    runs = [run(lb, "vote_v0", s, r) for s, r in vote.items() for lb in ("ccpo", "grpo")]
    runs += [run(lb, "dyad_v0", s, [1, 0]) for s in (0, 1) for lb in ("ccpo", "grpo")]
    lines = comparison_section({"runs": runs[::-1], "references": []})  # any order in results.json
    text = "\n".join(lines)
    assert "uses the lowest seeds" in text
    x = np.array([[1.0, 0.5], [0.5, 0.5]])  # seeds 0, 1 x (dyad, vote) means; seeds 2-3 of the vote left out
    want = iqm(x)
    assert f"- ccpo: IQM {want.value:.3f} [{want.lo:.3f}, {want.hi:.3f}]" in text
    balanced = comparison_section({"runs": [r for r in runs if r["seed"] < 2], "references": []})
    assert not any("lowest seeds" in ln for ln in balanced)


def test_a_result_folder_copied_without_its_run_folders_still_tables_and_plots(tmp_path):
    """results.json keeps each run's per-step metrics, so a folder committed without its (large) run folders still
    gives the step-time ratios, the table and the plots."""
    from benchmarks.suite import plot, step_time_ratios, table

    def run(label, secs):
        rows = [{"step": s, "perf/seconds_rollout": secs, "charts/accuracy_joint": 0.5,
                 "credit/reward_mean_voter_0": 0.1} for s in (1, 2)]
        return {"label": label, "env": "vote_v0", "seed": 0, "run_dir": str(tmp_path / "gone" / label),
                "rows": rows, "final": {"eval/charts/accuracy_joint": 0.5, "tokens": 100, "seconds": 6.0},
                "items": [{"task_id": "t0", "reward": 1.0, "tokens": 9}, {"task_id": "t1", "reward": 0.0, "tokens": 7}],
                "curve": {"2": [1.0, 0.0]}}

    results = {"runs": [run("ccpo", 3.0), run("grpo", 2.0)], "references": []}
    assert step_time_ratios(results) == {"vote_v0": 1.5}
    assert "| vote_v0 | ccpo |" in table(results)
    plot(results, tmp_path)
    assert (tmp_path / "curves.png").stat().st_size > 0 and (tmp_path / "credit.png").exists()


def test_step_time_breakdown_excludes_the_warm_up_step_and_sums_to_the_step():
    from benchmarks._report import ccpo_step_parts

    rows = [{"perf/seconds_rollout": 50.0, "perf/seconds_update": 9.0, "perf/seconds_sync": 1.0,
             "perf/tokens_generated": 7.0},  # warm-up: not counted
            {"perf/seconds_rollout": 6.0, "perf/seconds_update": 3.0, "perf/seconds_sync": 1.0,
             "perf/tokens_generated": 300.0},
            {"perf/seconds_rollout": 2.0, "perf/seconds_update": 1.0, "perf/seconds_sync": 0.0,
             "perf/tokens_generated": 100.0}]
    line = ccpo_step_parts(rows)
    # means over the last two rows: rollout 4.0, update 2.0, sync 0.5 (of 6.5 s); 200 tokens in 4.0 s of rollout
    assert "rollout 4.0 s (62 %)" in line and "update 2.0 s (31 %)" in line and "sync 0.5 s (8 %)" in line
    assert "200 tokens generated per step (50 tokens/s" in line


def test_phases_sum_each_runs_logged_seconds_and_leave_the_rest_as_other(tmp_path, capsys):
    """benchmarks.phases on a hand-made bench folder: two steps of one run, a wall time set by file times."""
    import json
    import os

    from benchmarks.phases import main as phases, run_phases

    run = tmp_path / "runs" / "ccpo_dyad_v0_s0"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    steps = [{"step": 1, "perf/seconds_rollout": 10.0, "perf/seconds_update": 5.0, "perf/seconds_sync": 1.0,
              "perf/tokens_generated": 300.0},
             {"step": 2, "perf/seconds_rollout": 20.0, "perf/seconds_update": 5.0, "perf/seconds_eval": 30.0,
              "perf/tokens_generated": 600.0}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    t0 = os.stat(run / "config.json").st_mtime
    os.utime(run / "metrics.jsonl", (t0 + 100, t0 + 100))
    r = run_phases(run)
    assert (r["rollout"], r["update"], r["sync"], r["eval"], r["tokens"], r["steps"]) == (30, 10, 1, 30, 900, 2)
    assert r["wall"] == pytest.approx(100)
    table = phases([str(tmp_path)])
    assert "| ccpo_dyad_v0_s0 | 2 | 100 | 30 | 10 | 1 | 30 | 29 | 30 |" in table
    with pytest.raises(SystemExit) as e:
        phases([str(tmp_path / "missing")])
    assert e.value.code == 2


def test_table_gives_the_untrained_team_one_row_per_topology_over_seeds():
    """A 16-seed study has 16 references per topology (the same items, copied to each seed): the table shows one
    row per topology with the seed count, one number when every seed scored the same and mean ± std when not, and
    each method's "vs untrained" against the reference of its own seed."""
    from benchmarks.suite import table

    def ref(env, seed, acc, secs):
        return {"label": "untrained team", "env": env, "seed": seed, "seconds": secs,
                "metrics": {"eval/charts/accuracy_joint": acc},
                "items": [{"task_id": "t0", "reward": acc, "tokens": 10}]}

    refs = [ref("vote_v0", s, 0.25, 30.0 if s == 0 else 0.0) for s in range(3)]
    refs += [ref("dyad_v0", s, a, 20.0) for s, a in ((0, 0.5), (1, 0.0))]
    final = {"eval/charts/accuracy_joint": 0.75, "tokens": 5, "seconds": 1.0}
    run = {"label": "ccpo", "env": "dyad_v0", "seed": 1, "run_dir": "gone", "rows": [], "final": final, "items": []}
    rows = {ln.split("|")[1].strip() + "/" + ln.split("|")[2].strip(): [c.strip() for c in ln.split("|")[1:-1]]
            for ln in table({"runs": [run], "references": refs}).splitlines() if ln.startswith("| ")}
    assert sum(k.endswith("/untrained team") for k in rows) == 2
    vote, dyad = rows["vote_v0/untrained team"], rows["dyad_v0/untrained team"]
    assert vote[2] == "3" and vote[3] == "0.250" and vote[-1] == "30"  # copies (0 s) do not lower the wall time
    assert dyad[2] == "2" and dyad[3] == "0.250 ± 0.354"
    assert rows["dyad_v0/ccpo"][4] == "+0.750"  # against seed 1's reference (0.0), not the mean over seeds
