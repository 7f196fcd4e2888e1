"""The gym tier end to end on real tiny models: the warm start lands in its success band, a run batched with
others repeats the run alone, a team learns, CCPO's credit on an enumerable task equals the truth, bad options fail
with the fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ccpo_algos.credit import CreditConfig
from ccpo_algos.gym.runner import GymBatch, GymConfig, GymRun, train_gym
from ccpo_algos.gym.warmstart import warm_start
from ccpo_envs.gym import GAMES

GYM_ENVS = [f"{g}_v0" for g in GAMES]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("gym-models")


@pytest.fixture(scope="module")
def splitkey(cache):
    return str(warm_start("splitkey_v0", cache=cache))


@pytest.mark.slow
@pytest.mark.parametrize("env", GYM_ENVS)
def test_warm_start_lands_in_its_success_band_and_is_cached(env, cache):
    path = warm_start(env, cache=cache)
    assert warm_start(env, cache=cache) == path  # the second call reads the cache
    cfg = GymConfig(env=env, model=str(path), steps=1, eval_size=256)
    success, correct = GymBatch(cfg, [GymRun("grpo", 0)]).evaluate(0)
    assert 0.3 <= success.mean() <= 0.7, f"{env}: the untrained team succeeds {success.mean():.2f} of the time"
    assert (correct < 0.95).all(), f"{env}: an agent has no room to improve ({correct})"


@pytest.mark.slow
def test_a_run_batched_with_others_repeats_the_run_alone(splitkey):
    cfg = GymConfig(env="splitkey_v0", model=splitkey, steps=4, eval_every=2, eval_size=16)
    runs = [GymRun("ccpo", 0), GymRun("grpo", 1), GymRun("difference", 0), GymRun("shapley", 2), GymRun("mappo", 0)]
    batched = train_gym(cfg, runs)
    for k in (1, 3, 4):
        alone = train_gym(cfg, [runs[k]])
        assert np.array_equal(batched.eval_items[k], alone.eval_items[0])
        for a, b in zip(batched.records[k], alone.records[0]):
            assert np.array_equal(a.credit, b.credit) and np.array_equal(a.advantage, b.advantage)


@pytest.mark.slow
def test_mappos_critic_learns_the_team_reward_and_its_runs_train(splitkey):
    """MAPPO in the gym: each run's own critic adapter and value head; after training, the critic's value of the
    question (the state before any message) is near the team's success, and the run's advantages are MAPPO's GAE
    over that critic (a zero critic would leave the advantages equal to the normalised rewards)."""
    cfg = GymConfig(env="splitkey_v0", model=splitkey, steps=30, eval_every=30, eval_size=64)
    b = GymBatch(cfg, [GymRun("mappo", 0), GymRun("grpo", 0)])
    assert list(b.critic_of) == [0] and b.team.M == 2 * len(b.agents) + 1
    for step in range(1, cfg.steps + 1):
        rbs = b.rollout(step)
        ca = b.credit_and_advantage(rbs)
        out = b.update(step, rbs, [adv for _, adv in ca])
    v0 = b.values[0].detach()[:, 0]
    team = torch.tensor([float(i["reward_joint"]) for i in rbs[0].infos])
    assert abs(float(v0.mean()) - float(team.mean())) < 0.2, (v0.mean(), team.mean())
    assert out["value_loss"] < 0.25
    rewards, adv = ca[0]
    zero_critic = (rewards - rewards.mean(0)) / (rewards.std(0) + 1e-8)
    assert not torch.allclose(adv.float(), zero_critic.float(), atol=1e-3)


@pytest.mark.slow
def test_a_team_learns_the_split_key(splitkey):
    cfg = GymConfig(env="splitkey_v0", model=splitkey, steps=40, eval_every=40, eval_size=128)
    res = train_gym(cfg, [GymRun("grpo", 0), GymRun("ccpo", 0)])
    assert (res.eval_success[:, -1] > res.eval_success[:, 0] + 0.1).all(), res.eval_success


@pytest.mark.slow
def test_the_reference_truncation_rule_is_reproduced_in_the_gym(splitkey):
    """Under ``episode`` truncation a cut turn scores 0 after CCPO's shaping, above a wrong answer (issue 27's
    hazard): the record shows it whenever a turn is cut."""
    cfg = GymConfig(env="splitkey_v0", model=splitkey, steps=1, max_tokens=1, credit=CreditConfig(truncation="episode"))
    b = GymBatch(cfg, [GymRun("ccpo", 0)])
    rbs = b.rollout(1)  # one token: every turn is cut before its end token
    rewards, _ = b.credit_and_advantage(rbs)[0]
    assert all(t[a].finish_reason == "length" for t in rbs[0].turns for a in b.agents)
    assert torch.equal(rewards, torch.zeros_like(rewards))


@pytest.mark.slow
def test_ccpo_mean_credit_on_an_enumerable_task_equals_the_truth(cache):
    """Raw CCPO credit (the first step passes Δ through unshaped) is the leave-one-out truth episode by episode on
    the independent games; exact Shapley credit is the Shapley truth."""
    for env in ("splitkey_v0", "noisyvote_v0", "redundant_v0", "freerider_v0"):
        cfg = GymConfig(env=env, model=str(warm_start(env, cache=cache)), steps=1, prompts_per_step=8)
        b = GymBatch(cfg, [GymRun("ccpo", 0), GymRun("shapley", 0)])
        rbs = b.rollout(1)
        (ccpo_r, _), (shap_r, _) = b.credit_and_advantage(rbs)
        for k, rewards in ((0, ccpo_r), (1, shap_r)):
            outs = rbs[k].infos
            key = "loo" if k == 0 else "shapley"
            truth = torch.tensor([[o["contribution"][key][a] for a in b.agents] for o in outs], dtype=rewards.dtype)
            torch.testing.assert_close(rewards, truth, atol=1e-6, rtol=0)


@pytest.mark.parametrize("runs,kw,needle", [
    ([GymRun("nope", 0)], {}, "unknown algorithms"),
    ([GymRun("mappo", 0)], {"critic_lr": 0.0}, "learning rates"),
    ([GymRun("grpo", 0), GymRun("grpo", 0)], {}, "twice"),
    ([GymRun("grpo", 0)], {"schedule": "sometimes"}, "schedule="),
    ([GymRun("grpo", 0)], {"temperature": 0.0}, "temperature=0.0"),
    ([GymRun("grpo", 0)], {"steps": 0}, "steps=0"),
    ([GymRun("grpo", 0)], {"model": ""}, "warm start"),
])
def test_bad_gym_settings_name_the_fix(runs, kw, needle):
    cfg = GymConfig(**{"model": "some/folder", **kw})
    with pytest.raises(ValueError, match=needle):
        cfg.validate(runs)


@pytest.mark.slow
def test_shapley_on_a_game_whose_agents_read_each_other_is_refused(cache):
    cfg = GymConfig(env="signal_v0", model=str(warm_start("signal_v0", cache=cache)))
    with pytest.raises(ValueError, match="coalition"):
        GymBatch(cfg, [GymRun("shapley", 0)])
