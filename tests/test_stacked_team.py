"""The stacked many-adapter team: one adapter of it is peft's LoRA, a row sampled in a batch is the row sampled
alone, sampled log-probs are the trainer's recomputation, and StackedAdamW is torch's AdamW per adapter."""

from __future__ import annotations

import pytest
import torch

from ccpo_agents.stacked_team import Row, StackedAdamW, StackedTeam
from ccpo_agents.tiny_lm import build_word_lm, word_tokenizer

WORDS = ["part", "0", "1", ":", "a", "b", "c", "d", "e", ";", "message", "user", "assistant", "fact", "pass"]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(build_word_lm(tmp_path_factory.mktemp("wl") / "m", WORDS, seed=1))


def nudged_team(path, seeds):
    team = StackedTeam(path, seeds=seeds)
    g = torch.Generator().manual_seed(0)
    for layer in team.layers:  # B starts at zero (identity adapters); make every adapter different
        layer.B.data = torch.randn(layer.B.shape, generator=g) * 0.3
    return team


def prompt(team, text):
    return tuple(team.tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                    tokenize=True)["input_ids"])


def test_word_tokenizer_round_trips_and_maps_unknown_words():
    tok = word_tokenizer(WORDS)
    ids = tok("part 0 : c zebra")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["part", "0", ":", "c", "<unk>"]
    assert tok.decode(tok("fact : a")["input_ids"]) == "fact : a"


def test_one_stacked_adapter_equals_peft_lora(tiny):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    team = nudged_team(tiny, [5, 6, 7])
    p, c = prompt(team, "fact : a ; message : b"), [7, 9, team.eos_id]
    lp, mask = team.token_logprobs([1], [p], [c])
    pm = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32),
                        LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS))
    mine = {n: m for n, m in team.model.named_modules() if hasattr(m, "A")}
    for n, m in pm.named_modules():
        key = n.replace("base_model.model.", "")
        if hasattr(m, "lora_A") and key in mine:
            m.lora_A["default"].weight.data.copy_(mine[key].A.data[1])
            m.lora_B["default"].weight.data.copy_(mine[key].B.data[1])
    ids = torch.tensor([list(p) + c])
    ref = pm(ids).logits[0, len(p) - 1:-1].log_softmax(-1).gather(-1, torch.tensor(c)[:, None])[:, 0]
    assert mask[0].tolist() == [True] * 3
    torch.testing.assert_close(lp[0], ref, atol=1e-6, rtol=0)


