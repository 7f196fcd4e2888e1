"""transformers + peft training backend: a frozen base, one LoRA adapter per role, token log-probs, a critic.

The trainer speaks tokens: :meth:`HFTeam.token_logprobs` scores given ``(prompt, completion)`` token pairs under a
role's adapter. A micro-batch runs as one packed sequence where it fits ``pack_limit``: the prompt prefix its rows
share (a GRPO group's samples, a team's system prompt and question) once, every row's rest after it, a block
attention mask, no padding, logits only where a completion token is predicted. Longer micro-batches run padded:
left-padded prompts and right-padded completions, or a shared prefix once and the rest against its cached keys and
values, in length buckets (:mod:`ccpo_agents.prefix_plan` chooses).
:meth:`HFTeam.save_adapter` writes a role's adapter in peft format (safetensors), atomically, for the rollout engine
to load.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ccpo_agents.prefix_plan import BUCKET_OVERHEAD, buckets, pack_plan, packed_length, plan

#: Projection names LoRA adapts by default (Llama / Qwen2 / Mistral families).
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
CRITIC = "critic"
#: Longest packed micro-batch (tokens): its attention mask and scores grow with the square of the length.
PACK_LIMIT = 1024


@dataclass(frozen=True)
class LoraSpec:
    """LoRA adapter shape.

    Attributes:
        r: rank.
        alpha: scaling numerator (``alpha / r``).
        dropout: dropout on the adapter input.
        target_modules: module names to adapt.
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: tuple[str, ...] = field(default=DEFAULT_TARGETS)

    def peft_config(self) -> Any:
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(self.target_modules), task_type="CAUSAL_LM")


def _dtype(name: str, device: str = "cpu") -> torch.dtype:
    from ccpo_agents.hardware import resolve_dtype

    name = resolve_dtype(name, device) if name == "auto" else name
    try:
        return {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}[name]
    except KeyError as e:
        raise ValueError(f"dtype={name!r}: use bfloat16, float16 or float32") from e


