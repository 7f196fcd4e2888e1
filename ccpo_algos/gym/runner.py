"""Many gym runs trained together: every (algorithm, seed) of one game in one process, one stacked team.

Each run is a row of :data:`~ccpo_algos.algorithms.ALGORITHMS` on its own seed. A step is the trainer's phases for
all runs at once: one rollout (:func:`~ccpo_algos.rollout.collect_runs`: one forward pass per wave for every run),
each run's credit and advantage by its own row (the same functions as ``ccpo train``; CCPO's running statistics
per run; MAPPO's critic is the run's own critic adapter and value head, read by one forward pass for every critic
run), one log-prob pass and one backward for every run's trained roles and critics, and each adapter's own AdamW
step.
A run's tasks, sampling noise and adapter init depend only on its seed, so a run batched with others repeats the
same run alone (``tests/test_gym_runner.py`` measures how exactly).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ccpo_agents.hf_backend import CRITIC
from ccpo_agents.policy import ChatFormatter, SamplingConfig
from ccpo_agents.stacked_team import StackedAdamW, StackedTeam
from ccpo_algos.advantage import AdvantageConfig, stage_targets
from ccpo_algos.algorithms import ALGORITHMS
from ccpo_algos.credit import CreditConfig, EmaState
from ccpo_algos.gym.policy import StackedPolicy
from ccpo_algos.gym.records import StepRecord, step_record
from ccpo_algos.loss import LossConfig, policy_loss, value_loss
from ccpo_algos.rollout import RolloutBatch, RunRollout, collect_runs, request_seed, team_layout
from ccpo_algos.trainer import batch_indices
from ccpo_envs import make
from ccpo_envs.prompts import team_role_prompts
from ccpo_envs.registry import ENVS, env_tasks

SCHEDULES = ("simultaneous", "alternate")


@dataclass(frozen=True)
class GymRun:
    """One run of a batch: an algorithm row and a seed."""

    algo: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.algo}/seed{self.seed}"


@dataclass(frozen=True)
class GymConfig:
    """How the runs of one gym game train (every run of a batch shares it).

    Attributes:
        env: a credit-gym env (an env that makes its own tasks and reports true contributions:
            ``ccpo_envs.gym.GYM_ENVS``).
        env_options: the game's options (``symbols``; the noisy vote's ``n``, ``reliability``).
        model: the warm-started model folder (:func:`ccpo_algos.gym.warmstart.warm_start`).
        steps: training steps; with ``simultaneous`` every agent is updated at each.
        prompts_per_step: tasks per step per run (``B``).
        group_size: samples per task (``G``).
        temperature: sampling temperature of training and of evaluation (the gym's policies are stochastic by
            design: a greedy policy of a warm start is already its teacher's mode).
        max_tokens: completion cap; an answer is one symbol and an end token, so the default 4 never binds.
        lr: AdamW learning rate of the adapters.
        critic_lr: AdamW learning rate of MAPPO's critic (its own adapter and value head per run; ``ccpo train``'s
            1e-4 is for a 135M model, the gym's tiny one learns at the actors' rate).
        lora_r, lora_alpha: adapter shape.
        grad_clip: per-adapter gradient-norm clip.
        schedule: ``simultaneous`` or ``alternate`` (one agent per block of ``switch_every`` steps).
        switch_every: block length of ``alternate``.
        eval_every: steps between evaluations (0: only at the end); the untrained team is evaluated at step 0.
        eval_size: held-out tasks per evaluation (the same items and noise for every run of a seed).
        train_size, eval_split: the task pools.
        credit, advantage, loss: the algorithms' settings (SPEC defaults, except the truncation rule).
            ``credit.truncation`` is also the env's rule. The gym's default is ``off``: an answer is read from a
            message's first word, so its length and whether it was cut at ``max_tokens`` play no part, and no rule
            can win or lose on the token cap. ``episode`` (the reference's rule) makes a cut turn score 0 after
            shaping, above a finished wrong answer under CCPO: measured, CCPO then collapses onto the cap within
            ~10 steps on the split key (``benchmarks/measured/2026-12-03-gym-pilot/``).
    """

    env: str = ""
    env_options: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    steps: int = 100
    prompts_per_step: int = 4
    group_size: int = 4
    temperature: float = 1.0
    max_tokens: int = 4
    lr: float = 2e-3
    critic_lr: float = 2e-3
    lora_r: int = 8
    lora_alpha: int = 16
    grad_clip: float = 1.0
    schedule: str = "simultaneous"
    switch_every: int = 10
    eval_every: int = 10
    eval_size: int = 64
    train_size: int = 2000
    eval_split: str = "eval"
    credit: CreditConfig = field(default_factory=lambda: CreditConfig(truncation="off"))
    advantage: AdvantageConfig = field(default_factory=AdvantageConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def validate(self, runs: Sequence[GymRun]) -> None:
        """``ValueError`` naming the fix for a bad setting, before anything is built."""
        if not runs:
            raise ValueError("no runs: give at least one (algorithm, seed)")
        bad = sorted({r.algo for r in runs if r.algo not in ALGORITHMS})
        if bad:
            raise ValueError(f"unknown algorithms {bad}; registered: {sorted(ALGORITHMS)}")
        if len({(r.algo, r.seed) for r in runs}) != len(runs):
            raise ValueError("the same (algorithm, seed) twice in one batch; give each run once")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r}: use one of {SCHEDULES}")
        for name in ("steps", "prompts_per_step", "group_size", "max_tokens", "eval_size", "lora_r", "switch_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 1")
        if self.lr <= 0 or self.critic_lr <= 0:
            raise ValueError(f"lr={self.lr}, critic_lr={self.critic_lr}: learning rates must be > 0")
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature}: the gym trains and evaluates by sampling; use > 0")
        if not self.model:
            raise ValueError("model is empty: pass the warm start's folder (ccpo_algos.gym.warmstart.warm_start)")
        if self.env not in ENVS or ENVS[self.env].tasks is None:
            raise ValueError(f"env={self.env!r}: the gym trains an env that makes its own tasks; choose from "
                             f"{sorted(e for e, m in ENVS.items() if m.tasks is not None)}")


def trained_roles(cfg: GymConfig, step: int, agents: Sequence[str]) -> list[str]:
    """The roles updated at ``step`` (1-based): all, or one per block of ``switch_every`` (CCPO v1's ``alternate``)."""
    if cfg.schedule == "simultaneous":
        return list(agents)
    return [agents[(step // cfg.switch_every) % len(agents)]]


@dataclass
class GymResult:
    """What a batch of runs produced.

    Attributes:
        runs: the runs, in order.
        agents: the game's agent ids.
        eval_steps: the steps evaluated (0: the untrained team).
        eval_success: ``(runs, len(eval_steps))`` held-out team success (mean reward over ``eval_size`` tasks).
        eval_items: ``(runs, len(eval_steps), eval_size)`` each held-out task's reward (paired across runs of a seed).
        eval_agent_correct: ``(runs, len(eval_steps), A)`` each agent's own-answer accuracy on the held-out tasks.
        records: per run, per step, the episode-level credit record (:class:`~ccpo_algos.gym.records.StepRecord`).
        seconds: wall time of each phase, summed over steps.
    """

    runs: list[GymRun]
    agents: list[str]
    eval_steps: list[int]
    eval_success: np.ndarray
    eval_items: np.ndarray
    eval_agent_correct: np.ndarray
    records: list[list[StepRecord]]
    seconds: dict[str, float]


class GymBatch:
    """The runs of one batch, their envs, team, optimiser and credit states."""

    def __init__(self, cfg: GymConfig, runs: Sequence[GymRun], device: str = "cpu"):
        cfg.validate(runs)
        self.cfg, self.runs = cfg, list(runs)
        opts = dict(cfg.env_options)
        counterfactual = True  # the truth and the counterfactual metrics need the removed worlds for every row
        self.train_src = env_tasks(cfg.env, "train", 0, cfg.train_size, **opts)
        self.eval_src = env_tasks(cfg.env, cfg.eval_split, 0, cfg.eval_size, **opts)
        E = cfg.prompts_per_step * cfg.group_size
        self.envs = [[make(cfg.env, api="aec", source=self.train_src, counterfactual=counterfactual,
                           truncation=cfg.credit.truncation, **opts) for _ in range(E)] for _ in self.runs]
        self.eval_envs = [[make(cfg.env, api="aec", source=self.eval_src, counterfactual=counterfactual,
                                truncation=cfg.credit.truncation, **opts) for _ in range(cfg.eval_size)]
                          for _ in self.runs]
        topo = self.envs[0][0].unwrapped.topology
        if any(ALGORITHMS[r.algo].needs_coalitions for r in self.runs) and not topo.independent:
            raise ValueError(f"exact Shapley credit needs every coalition's outcome, which {cfg.env} does not record "
                             "(its agents read each other's messages); leave shapley out for it")
        self.agents = list(topo.agents)
        self.stage, self.gate = team_layout(topo)
        used = sorted(set(self.stage.tolist()))
        self.stage_layout = torch.tensor([used.index(s) for s in self.stage.tolist()])
        seeds = [request_seed("adapter", r.seed, a) for r in self.runs for a in self.agents]
        # a critic run (MAPPO) also owns one critic adapter with its value head, after every run's actors
        self.critic_of = {k: len(seeds) + i for i, k in enumerate(
            k for k, r in enumerate(self.runs) if ALGORITHMS[r.algo].needs_critic)}
        seeds += [request_seed("critic", self.runs[k].seed) for k in self.critic_of]
        self.team = StackedTeam(cfg.model, seeds, r=cfg.lora_r, alpha=cfg.lora_alpha,
                                value_heads=bool(self.critic_of), device=device)
        self.policy = StackedPolicy(self.team, self.agents, len(self.runs), team_role_prompts(topo))
        self.critic_format = ChatFormatter(self.team.tokenizer, {})
        self.used_stages = used
        self.opt = StackedAdamW(self.team.parameters(), lr=cfg.lr, max_grad_norm=cfg.grad_clip)
        self.states: list[EmaState | None] = [None] * len(self.runs)
        self.sampling = SamplingConfig(cfg.temperature, 1.0, cfg.max_tokens)
        self.values: dict[int, torch.Tensor] = {}  # critic run -> (E, S) stage values of this step, with grad
        self.returns: dict[int, torch.Tensor] = {}

    # ------------------------------------------------------------------------------------------ phases
    def rollout(self, step: int) -> list[RolloutBatch]:
        """ROLLOUT: every run's episodes of ``step``, one generation call per wave."""
        cfg = self.cfg
        plays = [RunRollout(self.envs[k], [self.train_src[i] for i in batch_indices(
            r.seed, step, cfg.prompts_per_step, len(self.train_src))], request_seed(r.seed, step))
            for k, r in enumerate(self.runs)]
        return collect_runs(plays, cfg.group_size, self.policy, self.sampling)

    def stage_values(self, rbs: Sequence[RolloutBatch]) -> dict[int, torch.Tensor]:
        """The critic runs' values ``(E, S)`` of the joint transcript before each stage, with gradients (one forward
        pass for every critic run; the update's value loss reuses them, as ``ccpo train``'s does)."""
        if not self.critic_of:
            return {}
        adapters, prompts, shape = [], [], {}
        for k, m in self.critic_of.items():
            texts = rbs[k].stage_texts
            shape[k] = (len(texts), len(texts[0]))
            for t in texts:
                for text in t:
                    adapters.append(m)
                    prompts.append(self.critic_format.prompt_ids(CRITIC, text))
        flat = self.team.values(adapters, prompts)
        out, at = {}, 0
        for k, (E, S) in shape.items():
            out[k] = flat[at:at + E * S].view(E, S)
            at += E * S
        return out

    def credit_and_advantage(self, rbs: Sequence[RolloutBatch]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """CREDIT and ADVANTAGE: each run by its own row (its own running statistics); ``(rewards, advantages)``.
        A critic run's values and returns are kept for the update's value loss."""
        out = []
        self.values, self.returns = self.stage_values(rbs), {}
        for k, (run, rb) in enumerate(zip(self.runs, rbs)):
            algo = ALGORITHMS[run.algo]
            batch = rb.credit_batch(self.gate)
            rewards, self.states[k] = algo.credit(batch, self.states[k], self.cfg.credit)
            if not torch.isfinite(rewards).all():
                raise FloatingPointError(f"{run.name}: the credit is not finite; check the credit settings")
            values = self.values[k].detach()[:, self.stage.tolist()] if k in self.values else None  # (E, A)
            adv, returns = algo.advantage(rewards, rb.group_ids, values, self.stage_layout, self.cfg.advantage)
            if k in self.values:
                self.returns[k] = returns
            out.append((rewards, adv))
        return out

    def critic_loss(self) -> torch.Tensor:
        """The critic runs' clipped value losses, summed (each as its run alone computes it): the values at each
        stage where some agent starts against the row's returns there."""
        total = torch.zeros((), device=self.team.device)
        for k, v in self.values.items():
            target = stage_targets(self.returns[k], self.stage_layout).to(torch.float32)
            sv = v[:, self.used_stages]
            total = total + value_loss(sv, sv.detach(), target, self.cfg.loss.value_clip)
        return total

    def update(self, step: int, rbs: Sequence[RolloutBatch], advs: Sequence[torch.Tensor]) -> dict[str, float]:
        """UPDATE: one log-prob pass and one backward over every run's trained roles; each adapter's own AdamW."""
        roles = trained_roles(self.cfg, step, self.agents)
        adapters, prompts, comps, adv_rows = [], [], [], []
        for k, rb in enumerate(rbs):
            for role in roles:
                turns, episode, index = rb.role_turns(role)
                a = advs[k][:, self.agents.index(role)]  # (E,) or, for per-turn rules, (E, T)
                for c, e, t in zip(turns, episode, index):
                    if not c.completion_ids:
                        continue  # a skipped turn trains nothing
                    adapters.append(self.policy.adapter(k, role))
                    prompts.append(c.prompt_ids)
                    comps.append(c.completion_ids)
                    adv_rows.append(float(a[e, t]) if a.dim() == 2 else float(a[e]))
        self.opt.zero_grad()
        critics = list(self.critic_of.values())
        if not adapters and not critics:
            return {"loss": 0.0}
        total = torch.zeros((), device=self.team.device)
        if adapters:
            lp, mask = self.team.token_logprobs(adapters, prompts, comps, self.cfg.temperature)
            adv_t = torch.tensor(adv_rows, dtype=torch.float32, device=lp.device)
            own = torch.tensor(adapters, device=lp.device)
            for m in own.unique().tolist():  # each adapter's loss as its run alone would compute it; they add up
                sel = (own == m).nonzero()[:, 0]
                loss, _ = policy_loss(lp[sel], lp[sel].detach(), adv_t[sel], mask[sel], self.cfg.loss)
                total = total + loss
        vl = self.critic_loss()
        (total + vl).backward()  # the critics' value losses reach only their own adapters and heads
        norms = self.opt.step(sorted(set(adapters)))
        if critics:
            norms = torch.cat([norms, self.opt.step(critics, lr=self.cfg.critic_lr)])
        if not torch.isfinite(norms).all():
            raise FloatingPointError("a gradient is not finite; the step is not applied further")
        return {"loss": float(total.detach()) / max(1, len(set(adapters))), "value_loss": float(vl.detach())}

    def evaluate(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Held-out team reward per run and item ``(runs, eval_size)`` and own-answer accuracy per agent
        ``(runs, A)``, sampled at the training temperature; the same items and noise for every run of a seed."""
        cfg = self.cfg
        items = [self.eval_src[i] for i in range(cfg.eval_size)]
        plays = [RunRollout(self.eval_envs[k], items, request_seed("eval", r.seed, step))
                 for k, r in enumerate(self.runs)]
        rbs = collect_runs(plays, 1, self.policy, self.sampling)
        rewards = np.array([[float(i["reward_joint"]) for i in rb.infos] for rb in rbs])
        correct = np.array([[np.mean([bool(i["correct"][a]) for i in rb.infos]) for a in self.agents] for rb in rbs])
        return rewards, correct


def train_gym(cfg: GymConfig, runs: Sequence[GymRun], device: str = "cpu",
              on_step: Callable[[int], None] | None = None) -> GymResult:
    """Train ``runs`` together on ``cfg``'s game; returns their evaluations and credit records."""
    b = GymBatch(cfg, runs, device)
    gc.collect()
    gc.freeze()  # the batch's many long-lived objects (envs, tasks) leave the collector's scans: ~10 % of a step
    try:
        return _train(b, on_step)
    finally:
        gc.unfreeze()


def _train(b: GymBatch, on_step: Callable[[int], None] | None) -> GymResult:
    cfg = b.cfg
    seconds = {"rollout": 0.0, "credit": 0.0, "update": 0.0, "eval": 0.0}
    eval_steps, succ, items, agent_acc = [], [], [], []
    records: list[list[StepRecord]] = [[] for _ in b.runs]

    def evaluate(step: int) -> None:
        t0 = time.perf_counter()
        r, c = b.evaluate(step)
        eval_steps.append(step)
        items.append(r)
        succ.append(r.mean(1))
        agent_acc.append(c)
        seconds["eval"] += time.perf_counter() - t0

    evaluate(0)
    for step in range(1, cfg.steps + 1):
        # ROLLOUT
        t0 = time.perf_counter()
        rbs = b.rollout(step)
        seconds["rollout"] += time.perf_counter() - t0
        # CREDIT, ADVANTAGE
        t1 = time.perf_counter()
        ca = b.credit_and_advantage(rbs)
        seconds["credit"] += time.perf_counter() - t1
        # UPDATE
        t2 = time.perf_counter()
        b.update(step, rbs, [adv for _, adv in ca])
        seconds["update"] += time.perf_counter() - t2
        # LOG
        for k, (rb, (rewards, adv)) in enumerate(zip(rbs, ca)):
            records[k].append(step_record(step, rb, rewards, adv, trained_roles(cfg, step, b.agents)))
        if (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps:
            evaluate(step)
        if on_step is not None:
            on_step(step)
    return GymResult(b.runs, b.agents, eval_steps, np.stack(succ, 1), np.stack(items, 1), np.stack(agent_acc, 1),
                     records, seconds)