def test_stacked_values_are_a_value_head_on_peft_lora_and_rows_do_not_mix(tiny):
    """A critic adapter's value is its head on the last prompt token's final hidden state under that adapter (peft's
    LoRA with the same matrices, unpadded, alone); mixed adapters and left padding change nothing; gradients reach only
    the adapters and heads of the rows' own adapters."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    team = nudged_team(tiny, [5, 6, 7])
    team2 = StackedTeam(tiny, seeds=[5, 6, 7], value_heads=True)
    for a, b in zip(team2.layers, team.layers):
        a.B.data.copy_(b.B.data)
    team = team2
    g = torch.Generator().manual_seed(1)
    team.head_w.data = torch.randn(team.head_w.shape, generator=g)
    team.head_b.data = torch.randn(team.head_b.shape, generator=g)
    prompts = [prompt(team, "fact : a ; message : b"), prompt(team, "part 0"), prompt(team, "message : c d e")]
    adapters = [2, 0, 2]
    v = team.values(adapters, prompts)
    pm = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32),
                        LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS))
    mine = {n: m for n, m in team.model.named_modules() if hasattr(m, "A")}
    for i, (a, p) in enumerate(zip(adapters, prompts)):
        for n, m in pm.named_modules():
            key = n.replace("base_model.model.", "")
            if hasattr(m, "lora_A") and key in mine:
                m.lora_A["default"].weight.data.copy_(mine[key].A.data[a])
                m.lora_B["default"].weight.data.copy_(mine[key].B.data[a])
        h = pm(torch.tensor([list(p)]), output_hidden_states=True).hidden_states[-1][0, -1]
        ref = h @ team.head_w.data[a] + team.head_b.data[a, 0]
        torch.testing.assert_close(v[i], ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(team.values([a], [p])[0], v[i], atol=1e-5, rtol=0)  # padding: float rounding
    v.sum().backward()
    assert team.head_w.grad[1].abs().sum() == 0 and team.head_w.grad[[0, 2]].abs().sum() > 0
    assert team.layers[0].A.grad[1].abs().sum() == 0 and team.layers[0].A.grad[2].abs().sum() > 0


def test_an_adapters_init_depends_on_its_seed_alone(tiny):
    a, b = StackedTeam(tiny, seeds=[3, 9]), StackedTeam(tiny, seeds=[9])
    assert torch.equal(a.layers[0].A.data[1], b.layers[0].A.data[0])
    assert not torch.equal(a.layers[0].A.data[0], a.layers[0].A.data[1])


def test_rows_sampled_in_a_batch_equal_rows_sampled_alone_and_their_recomputed_logprobs(tiny):
    team = nudged_team(tiny, [10, 11, 12, 13])
    texts = ["part 0 : c", "fact : a ; message : b", "part 1 : e"]
    rows = [Row(a, prompt(team, texts[i % 3]), 1.0, 100 + i) for i, a in enumerate([0, 2, 2, 3, 0, 1, 2])]
    batch = team.generate(rows, 4)
    for r, b in zip(rows, batch):
        alone = team.generate([r], 4)[0]
        assert alone.completion_ids == b.completion_ids and alone.finish_reason == b.finish_reason
        assert alone.logprobs == pytest.approx(b.logprobs, abs=1e-6)
        assert b.finish_reason == ("stop" if b.completion_ids[-1] == team.eos_id else "length")
    lp, mask = team.token_logprobs([r.adapter for r in rows], [r.prompt_ids for r in rows],
                                   [b.completion_ids for b in batch])
    for i, b in enumerate(batch):
        assert int(mask[i].sum()) == len(b.completion_ids)
        assert lp[i, :len(b.logprobs)].tolist() == pytest.approx(b.logprobs, abs=1e-5)
    # greedy is the argmax, whatever the seed
    g1 = team.generate([Row(2, rows[1].prompt_ids, 0.0, 1)], 3)[0]
    g2 = team.generate([Row(2, rows[1].prompt_ids, 0.0, 2)], 3)[0]
    assert g1.completion_ids == g2.completion_ids


def test_sampling_follows_the_tempered_distribution(tiny):
    team = nudged_team(tiny, [4])
    p = prompt(team, "part 0 : c")
    n = 3000
    outs = team.generate([Row(0, p, 0.7, s) for s in range(n)], 1)
    freq = torch.bincount(torch.tensor([o.completion_ids[0] for o in outs]), minlength=len(team.tokenizer)) / n
    logits = team.model(input_ids=torch.tensor([list(p)])).logits[0, -1]
    probs = (logits / 0.7).softmax(-1)
    assert (freq - probs).abs().max() < 4 * (probs * (1 - probs) / n).sqrt().max() + 1e-3


def test_stacked_adamw_is_torch_adamw_per_adapter_and_leaves_the_others(tiny):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(3, 4, 5))
    ref = [torch.nn.Parameter(w.data[m].clone()) for m in range(3)]
    opt = StackedAdamW([w], lr=1e-2, weight_decay=0.01, max_grad_norm=1.0)
    refs = [torch.optim.AdamW([r], lr=1e-2, weight_decay=0.01) for r in ref]
    schedule = [[0, 1, 2], [1], [0, 1], [2], [0, 1, 2]]
    for k, which in enumerate(schedule):
        g = torch.randn(3, 4, 5) * (k + 1)
        w.grad = g.clone()
        before = w.data.clone()
        opt.step(which)
        for m in range(3):
            if m in which:
                ref[m].grad = g[m].clone()
                torch.nn.utils.clip_grad_norm_([ref[m]], 1.0)
                refs[m].step()
                torch.testing.assert_close(w.data[m], ref[m].data, atol=1e-6, rtol=1e-5)
            else:
                assert torch.equal(w.data[m], before[m])


def test_out_of_range_adapter_is_a_clear_error(tiny):
    team = StackedTeam(tiny, seeds=[1, 2])
    with pytest.raises(ValueError, match="out of range for 2 adapters"):
        team.generate([Row(2, prompt(team, "fact : a"), 1.0, 0)], 2)
