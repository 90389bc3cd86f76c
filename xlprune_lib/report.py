"""Parameter tables and result records with provenance.

Every number here is counted from the model's tensors, never taken from what was requested.
"""
from __future__ import annotations

import json
import platform
import re
import subprocess
from collections import OrderedDict
from pathlib import Path

from .config import repo_root
from .runs import METRICS

# Component of an XLNet parameter, from its name (first match wins). Order is the order of the printed table.
COMPONENTS = OrderedDict([
    ("embeddings", r"(word_embedding\.weight|mask_emb)$"),
    ("attention.q", r"rel_attn\.q$"),
    ("attention.k", r"rel_attn\.k$"),
    ("attention.v", r"rel_attn\.v$"),
    ("attention.o", r"rel_attn\.o$"),
    ("attention.r", r"rel_attn\.r$"),
    ("relative_biases", r"rel_attn\.(r_r_bias|r_s_bias|r_w_bias|seg_embed)$"),
    ("ffn", r"ff\.layer_[12]\.(weight|bias)$"),
    ("layer_norm", r"layer_norm\.(weight|bias)$"),
    ("head", r"^(sequence_summary|logits_proj|lm_loss|classifier)\."),
])


def component_of(name: str) -> str:
    """Map a parameter name of an XLNet model to its component (see ``COMPONENTS``)."""
    for comp, pattern in COMPONENTS.items():
        if re.search(pattern, name):
            return comp
    raise ValueError(f"unclassified XLNet parameter {name!r}")


def parameter_breakdown(model) -> dict:
    """Parameters and nonzeros per component, counted from the tensors.

    Tied weights (the LM head's decoder shares the word embedding) are counted once, as
    ``model.parameters()`` does. Returns ``{"components": {name: {"params", "nonzero"}}, "total": ...}``.
    """
    comps = {c: {"params": 0, "nonzero": 0} for c in COMPONENTS}
    for name, p in model.named_parameters():
        c = comps[component_of(name)]
        c["params"] += p.numel()
        c["nonzero"] += int((p.detach() != 0).sum())
    total = {k: sum(c[k] for c in comps.values()) for k in ("params", "nonzero")}
    return {"components": comps, "total": total}


def format_breakdown(table: dict) -> str:
    total = table["total"]["params"]
    lines = [f"{'component':<18}{'parameters':>14}{'share':>9}{'nonzero':>14}"]
    for name, c in table["components"].items():
        lines.append(f"{name:<18}{c['params']:>14,}{c['params'] / total:>9.1%}{c['nonzero']:>14,}")
    lines.append(f"{'total':<18}{total:>14,}{1:>9.0%}{table['total']['nonzero']:>14,}")
    return "\n".join(lines)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_root(), capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo_root(),
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout.strip() + ("-dirty" if dirty else "")) if out.returncode == 0 else None


def provenance(config: dict) -> dict:
    """What a result record carries about where it came from: config, git commit, versions, machine."""
    import datasets
    import numpy
    import torch
    import transformers

    return {
        "config": config,
        "git_commit": git_commit(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "datasets": datasets.__version__,
                     "numpy": numpy.__version__},
        "machine": {"platform": platform.platform(), "processor": platform.machine(),
                    "torch_threads": torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
    }


def load_metrics(run_dir) -> dict:
    """The ``metrics.json`` of a finished run folder."""
    return json.loads((Path(run_dir) / METRICS).read_text())
