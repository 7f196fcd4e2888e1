"""Tiny random-init models built in-process, for tests and CPU smoke runs (nothing is downloaded).

The tokenizer is a byte-level BPE trained on a few strings with a ChatML template; the model is a 2-layer Qwen2 or
Llama with ``head_dim = 32`` (vLLM's CPU attention needs head_dim >= 32).
"""

from __future__ import annotations

import os
from pathlib import Path

_CORPUS = [
    "Question: What is 12 + 7? Answer: 12 + 7 = 19, so the answer is \\boxed{19}.",
    "You are a math expert. Solve the problem step by step and give the final answer in \\boxed{}.",
    "Calculate 45 - 18. First subtract 10, then 8: 27. \\boxed{27}",
    "Instruction: add the tens, then the ones. Plan: break the numbers apart.",
    "The answer is 0 1 2 3 4 5 6 7 8 9 + - * / = ( ) { } \\frac{1}{2} Yes No True False",
]


def build_tiny_model(out: str | os.PathLike, arch: str = "qwen2", vocab_size: int = 400, seed: int = 0,
                     max_position_embeddings: int = 1024) -> Path:
    """Write a tiny random model + tokenizer to ``out`` (idempotent) and return the path."""
    out = Path(out)
    if (out / "config.json").exists():
        return out
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    tok.train_from_iterator(_CORPUS * 20, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                                               initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", bos_token="<|endoftext|>",
                                 pad_token="<pad>")
    hf.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    out.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(out)
    kw = dict(vocab_size=len(hf), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
              num_key_value_heads=1, head_dim=32, max_position_embeddings=max_position_embeddings,
              bos_token_id=hf.bos_token_id, eos_token_id=hf.eos_token_id, pad_token_id=hf.pad_token_id,
              tie_word_embeddings=True)
    torch.manual_seed(seed)
    if arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**kw))
    elif arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**kw))
    else:
        raise ValueError(f"arch={arch!r}: use 'qwen2' or 'llama'")
    model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    return out
