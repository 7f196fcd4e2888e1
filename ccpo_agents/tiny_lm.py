"""Tiny language models over a small word vocabulary, built and warm-started in-process (nothing is downloaded).

For the credit gym: a team task whose observations and answers are a few dozen words needs no pretrained model.
:func:`build_word_lm` writes a real transformers causal LM (Llama, a few layers, ``head_dim = 32`` so that vLLM's
CPU attention can serve it too) with a word-level tokenizer over the given words and a chat template, so every
backend, :class:`~ccpo_agents.hf_backend.HFTeam`, LoRA and the checkpoints apply unchanged. :func:`supervised_fit`
warm-starts it by supervised learning on ``(prompt ids, completion ids)`` pairs, deterministically from a seed.
Both write atomically (a temporary folder renamed into place).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Special tokens: padding, unknown word, and the chat markers (``<|im_end|>`` ends a turn: the EOS).
SPECIALS = ("<pad>", "<unk>", "<|im_start|>", "<|im_end|>")
#: A ChatML-like template in words: ``<|im_start|> user {text} <|im_end|> <|im_start|> assistant``.
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}")


@dataclass(frozen=True)
class TinyLMSpec:
    """Shape of a tiny Llama.

    Attributes:
        layers: decoder layers.
        hidden: hidden size (``heads · 32``).
        heads: attention heads (``head_dim`` is 32).
        intermediate: MLP width.
        max_positions: longest sequence.
    """

    layers: int = 2
    hidden: int = 64
    heads: int = 2
    intermediate: int = 128
    max_positions: int = 128

    def __post_init__(self) -> None:
        if self.hidden != 32 * self.heads or self.layers < 1 or self.intermediate < 1:
            raise ValueError(f"TinyLMSpec: need layers >= 1 and hidden = 32 * heads (head_dim 32), got {self}")


def _atomic_dir(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))


def _publish(tmp: Path, target: Path) -> Path:
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def word_tokenizer(words: Iterable[str]) -> object:
    """A transformers fast tokenizer that splits on whitespace and knows exactly ``words`` (others: ``<unk>``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(dict.fromkeys([*SPECIALS, *words]))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<|im_end|>",
                                 bos_token="<|im_start|>", additional_special_tokens=list(SPECIALS[2:]))
    hf.chat_template = CHAT_TEMPLATE
    return hf


def build_word_lm(out: str | os.PathLike, words: Sequence[str], seed: int = 0, spec: TinyLMSpec = TinyLMSpec()
                  ) -> Path:
    """Write a random-init tiny Llama (float32) and its word tokenizer to ``out``; returns ``out``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out)
    tok = word_tokenizer(words)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=spec.hidden, intermediate_size=spec.intermediate,
                      num_hidden_layers=spec.layers, num_attention_heads=spec.heads, num_key_value_heads=spec.heads,
                      head_dim=32, max_position_embeddings=spec.max_positions, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    tmp = _atomic_dir(out)
    try:
        tok.save_pretrained(tmp)
        model.save_pretrained(tmp, safe_serialization=True)
        return _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def supervised_fit(model_dir: str | os.PathLike, examples: Sequence[tuple[Sequence[int], Sequence[int]]],
                   out: str | os.PathLike, steps: int = 300, batch: int = 64, lr: float = 3e-3, seed: int = 0
                   ) -> tuple[Path, list[float]]:
    """Fine-tune every weight on ``examples`` (prompt ids, completion ids): cross-entropy on the completion tokens,
    AdamW, ``steps`` mini-batches drawn with ``seed``. Writes the model and tokenizer to ``out``; returns
    ``(out, loss per step)``. Deterministic on a given machine for a given seed."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not examples:
        raise ValueError("supervised_fit needs at least one example")
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    pad = tok.pad_token_id
    losses = []
    model.train()
    for _ in range(steps):
        pick = torch.randint(len(examples), (min(batch, len(examples)),), generator=gen).tolist()
        rows = [list(examples[i][0]) + list(examples[i][1]) for i in pick]
        n = max(len(r) for r in rows)
        ids = torch.tensor([r + [pad] * (n - len(r)) for r in rows])
        att = torch.tensor([[1] * len(r) + [0] * (n - len(r)) for r in rows])
        labels = torch.full_like(ids, -100)
        for j, i in enumerate(pick):
            p, c = len(examples[i][0]), len(examples[i][1])
            labels[j, p:p + c] = ids[j, p:p + c]
        loss = model(input_ids=ids, attention_mask=att, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    out = Path(out)
    tmp = _atomic_dir(out)
    try:
        tok.save_pretrained(tmp)
        model.save_pretrained(tmp, safe_serialization=True)
        return _publish(tmp, out), losses
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