class HFTeam:
    """One base model shared by all roles, each role with its own LoRA adapter (or, for ``full_roles``, its own
    full copy of the model: the reference recipe's full fine-tune); optionally a critic.

    Args:
        model: model directory or hub id.
        roles: agent roles (one adapter each).
        lora: adapter shape.
        dtype: dtype of the frozen base (adapters are kept in float32); ``auto``: per hardware
            (:func:`ccpo_agents.hardware.resolve_dtype`).
        critic: add a ``critic`` adapter and a linear value head on the last prompt token (MAPPO).
        seed: seed for the adapters' random init.
        device: where the model, the value head and every tensor this class creates live (``cuda:0``, ``cpu``).
        full_roles: roles trained as full models (float32 master weights, forward under bf16 autocast where the
            compute dtype is bf16); memory: weights + gradients + two AdamW moments, 16 bytes per parameter each.
        share_prompts: in :meth:`token_logprobs`, run the prompt prefix that rows of a micro-batch share once and
            score the rest against its cached keys and values where that computes fewer token positions
            (:mod:`ccpo_agents.prefix_plan`: a GRPO group's samples share their whole prompt, a team's agents the
            system prompt and question); ``False``: one full sequence per row. The same numbers up to float
            rounding.
        bucket_overhead: with ``share_prompts``, the rest of the rows runs in length buckets, one forward call
            each, where that saves more padded positions than this per extra call (``None``: one call).
        pack_limit: in :meth:`token_logprobs`, a micro-batch whose packed sequence (shared prefixes once, every
            row's rest, no padding) is at most this long runs as that one sequence with a block attention mask;
            longer ones run in the padded paths above. ``0``: never pack.
    """

    def __init__(self, model: str, roles: Sequence[str], lora: LoraSpec = LoraSpec(), dtype: str = "auto",
                 critic: bool = False, seed: int = 0, device: str = "cpu", full_roles: Sequence[str] = (),
                 share_prompts: bool = True, bucket_overhead: int | None = BUCKET_OVERHEAD,
                 pack_limit: int = PACK_LIMIT):
        from peft import get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not roles:
            raise ValueError("HFTeam needs at least one role")
        if CRITIC in roles:
            raise ValueError(f"{CRITIC!r} is reserved for the MAPPO critic adapter")
        unknown = [r for r in full_roles if r not in roles]
        if unknown:
            raise ValueError(f"full_roles {unknown} are not roles of this team {list(roles)}")
        torch.manual_seed(seed)
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.compute_dtype = _dtype(dtype, str(device))
        base = AutoModelForCausalLM.from_pretrained(model, dtype=self.compute_dtype)
        self.roles = list(roles)
        self.lora = lora
        self.share_prompts = share_prompts
        self.bucket_overhead = bucket_overhead
        self.pack_limit = pack_limit
        self.full: dict[str, nn.Module] = {r: AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
                                           for r in full_roles}
        self.updated: set[str] = set()  # full roles whose weights have changed since they were loaded
        names = [r for r in self.roles if r not in self.full] + ([CRITIC] if critic else [])
        self.model = get_peft_model(base, lora.peft_config(), adapter_name=names[0]) if names else base
        for name in names[1:]:
            self.model.add_adapter(name, lora.peft_config())
        self.value_head: nn.Linear | None = None
        if critic:
            self.value_head = nn.Linear(base.config.hidden_size, 1)
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)
        self.to(device)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.tokenizer.eos_token_id or 0)

    def to(self, device: str | torch.device) -> "HFTeam":
        """Move the model (base, adapters) and the value head to ``device``; later tensors are created there."""
        self.device = torch.device(device)
        self.model.to(self.device)
        for m in self.full.values():
            m.to(self.device)
        if self.value_head is not None:
            self.value_head.to(self.device)
        return self

    # ------------------------------------------------------------------------------------------ parameters
    def trainable_parameters(self, role: str) -> list[nn.Parameter]:
        """The parameters one role's optimiser owns (its LoRA matrices or its full model; plus the value head for
        the critic)."""
        if role in self.full:
            return list(self.full[role].parameters())
        marker = f".{role}."
        params = [p for n, p in self.model.named_parameters() if "lora_" in n and marker in n]
        if role == CRITIC and self.value_head is not None:
            params += list(self.value_head.parameters())
        if not params:
            raise KeyError(f"no adapter named {role!r}")
        return params

    def is_identity(self, role: str) -> bool:
        """Whether ``role``'s adapter is still the identity (every ``lora_B`` exactly zero, as at init); for a
        full role, whether its weights are still the base's (see :meth:`mark_updated`)."""
        if role in self.full:
            return role not in self.updated
        return all(not p.detach().any() for n, p in self.model.named_parameters()
                   if "lora_B" in n and f".{role}." in n)

    def mark_updated(self, role: str) -> None:
        """Record that ``role``'s weights changed (an optimiser step or a load)."""
        if role in self.full:
            self.updated.add(role)

    def use(self, role: str) -> None:
        """Route forward passes through ``role``'s adapter (peft makes only that adapter trainable)."""
        if role not in self.full:
            self.model.set_adapter(role)

    def _net(self, role: str, reference: bool) -> tuple[nn.Module, Any]:
        """The module that scores ``role`` and the context to run it in."""
        import contextlib

        if reference:  # the bare base model
            off = self.model.disable_adapter() if hasattr(self.model, "disable_adapter") else contextlib.nullcontext()
            return self.model, off
        if role in self.full:
            fast = self.compute_dtype in (torch.bfloat16, torch.float16)
            return self.full[role], (torch.autocast(self.device.type, dtype=self.compute_dtype) if fast
                                     else contextlib.nullcontext())
        self.use(role)
        return self.model, contextlib.nullcontext()

    # ------------------------------------------------------------------------------------------ batching
    def _batch(self, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]]
               ) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
        P = max(len(p) for p in prompt_ids)
        C = max(1, max(len(c) for c in completion_ids))
        rows, attn, cmask = [], [], []
        for p, c in zip(prompt_ids, completion_ids):
            rows.append([self.pad_id] * (P - len(p)) + list(p) + list(c) + [self.pad_id] * (C - len(c)))
            attn.append([0] * (P - len(p)) + [1] * (len(p) + len(c)) + [0] * (C - len(c)))
            cmask.append([1] * len(c) + [0] * (C - len(c)))
        ids, att = torch.tensor(rows, device=self.device), torch.tensor(attn, device=self.device)
        pos = (att.cumsum(-1) - 1).clamp_min(0)
        return ids, att, pos, torch.tensor(cmask, dtype=torch.bool, device=self.device), C

    def _prompt_batch(self, prompt_ids: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor, Tensor]:
        """Left-padded prompts alone: ``(ids, attention mask, positions)``."""
        ids, att, pos, _, _ = self._batch(prompt_ids, [[] for _ in prompt_ids])
        return ids[:, :-1], att[:, :-1], pos[:, :-1]  # drop the empty completion's padding column

    def token_logprobs(self, role: str, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]],
                       micro_batch: int = 8, reference: bool = False, temperature: float = 1.0
                       ) -> tuple[Tensor, Tensor]:
        """Log-probs of each completion token under ``role``'s adapter (``reference=True``: the bare base model),
        of the sampling distribution at ``temperature``: ``log_softmax(logits / T)`` (what vLLM reports with
        ``logprobs_mode="processed_logprobs"`` and top_p = 1).

        Returns:
            ``(logprobs (N, L) float32, mask (N, L) bool)`` on :attr:`device`; gradients flow under grad mode.
        """
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0 for log-probs, got {temperature}")
        if reference:
            with torch.no_grad():
                return self._token_logprobs(role, prompt_ids, completion_ids, micro_batch, True, temperature)
        return self._token_logprobs(role, prompt_ids, completion_ids, micro_batch, False, temperature)

    def _token_logprobs(self, role: str, prompt_ids: Sequence[Sequence[int]],
                        completion_ids: Sequence[Sequence[int]], micro_batch: int, reference: bool,
                        temperature: float) -> tuple[Tensor, Tensor]:
        net, ctx = self._net(role, reference)
        out_lp, out_mask = [], []
        L = max(1, max(len(c) for c in completion_ids))
        with ctx:  # entered once: peft's disable_adapter() is a one-shot context manager
            for s in range(0, len(prompt_ids), micro_batch):
                prompts, comps = prompt_ids[s:s + micro_batch], completion_ids[s:s + micro_batch]
                packed = None
                if self.pack_limit:
                    packed = (pack_plan(prompts, comps) if self.share_prompts
                              else [(len(p) - 1, [r]) for r, p in enumerate(prompts)])
                    if packed_length(prompts, comps, packed) > self.pack_limit:
                        packed = None
                clusters = (plan(prompts, comps, overhead=self.bucket_overhead)
                            if self.share_prompts and packed is None else None)
                if packed is not None:
                    lp, cmask = self._packed_logprobs(net, prompts, comps, packed, temperature)
                elif clusters is not None:
                    lp, cmask = self._shared_prefix_logprobs(net, prompts, comps, clusters, temperature)
                else:
                    lp, cmask = self._plain_logprobs(net, prompts, comps, temperature)
                out_lp.append(nn.functional.pad(lp, (0, L - lp.shape[1])))
                out_mask.append(nn.functional.pad(cmask, (0, L - cmask.shape[1])))
        return torch.cat(out_lp), torch.cat(out_mask)

    def _completion_logprobs(self, logits: Tensor, comps: Sequence[Sequence[int]], temperature: float
                             ) -> tuple[Tensor, Tensor]:
        """``log_softmax(logits / T)`` at each completion token: ``logits (N, C, V)`` predict the completions,
        right-padded to ``C``; returns ``(logprobs (N, C) float32, zero on padding; mask (N, C) bool)``."""
        C = logits.shape[1]
        target = torch.tensor([list(c) + [self.pad_id] * (C - len(c)) for c in comps], device=self.device)
        cmask = self._completion_mask(comps, C)
        lp = (logits.float() / temperature).log_softmax(-1).gather(-1, target[..., None])[..., 0]
        return lp * cmask, cmask

    def _completion_mask(self, comps: Sequence[Sequence[int]], C: int) -> Tensor:
        """``(N, C)`` bool: which of ``C`` right-padded positions hold a completion token."""
        return torch.tensor([[j < len(c) for j in range(C)] for c in comps], dtype=torch.bool, device=self.device)

    def _plain_logprobs(self, net: nn.Module, prompts: Sequence[Sequence[int]], comps: Sequence[Sequence[int]],
                        temperature: float) -> tuple[Tensor, Tensor]:
        """One row per (prompt, completion), left-padded prompts and right-padded completions, so that every
        completion starts at the same position and only its logits are computed."""
        ids, att, pos, _, C = self._batch(prompts, comps)
        logits = net(input_ids=ids, attention_mask=att, position_ids=pos, logits_to_keep=C + 1).logits
        return self._completion_logprobs(logits[:, :-1], comps, temperature)  # position t predicts token t+1

    def _packed_logprobs(self, net: nn.Module, prompts: Sequence[Sequence[int]], comps: Sequence[Sequence[int]],
                         clusters: list[tuple[int, list[int]]], temperature: float) -> tuple[Tensor, Tensor]:
        """:meth:`_plain_logprobs` as one packed sequence (:func:`ccpo_agents.prefix_plan.pack_plan`): each cluster's
        prefix, then each of its rows' rest of prompt + completion minus its last token, positions restarting at
        ``K`` in every rest; a block mask lets a token see what precedes it in its own rest and its cluster's prefix.
        No padding, one forward call, logits only where a completion token is predicted. The same function of the
        weights as one full sequence per row."""
        dev = self.device
        tokens: list[int] = []
        pos: list[int] = []
        owner: list[int] = []  # per token: the row whose rest it is, -1 - cluster for a prefix token
        home: list[int] = []  # per token: the owner id of its cluster's prefix
        at, where = [], []  # per completion token: its predicting position, and (row, j)
        for c, (k, rows) in enumerate(clusters):
            tokens += prompts[rows[0]][:k]
            pos += range(k)
            owner += [-1 - c] * k
            for r in rows:
                rest = list(prompts[r][k:]) + list(comps[r][:-1])
                start = len(tokens) + len(prompts[r]) - k - 1  # the packed index of the last prompt token
                at += [start + j for j in range(len(comps[r]))]
                where += [(r, j) for j in range(len(comps[r]))]
                tokens += rest
                pos += range(k, k + len(rest))
                owner += [r] * len(rest)
            home += [-1 - c] * (len(owner) - len(home))
        own, pre = torch.tensor(owner, device=dev), torch.tensor(home, device=dev)
        idx = torch.arange(len(tokens), device=dev)
        see = (idx[None, :] <= idx[:, None]) & ((own[None, :] == own[:, None]) | (own[None, :] == pre[:, None]))
        mask = torch.zeros(see.shape, dtype=self.compute_dtype, device=dev).masked_fill(
            ~see, torch.finfo(self.compute_dtype).min)
        C = max(1, max(len(c) for c in comps))
        cmask = self._completion_mask(comps, C)
        lp = torch.zeros(len(comps), C, device=dev)
        if not at:  # every completion empty: nothing to score
            return lp, cmask
        logits = net(input_ids=torch.tensor([tokens], device=dev), attention_mask=mask[None, None],
                     position_ids=torch.tensor([pos], device=dev),
                     logits_to_keep=torch.tensor(at, device=dev)).logits[0]  # (T, V)
        target = torch.tensor([comps[r][j] for r, j in where], device=dev)
        flat = (logits.float() / temperature).log_softmax(-1).gather(-1, target[:, None])[:, 0]
        rows_t = torch.tensor([r for r, _ in where], device=dev)
        cols_t = torch.tensor([j for _, j in where], device=dev)
        return lp.index_put((rows_t, cols_t), flat), cmask

    def _shared_prefix_logprobs(self, net: nn.Module, prompts: Sequence[Sequence[int]],
                                comps: Sequence[Sequence[int]], clusters: list[tuple[int, list[int]]],
                                temperature: float) -> tuple[Tensor, Tensor]:
        """:meth:`_plain_logprobs` in two passes (:mod:`ccpo_agents.prefix_plan`): each cluster's shared prompt
        prefix once, its keys and values cached with grad, then each row's rest of prompt + completion against its
        cluster's, in length buckets (one forward call each, padded to its longest row). The same function of the
        weights as one full sequence per row."""
        from transformers import DynamicCache

        dev = self.device
        K, cluster = [0] * len(prompts), [0] * len(prompts)
        for i, (k, rows) in enumerate(clusters):
            for r in rows:
                K[r], cluster[r] = k, i
        ids, att, pos = self._prompt_batch([prompts[rows[0]][:k] for k, rows in clusters])
        prefix = DynamicCache(config=net.config)
        net(input_ids=ids, attention_mask=att, position_ids=pos, past_key_values=prefix, use_cache=True,
            logits_to_keep=1)
        # second pass: rest of prompt + completion minus its last token, right-padded; row r's completion token j
        # is predicted at position start[r] + j (its last prompt token is at start[r])
        rest = [list(p[k:]) + list(c[:-1]) for p, c, k in zip(prompts, comps, K)]
        start = [len(p) - k - 1 for p, k in zip(prompts, K)]
        C = max(1, max(len(c) for c in comps))
        groups = ([list(range(len(rest)))] if self.bucket_overhead is None
                  else buckets([len(x) for x in rest], self.bucket_overhead))
        out_lp, out_mask = [], []
        for rows in groups:
            sel = torch.tensor([cluster[r] for r in rows], device=dev)
            cache = DynamicCache(config=net.config)
            for i, layer in enumerate(prefix.layers):  # this bucket's rows' prefixes (a copy: the call extends it)
                cache.update(layer.keys[sel], layer.values[sel], i)
            S = max(len(rest[r]) for r in rows)
            keep = S - min(start[r] for r in rows)
            tail_ids = torch.tensor([rest[r] + [self.pad_id] * (S - len(rest[r])) for r in rows], device=dev)
            tail_att = torch.tensor([[1] * len(rest[r]) + [0] * (S - len(rest[r])) for r in rows], device=dev)
            tail_pos = torch.tensor([K[r] for r in rows], device=dev)[:, None] + torch.arange(S, device=dev)
            tail = net(input_ids=tail_ids, attention_mask=torch.cat([att[sel], tail_att], -1),
                       position_ids=tail_pos, past_key_values=cache, use_cache=True, logits_to_keep=keep).logits
            Cb = max(1, max(len(comps[r]) for r in rows))
            at = (torch.tensor([start[r] for r in rows], device=dev)[:, None]
                  + torch.arange(Cb, device=dev)).clamp_max(S - 1) - (S - keep)
            lp, cmask = self._completion_logprobs(tail.gather(1, at[..., None].expand(-1, -1, tail.shape[-1])),
                                                  [comps[r] for r in rows], temperature)
            out_lp.append(nn.functional.pad(lp, (0, C - Cb)))
            out_mask.append(nn.functional.pad(cmask, (0, C - Cb)))
        back = torch.tensor([r for rows in groups for r in rows], device=dev).argsort()  # bucket order -> row order
        return torch.cat(out_lp)[back], torch.cat(out_mask)[back]

    def values(self, prompt_ids: Sequence[Sequence[int]], micro_batch: int = 8) -> Tensor:
        """Critic values ``(N,)``: the value head on the last prompt token's final hidden state (critic adapter).
        Each distinct prompt runs once (a GRPO group's G episodes start from one question)."""
        if self.value_head is None:
            raise RuntimeError("this HFTeam has no critic; build it with critic=True")
        self.use(CRITIC)
        first: dict[tuple[int, ...], int] = {}
        row = [first.setdefault(tuple(p), len(first)) for p in prompt_ids]
        unique = [list(p) for p in first]
        vals = []
        for s in range(0, len(unique), micro_batch):
            ids, att, pos = self._prompt_batch(unique[s:s + micro_batch])
            out = self.model(input_ids=ids, attention_mask=att, position_ids=pos, output_hidden_states=True,
                             logits_to_keep=1)
            h = out.hidden_states[-1][:, -1].float()
            vals.append(self.value_head(h)[:, 0])
        return torch.cat(vals)[torch.tensor(row, device=self.device)]

    # ------------------------------------------------------------------------------------------ adapters i/o
    def save_adapter(self, role: str, out: str | os.PathLike) -> Path:
        """Write ``role``'s trainable weights to ``out``, atomically; returns ``out``: its adapter (peft format,
        safetensors) or, for a full role, a model folder (config + safetensors + tokenizer) a vLLM engine reloads."""
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            if role in self.full:
                self.full[role].save_pretrained(tmp, safe_serialization=True)
                self.tokenizer.save_pretrained(tmp)
            else:
                self.model.save_pretrained(tmp, selected_adapters=[role], safe_serialization=True)
            src = tmp / role if (tmp / role).is_dir() else tmp
            if out.exists():
                shutil.rmtree(out)
            os.replace(src, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return out

    def load_adapter_weights(self, role: str, path: str | os.PathLike) -> None:
        """Load saved adapter weights for ``role`` (safetensors only; no pickle)."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        if role in self.full:  # a model folder written by save_adapter (one or several safetensors shards)
            files = sorted(Path(path).glob("*.safetensors"))
            if not files:
                raise FileNotFoundError(f"no *.safetensors in {path}; expected a folder written by save_adapter()")
            state = {k: v for f in files for k, v in load_file(str(f), device=str(self.device)).items()}
            missing, unexpected = self.full[role].load_state_dict(state, strict=False)
            if unexpected or [k for k in missing if k != "lm_head.weight"]:  # lm_head: tied to the embeddings
                raise ValueError(f"{path} does not match {role}'s model (missing {missing}, unexpected {unexpected})")
            self.mark_updated(role)
            return
        f = Path(path) / "adapter_model.safetensors"
        if not f.exists():
            raise FileNotFoundError(f"{f} not found; expected a directory written by save_adapter()")
        set_peft_model_state_dict(self.model, load_file(str(f), device=str(self.device)), adapter_name=role)

    # ------------------------------------------------------------------------------------------ slow generation
    @torch.no_grad()
    def generate_ids(self, role: str, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int,
                     temperature: float = 1.0, top_p: float = 1.0) -> list[list[int]]:
        """Sample completions with transformers' ``generate`` (slow path, for debugging and cross-checks)."""
        net = self.full.get(role)
        if net is None:
            self.use(role)
            net = self.model
        P = max(len(p) for p in prompt_ids)
        ids = torch.tensor([[self.pad_id] * (P - len(p)) + list(p) for p in prompt_ids], device=self.device)
        att = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompt_ids], device=self.device)
        do_sample = temperature > 0
        gen = net.generate(input_ids=ids, attention_mask=att, max_new_tokens=max_new_tokens,
                           do_sample=do_sample, temperature=temperature if do_sample else None,
                           top_p=top_p if do_sample else None, pad_token_id=self.pad_id)
        eos = self.tokenizer.eos_token_id
        outs = []
        for row in gen[:, P:].tolist():
            cut = row.index(eos) + 1 if eos in row else len(row)
            outs.append([t for t in row[:cut] if t != self.pad_id or t == eos])
        return outs
