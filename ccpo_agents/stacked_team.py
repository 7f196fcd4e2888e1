"""Many LoRA adapters on one frozen base, all served by one forward pass: the credit gym's many-runs-at-once team.

:class:`StackedTeam` loads a real transformers causal LM and replaces each target ``nn.Linear`` with a
:class:`StackedLinear` that holds ``M`` LoRA adapters as stacked tensors (``A (M, r, in)``, ``B (M, out, r)``), one
per ``(run, role)``. A batch is laid out *adapter-major*: ``R`` rows for each adapter taking part, so the adapters'
products are two batched matmuls (``torch.bmm``) beside the base's one matmul, however many runs there are.

* :meth:`StackedTeam.generate` samples completions for requests tagged with their adapter, with a KV cache, at the
  request's temperature, returning the processed log-probs ``log_softmax(logits / T)`` of the sampled tokens. The
  noise of each request comes from its own seed through a counter-based generator (:mod:`ccpo_agents.counter_rng`),
  so a run's tokens do not depend on which other runs share the batch.
* :meth:`StackedTeam.token_logprobs` scores ``(prompt, completion)`` pairs under their adapters, with gradients.
* :meth:`StackedTeam.values` is a critic: a linear value head per adapter on the last prompt token's final hidden
  state (``value_heads=True``; the heads start at zero, as :class:`~ccpo_agents.hf_backend.HFTeam`'s), with
  gradients.
* :class:`StackedAdamW` is AdamW for each adapter on its own (its own step count; adapters not trained at a step
  are left exactly as they are), with per-adapter gradient-norm clipping.

Each adapter's initial ``A`` is drawn from its own seed (peft's init: Kaiming-uniform ``A``, zero ``B``), so an
adapter starts the same whatever else is stacked beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ccpo_agents.counter_rng import gumbel
from ccpo_agents.hf_backend import DEFAULT_TARGETS


class StackedLinear(nn.Module):
    """``y = base(x) + (alpha / r) · B[m] A[m] x`` for the rows of adapter ``m``; rows come adapter-major.

    Args:
        base: the frozen linear layer.
        seeds: one seed per adapter (its ``A``'s init).
        r, alpha: LoRA rank and scaling numerator.
    """

    def __init__(self, base: nn.Linear, seeds: Sequence[int], r: int, alpha: float):
        super().__init__()
        self.base = base
        M, out_f, in_f = len(seeds), base.out_features, base.in_features
        A = torch.empty(M, r, in_f)
        for m, s in enumerate(seeds):
            g = torch.Generator().manual_seed(int(s))
            bound = 1.0 / math.sqrt(in_f)  # kaiming_uniform_(a=sqrt(5)) on an (r, in) matrix, as peft's LoRA init
            A[m] = (torch.rand(r, in_f, generator=g) * 2 - 1) * bound
        self.A = nn.Parameter(A.to(base.weight.device))
        self.B = nn.Parameter(torch.zeros(M, out_f, r, device=base.weight.device))
        self.scale = alpha / r
        self.active: Tensor | None = None  # adapters of the current batch, in row-group order (None: all)

    def forward(self, x: Tensor) -> Tensor:
        y = self.base(x)
        A, B = (self.A, self.B) if self.active is None else (self.A[self.active], self.B[self.active])
        M = A.shape[0]
        shape = x.shape
        h = x.reshape(M, -1, shape[-1]).to(A.dtype)  # (M, R·T, in)
        # y + (B·scale)(A h) in one fused batched product: the scale goes on the small B, not the (M, R·T, out)
        # output, and the add happens inside the gemm (two memory passes over the output fewer per layer)
        out = torch.baddbmm(y.reshape(M, -1, y.shape[-1]).to(A.dtype), torch.bmm(h, A.transpose(1, 2)),
                            (B * self.scale).transpose(1, 2))
        return out.reshape(*shape[:-1], -1).to(y.dtype)


@dataclass(frozen=True)
class Row:
    """One request: its adapter, prompt token ids, temperature and seed."""

    adapter: int
    prompt_ids: tuple[int, ...]
    temperature: float
    seed: int


@dataclass
class Sampled:
    """One sampled completion: token ids (EOS included when generated), their processed log-probs, and whether it
    ended with EOS (``stop``) or at ``max_tokens`` (``length``)."""

    completion_ids: list[int]
    logprobs: list[float]
    finish_reason: str


class StackedTeam:
    """A frozen base model and ``M`` stacked LoRA adapters (see the module docstring).

    Args:
        model: a transformers model folder (e.g. :func:`ccpo_agents.tiny_lm.build_word_lm`'s).
        seeds: one seed per adapter (``M = len(seeds)``).
        r, alpha: LoRA rank and scaling numerator.
        targets: names of the linear layers to adapt.
        value_heads: give every adapter a linear value head (a critic adapter uses its own; an actor's stays 0).
        device: where every tensor lives.
    """

    def __init__(self, model: str, seeds: Sequence[int], r: int = 8, alpha: float = 16.0,
                 targets: Sequence[str] = DEFAULT_TARGETS, value_heads: bool = False, device: str = "cpu"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not seeds:
            raise ValueError("StackedTeam needs at least one adapter seed")
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).to(self.device)
        self.model.requires_grad_(False)
        self.model.eval()
        self.M = len(seeds)
        self.layers: list[StackedLinear] = []
        for name, mod in list(self.model.named_modules()):
            for child_name, child in list(mod.named_children()):
                if isinstance(child, nn.Linear) and child_name in targets:
                    layer = StackedLinear(child, seeds, r, alpha).to(self.device)
                    setattr(mod, child_name, layer)
                    self.layers.append(layer)
        if not self.layers:
            raise ValueError(f"no linear layer named {list(targets)} in {model}")
        self.pad_id = self.tokenizer.pad_token_id
        self.eos_id = self.tokenizer.eos_token_id
        self.head_w: nn.Parameter | None = None
        self.head_b: nn.Parameter | None = None
        if value_heads:
            hidden = self.model.config.hidden_size
            self.head_w = nn.Parameter(torch.zeros(self.M, hidden, device=self.device))
            self.head_b = nn.Parameter(torch.zeros(self.M, 1, device=self.device))  # (M, 1): stacks like the rest

    def parameters(self) -> list[nn.Parameter]:
        """Every adapter's matrices (``A`` and ``B`` of each layer, stacked over adapters) and value heads."""
        heads = [self.head_w, self.head_b] if self.head_w is not None else []
        return [p for layer in self.layers for p in (layer.A, layer.B)] + heads

    # ------------------------------------------------------------------------------------------ layout
    def _layout(self, adapters: Sequence[int]) -> tuple[Tensor, int, list[int]]:
        """Adapter-major layout of rows tagged ``adapters``: ``(active adapters, R, slot of each row)``; slot
        ``g·R + i`` holds the ``i``-th row of the ``g``-th active adapter (unused slots repeat a real row)."""
        bad = [a for a in adapters if not 0 <= a < self.M]
        if bad:
            raise ValueError(f"adapter indices {sorted(set(bad))} out of range for {self.M} adapters")
        active = sorted(set(adapters))
        group = {a: g for g, a in enumerate(active)}
        count = [0] * len(active)
        within = []
        for a in adapters:
            within.append(count[group[a]])
            count[group[a]] += 1
        R = max(count)
        return torch.tensor(active, device=self.device), R, [group[a] * R + i for a, i in zip(adapters, within)]

    def _set_active(self, active: Tensor | None) -> None:
        """Route the next forward passes to ``active``'s adapters (``None`` or every adapter in order: all, no copy)."""
        if active is not None and active.numel() == self.M and bool(
                (active == torch.arange(self.M, device=active.device)).all()):
            active = None
        for layer in self.layers:
            layer.active = active

    @staticmethod
    def _fill(rows: list[list[int]], slot: list[int], R: int, n_slots: int) -> list[list[int]]:
        """Rows placed at their slots; an unused slot repeats its group's first row (its outputs are dropped)."""
        out: list[list[int] | None] = [None] * n_slots
        for r, s in zip(rows, slot):
            out[s] = r
        for s in range(n_slots):
            if out[s] is None:
                out[s] = out[s - s % R]  # slot g·R always holds the group's first row
        return out  # type: ignore[return-value]

    def _left_padded(self, prompts: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor, Tensor]:
        """``(input ids, attention mask, position ids)`` of prompts padded on the left (the last prompt token is at
        the last position of every row)."""
        P = max(len(p) for p in prompts)
        ids = torch.tensor([[self.pad_id] * (P - len(p)) + list(p) for p in prompts], device=self.device)
        att = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        return ids, att, (att.cumsum(-1) - 1).clamp_min(0)

    # ------------------------------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, rows: Sequence[Row], max_tokens: int) -> list[Sampled]:
        """Sample a completion for each row (``temperature 0``: greedy), at most ``max_tokens`` tokens each."""
        if not rows:
            return []
        active, R, slot = self._layout([r.adapter for r in rows])
        n = len(active) * R
        prompts = self._fill([list(r.prompt_ids) for r in rows], slot, R, n)
        temps = [1.0] * n
        seeds = [0] * n
        for r, s in zip(rows, slot):
            temps[s], seeds[s] = r.temperature, r.seed
        ids, att, pos = self._left_padded(prompts)
        T = torch.tensor(temps, device=self.device)[:, None]
        seed_t = torch.tensor(seeds, device=self.device)
        self._set_active(active)
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        logits = self.model(input_ids=ids, attention_mask=att, position_ids=pos, past_key_values=cache,
                            use_cache=True, logits_to_keep=1).logits[:, -1].float()
        toks, lps = [], []
        done = torch.zeros(n, dtype=torch.bool, device=self.device)
        next_pos = pos[:, -1] + 1
        greedy = T[:, 0] <= 0
        temp = torch.where(greedy, torch.ones_like(T[:, 0]), T[:, 0])[:, None]
        for t in range(max_tokens):
            scaled = logits / temp
            noisy = scaled.double() + gumbel(seed_t, t, scaled.shape[-1])
            tok = torch.where(greedy, logits.argmax(-1), noisy.argmax(-1))
            tok = torch.where(done, torch.full_like(tok, self.pad_id), tok)
            toks.append(tok)
            lps.append(scaled.log_softmax(-1).gather(-1, tok[:, None])[:, 0])
            done = done | (tok == self.eos_id)
            if bool(done.all()) or t == max_tokens - 1:
                break
            att = torch.cat([att, torch.ones(n, 1, dtype=att.dtype, device=self.device)], -1)
            logits = self.model(input_ids=tok[:, None], attention_mask=att, position_ids=next_pos[:, None],
                                past_key_values=cache, use_cache=True).logits[:, -1].float()
            next_pos = next_pos + 1
        self._set_active(None)
        tok_m, lp_m = torch.stack(toks, 1), torch.stack(lps, 1)  # (n, steps)
        is_eos = tok_m == self.eos_id
        first = torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, torch.full_like(is_eos[:, 0], tok_m.shape[1],
                                                                                      dtype=torch.long))
        tok_l, lp_l, first_l, eos_l = tok_m.tolist(), lp_m.tolist(), first.tolist(), is_eos.any(1).tolist()
        return [Sampled(tok_l[s][:first_l[s]], lp_l[s][:first_l[s]], "stop" if eos_l[s] else "length") for s in slot]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    # ------------------------------------------------------------------------------------------ training
    def token_logprobs(self, adapters: Sequence[int], prompt_ids: Sequence[Sequence[int]],
                       completion_ids: Sequence[Sequence[int]], temperature: float = 1.0) -> tuple[Tensor, Tensor]:
        """``log_softmax(logits / T)`` of each completion token under its row's adapter, with gradients.

        Returns ``(logprobs (N, L) float32, mask (N, L) bool)`` in the rows' order.
        """
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0 for log-probs, got {temperature}")
        active, R, slot = self._layout(list(adapters))
        n = len(active) * R
        prompts = self._fill([list(p) for p in prompt_ids], slot, R, n)
        comps = self._fill([list(c) for c in completion_ids], slot, R, n)
        P = max(len(p) for p in prompts)
        C = max(1, max(len(c) for c in comps))
        ids = torch.tensor([[self.pad_id] * (P - len(p)) + p + c + [self.pad_id] * (C - len(c))
                            for p, c in zip(prompts, comps)], device=self.device)
        att = torch.tensor([[0] * (P - len(p)) + [1] * (len(p) + len(c)) + [0] * (C - len(c))
                            for p, c in zip(prompts, comps)], device=self.device)
        pos = (att.cumsum(-1) - 1).clamp_min(0)
        self._set_active(active)
        try:
            logits = self.model(input_ids=ids, attention_mask=att, position_ids=pos, logits_to_keep=C + 1).logits
        finally:
            self._set_active(None)
        logits = logits[:, :-1].float() / temperature  # position P-1+j predicts completion token j
        target = torch.tensor([c + [self.pad_id] * (C - len(c)) for c in comps], device=self.device)
        mask = torch.tensor([[j < len(c) for j in range(C)] for c in comps], dtype=torch.bool, device=self.device)
        lp = logits.log_softmax(-1).gather(-1, target[..., None])[..., 0] * mask
        idx = torch.tensor(slot, device=self.device)
        return lp[idx], mask[idx]

    def values(self, adapters: Sequence[int], prompt_ids: Sequence[Sequence[int]]) -> Tensor:
        """Value ``(N,)`` of each prompt under its row's adapter and value head, with gradients: the head on the last
        prompt token's final hidden state (as :meth:`~ccpo_agents.hf_backend.HFTeam.values`)."""
        if self.head_w is None or self.head_b is None:
            raise RuntimeError("this StackedTeam has no value heads; build it with value_heads=True")
        active, R, slot = self._layout(list(adapters))
        n = len(active) * R
        prompts = self._fill([list(p) for p in prompt_ids], slot, R, n)
        ids, att, pos = self._left_padded(prompts)
        self._set_active(active)
        try:
            out = self.model(input_ids=ids, attention_mask=att, position_ids=pos, output_hidden_states=True,
                             logits_to_keep=1)
        finally:
            self._set_active(None)
        h = out.hidden_states[-1][:, -1].float()  # (n, hidden), left padding: the last prompt token
        head = active.repeat_interleave(R)  # the adapter of each slot
        v = (h * self.head_w[head]).sum(-1) + self.head_b[head, 0]
        return v[torch.tensor(slot, device=self.device)]


class StackedAdamW:
    """AdamW applied to each adapter of stacked parameters (leading dimension ``M``) on its own.

    :meth:`step` updates only the adapters in ``which``, each with its own step count, after clipping its gradient
    to ``max_grad_norm`` (the norm over all of that adapter's slices). For one adapter this is
    ``torch.nn.utils.clip_grad_norm_`` then ``torch.optim.AdamW`` on that adapter's parameters.
    """

    def __init__(self, params: Sequence[nn.Parameter], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, max_grad_norm: float | None = 1.0):
        self.params = list(params)
        M = self.params[0].shape[0]
        if any(p.shape[0] != M for p in self.params):
            raise ValueError("StackedAdamW: every parameter must stack the same adapters (leading dimension)")
        self.lr, self.betas, self.eps, self.weight_decay, self.max_grad_norm = lr, betas, eps, weight_decay, max_grad_norm
        self.steps = torch.zeros(M, dtype=torch.int64)
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def grad_norms(self) -> Tensor:
        """``(M,)`` gradient norm of each adapter."""
        sq = sum((p.grad.double() ** 2).flatten(1).sum(1) if p.grad is not None else 0.0 for p in self.params)
        return torch.as_tensor(sq).sqrt()

    @torch.no_grad()
    def step(self, which: Sequence[int], lr: float | None = None) -> Tensor:
        """Update adapters ``which``; returns their gradient norms before clipping."""
        idx = torch.tensor(sorted(set(which)), dtype=torch.int64)
        if not idx.numel():
            return torch.zeros(0)
        lr = self.lr if lr is None else lr
        b1, b2 = self.betas
        norms = self.grad_norms()[idx]
        coef = torch.ones_like(norms)
        if self.max_grad_norm is not None:
            coef = (self.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        self.steps[idx] += 1
        t = self.steps[idx].double()
        bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            shape = (-1,) + (1,) * (p.dim() - 1)
            g = p.grad[idx] * coef.view(shape).to(p.dtype)
            w = p[idx] * (1 - lr * self.weight_decay)
            m[idx] = m[idx] * b1 + g * (1 - b1)
            v[idx] = v[idx] * b2 + g * g * (1 - b2)
            denom = v[idx].sqrt() / bc2.sqrt().view(shape).to(p.dtype) + self.eps  # torch.optim.AdamW's form
            p[idx] = w - lr * (m[idx] / bc1.view(shape).to(p.dtype)) / denom
        return norms
