"""The GPU path, proved on a CPU-only machine: every op of a training step runs on the trainer's device.

PyTorch's ``meta`` device stands in for the accelerator: a tensor created without the team's device lands on the
CPU, and the dispatch mode below records every op whose (non-scalar) inputs mix ``cpu`` and ``meta`` - exactly the
op that would meet a CPU tensor and a CUDA one on a GPU (where PyTorch raises). Meta tensors hold no data, so the
mode answers the few data-dependent reads (``.item()`` inside transformers' mask code) with a constant; the values
are meaningless, the placement is what is checked.
"""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ccpo_agents.hf_backend import HFTeam, LoraSpec
from ccpo_agents.policy import Completion
from ccpo_agents.prefix_plan import buckets, plan, rest_lengths
from ccpo_algos.advantage import AdvantageConfig, mappo_advantage
from ccpo_algos.config import preset
from ccpo_algos.loss import LossConfig, value_loss
from ccpo_algos.update import policy_step


class MetaAsAccelerator(TorchDispatchMode):
    """Records every op whose tensor inputs (0-dim CPU scalars excepted, as on CUDA) span ``cpu`` and ``meta``."""

    def __init__(self):
        super().__init__()
        self.ops, self.mixed = 0, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat, _ = tree_flatten((args, kwargs))
        devices = {t.device.type for t in flat if isinstance(t, torch.Tensor) and t.dim() > 0}
        self.ops += 1
        if {"cpu", "meta"} <= devices:
            self.mixed.append(str(func))
        if func is torch.ops.aten._local_scalar_dense.default and args[0].device.type == "meta":
            return True if args[0].dtype == torch.bool else 1  # a data-dependent read: no data on meta
        if func is torch.ops.aten.equal.default and "meta" in devices:
            return True
        return func(*args, **kwargs)


TURNS = [Completion("agent_0", "x", [1, 2, 3, 4], [5, 6, 7], [-1.0, -2.0, -1.5], "stop"),
         Completion("agent_0", "y", [1, 2], [5, 6, 7, 8], [-1.0] * 4, "stop")]


_Q = list(range(1, 25))
GROUP = [Completion("agent_0", "x", _Q, list(range(30, 50)), [-1.0] * 20, "stop"),
         Completion("agent_0", "y", _Q, [7, 9], [-1.0] * 2, "stop"),
         Completion("agent_0", "z", _Q, [8], [-1.0], "stop")]  # one prompt: the shared-prefix path, 2 length buckets


@pytest.fixture(scope="module")
def meta_team(tiny_model):
    # rows this short pay for length buckets only at a small per-call overhead: 4 positions
    return HFTeam(tiny_model, ["agent_0"], LoraSpec(8, 16), "float32", critic=True, device="meta", bucket_overhead=4,
                  pack_limit=0)


@pytest.mark.parametrize("kind,mini_batch,pi_old,turns,pack", [
    ("turn", 0, "trainer", TURNS, 0), ("gspo", 1, "trainer", TURNS, 0), ("token", 0, "engine", TURNS, 0),
    ("turn", 0, "trainer", GROUP, 0), ("turn", 0, "trainer", GROUP, 1024), ("token", 0, "engine", TURNS, 1024)])
def test_every_op_of_a_policy_step_runs_on_the_team_device(meta_team, tiny_model, kind, mini_batch, pi_old, turns,
                                                           pack):
    """Forward (one sequence per turn, a shared prompt prefix once, or a packed micro-batch with its block mask),
    loss (with KL to the reference), backward, gradient clipping and the AdamW step."""
    cfg = preset("smoke", model=tiny_model, group_size=1, prompts_per_step=len(turns), ppo_mini_batch=mini_batch,
                 pi_old=pi_old, kl_coef=0.1)
    opt = torch.optim.AdamW(meta_team.trainable_parameters("agent_0"), lr=1e-3)
    adv = torch.linspace(1.0, -1.0, len(turns))  # advantages arrive from the credit stage on the CPU
    meta_team.pack_limit = pack
    if turns is GROUP and not pack:
        prompts, comps = [t.prompt_ids for t in turns], [t.completion_ids for t in turns]
        clusters = plan(prompts, comps, overhead=4)
        assert clusters is not None and len(buckets(rest_lengths(prompts, comps, clusters), 4)) == 2
    with MetaAsAccelerator() as mode:
        stats = policy_step(meta_team, "agent_0", opt, turns, adv, cfg, LossConfig(kind=kind, kl_coef=0.1))
    meta_team.pack_limit = 0
    assert mode.ops > 500, "the step did not run"
    assert mode.mixed == [], f"ops that would meet a CPU and a CUDA tensor: {sorted(set(mode.mixed))}"
    assert {v.device.type for v in stats.values()} == {"meta"}
    assert all(p.device.type == "meta" for p in meta_team.trainable_parameters("agent_0"))


def test_critic_values_advantage_and_value_loss_run_on_the_team_device(meta_team):
    stage = torch.tensor([0, 1])  # layout (host ints), as the trainer passes it
    with MetaAsAccelerator() as mode:
        v = meta_team.values([[1, 2, 3], [4, 5], [1, 2, 3], [9]]).view(2, 2)  # (E, S); a prompt seen twice
        rewards = torch.tensor([[1.0, 1.0], [0.0, 0.0]]).to("meta")
        adv, ret = mappo_advantage(rewards, torch.tensor([0, 0], device="meta"), v.detach()[:, stage.tolist()],
                                   stage, AdvantageConfig())
        value_loss(v, v.detach(), ret.float()).backward()
    assert mode.mixed == [], sorted(set(mode.mixed))
    assert adv.device.type == "meta" and meta_team.value_head.weight.grad.device.type == "meta"


def test_the_check_catches_a_tensor_left_on_the_cpu(meta_team, tiny_model, monkeypatch):
    """Negative control: a batch built without the team's device is caught."""
    real = HFTeam._batch

    def cpu_batch(self, prompts, comps):
        ids, att, pos, cmask, C = real(self, prompts, comps)
        return ids, att.cpu(), pos, cmask, C  # the bug: the attention mask left on the host

    monkeypatch.setattr(HFTeam, "_batch", cpu_batch)
    cfg = preset("smoke", model=tiny_model, group_size=1, prompts_per_step=2)
    opt = torch.optim.AdamW(meta_team.trainable_parameters("agent_0"), lr=1e-3)
    caught = False
    with MetaAsAccelerator() as mode:
        try:
            policy_step(meta_team, "agent_0", opt, TURNS, torch.tensor([1.0, -1.0]), cfg, LossConfig())
        except (RuntimeError, NotImplementedError):
            caught = True  # PyTorch itself refused the mix
    assert caught or mode.mixed
