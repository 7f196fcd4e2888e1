"""Peak memory: two roles as LoRA adapters on one base versus two full copies of the model (training side).

Each variant runs in a fresh subprocess (peak RSS is per process), builds the trainable state for two roles and
runs one forward/backward per role.

    python -m benchmarks.adapter_memory --model embedded --out results/adapter_memory.md
"""

from __future__ import annotations

from benchmarks._report import emit

import argparse
import json
import os
import subprocess
import sys

_CHILD = r"""
import json, resource, sys, torch
from transformers import AutoModelForCausalLM
model, variant = sys.argv[1], sys.argv[2]
ids = torch.randint(0, 1000, (4, 128))
if variant == "adapters":
    from ccpo_agents.hf_backend import HFTeam, LoraSpec
    team = HFTeam(model, ["thinker_0", "reasoner_0"], LoraSpec(r=16, alpha=32), dtype="bfloat16")
    trainable = sum(p.numel() for r in team.roles for p in team.trainable_parameters(r))
    for r in team.roles:
        team.use(r)
        team.model(input_ids=ids).logits.float().mean().backward()
else:
    models = [AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32) for _ in range(2)]
    trainable = sum(p.numel() for m in models for p in m.parameters())
    for m in models:
        m(input_ids=ids).logits.mean().backward()
print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "trainable_params": trainable}))
"""


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    from ccpo_agents.models import resolve_model

    model = resolve_model(args.model)
    res = {}
    for variant in ("adapters", "full_copies"):
        out = subprocess.run([sys.executable, "-c", _CHILD, model, variant], capture_output=True, text=True,
                             check=True)
        res[variant] = json.loads(out.stdout.strip().splitlines()[-1])
    a, f = res["adapters"], res["full_copies"]
    lines = [f"# Two roles on {os.path.basename(model)}: adapters on one base vs two full copies", "",
             "| variant | peak RSS (MiB) | trainable parameters |", "|---|---|---|",
             f"| 2 LoRA adapters (r=16) on one bf16 base | {a['peak_rss_mib']:.0f} | {a['trainable_params']:,} |",
             f"| 2 full fp32 copies | {f['peak_rss_mib']:.0f} | {f['trainable_params']:,} |", "",
             f"Memory ratio (adapters / full copies): {a['peak_rss_mib'] / f['peak_rss_mib']:.2f}"]
    return emit("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
