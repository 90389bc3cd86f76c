"""The model card (``README.md``) written into every pruned run folder.

A model card (Mitchell et al. 2019, "Model Cards for Model Reporting") says what a model is, how it was made,
how well it does, and how to use it. This one follows the ``transformers`` convention (YAML front matter that
hubs read, then Markdown) and holds only measured numbers: accuracies with their 95% bootstrap intervals
(``stats.interval``), the sparsity delivered beside the one requested, the parameters and file sizes counted
from the saved tensors, and the run's provenance.
"""
from __future__ import annotations

import json

from ..config import WARM_START_SOURCES, Profile
from ..measure.stats import interval
from ..train.data import split_description
from ..xlnet.modeling import PRUNED_MODEL_TYPE

CARD = "README.md"
SPLITS = ("validation", "test")


def base_model(profile: Profile) -> str | None:
    """The published model a profile starts from (hub name), or ``None`` for a model trained here from scratch."""
    return WARM_START_SOURCES.get(profile.warm_start) or profile.hub_model


def _foreign(metrics: dict) -> bool:
    """Whether the source model came from outside xlprune (``metrics["source_profile"]`` is ``None``)."""
    return "source_profile" in metrics and metrics["source_profile"] is None


def _front_matter(profile: Profile, metrics: dict) -> str:
    spec = metrics.get("spec", {})
    base = None if _foreign(metrics) else base_model(profile)
    lines = ["---", "library_name: transformers", "pipeline_tag: text-classification"]
    if base:
        lines.append(f"base_model: {base}")
    if profile.warm_start == "minilm" and not _foreign(metrics):
        lines.append("license: apache-2.0   # the license of the MiniLM weights this model starts from")
    tags = ["xlnet", "pruning", "xlprune", spec.get("method"), spec.get("granularity")]
    lines.append("tags:")
    lines += [f"- {t}" for t in tags if t]
    return "\n".join(lines + ["---"])


def _accuracy(value: float | None, n: int) -> str:
    if value is None:
        return "not measured"
    low, high = interval(value, n)
    return f"{100 * value:.1f}% [{100 * low:.1f}, {100 * high:.1f}]"


def _accuracy_table(metrics: dict, sizes: dict[str, int]) -> list[str]:
    rows = [("dense model it was pruned from", metrics.get("dense", {}))]
    if "one_shot" in metrics and "after_finetune" in metrics:
        rows.append(("pruned, before fine-tuning", metrics["one_shot"]))
    rows.append(("**this model**", metrics))
    out = ["| model | " + " | ".join(f"{s} accuracy (n = {sizes[s]})" for s in SPLITS) + " |",
           "|---|" + "---|" * len(SPLITS)]
    for name, acc in rows:
        out.append(f"| {name} | " + " | ".join(_accuracy(acc.get(f"{s}_accuracy"), sizes[s]) for s in SPLITS)
                   + " |")
    return out


def _size_lines(metrics: dict, report: dict, files: dict) -> list[str]:
    totals, d = report["totals"], metrics.get("delivery") or {}
    requested = d.get("requested")
    asked = "no target (set by the method)" if requested is None else f"{100 * requested:.1f}%"
    lines = [f"- Sparsity of the {d.get('unit', 'prunable weights')}: asked {asked}, "
             f"**delivered {100 * d.get('delivered', totals['prunable']['sparsity']):.1f}%** "
             "(counted from the saved tensors)."]
    if d.get("note"):
        lines.append(f"- Not as asked: {d['note']}.")
    model = totals["model"]
    lines += [f"- Parameters: {model['params']:,} stored, {model['nonzero']:,} nonzero "
              f"({100 * model['sparsity']:.1f}% of the whole model is zero).",
              f"- Weights file: {files['file_bytes'] / 1e6:.1f} MB (safetensors, float32).",
              f"- Encoder FLOPs per token at {report['seq_len']} tokens: {totals['flops_per_token']:,} as stored, "
              f"{totals['flops_per_token_sparse']:,} if zero weights were skipped."]
    layers = report["layers"]
    lines.append("- Heads per layer: " + ", ".join(str(x["heads"]) for x in layers)
                 + "; FFN neurons per layer: " + ", ".join(str(x["neurons"]) for x in layers) + ".")
    return lines


def _how_to_load(pruned_class: bool) -> list[str]:
    code = ["```python",
            "from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline",
            "",
            "folder = \"path/to/this/folder\"",
            "tokenizer = AutoTokenizer.from_pretrained(folder)"]
    if not pruned_class:
        return ["This folder is a plain `transformers` XLNet (no unit was removed; pruned weights are zeros). "
                "It loads anywhere `transformers` is installed:", "",
                *code, "model = AutoModelForSequenceClassification.from_pretrained(folder)",
                "classify = pipeline(\"text-classification\", model=folder)", "```"]
    return ["Layers of this model have different numbers of heads and neurons, which the stock XLNet class "
            "cannot describe. The class that can, `modeling_xlnet_pruned.py`, is in this folder and needs only "
            "`torch` and `transformers` (xlprune need not be installed):", "",
            *code,
            "model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)",
            "classify = pipeline(\"text-classification\", model=folder, trust_remote_code=True)", "```", "",
            "`trust_remote_code=True` runs that file: read it first. Without the flag, "
            "`transformers` refuses and asks for it; a copy of this `config.json` without its `auto_map` gets "
            "\"does not recognize this architecture\" and advice to upgrade, which does not help. Either pass the "
            "flag, or install xlprune and `import xlprune_lib` first (it registers the class). Do not load this "
            "folder with `XLNetForSequenceClassification` and `ignore_mismatched_sizes=True`: that replaces every "
            "pruned tensor with random values, silently."]


def _recovery(spec: dict, metrics: dict) -> str:
    if spec.get("schedule"):   # xlprune iterate: pruning and fine-tuning interleaved
        how = ("gradually, raising its sparsity on the cubic schedule (Zhu & Gupta 2017)" if spec["schedule"] ==
               "cubic" else f"in rounds of pruning and fine-tuning ({spec['schedule']} schedule)")
        return f"pruned {how}, over {metrics.get('step', 0)} fine-tuning steps in all"
    epochs = spec.get("finetune_epochs") or 0
    if spec.get("method") == "l0":  # L0 trains gates and weights together, one epoch when not given
        epochs = epochs or 1.0
        return f"its gates were trained with the weights for {epochs} epochs (Louizos et al. 2018)"
    return f"fine-tuned for {epochs} epochs after pruning" if epochs else "not fine-tuned after pruning"


def model_card(metrics: dict, report: dict, files: dict, sizes: dict[str, int], profile: Profile,
               model_type: str) -> str:
    """The ``README.md`` of a pruned run folder.

    ``metrics``: the run's ``metrics.json`` (``spec``, ``delivery``, ``dense`` and final accuracies, provenance;
    for ``xlprune iterate``, whose ``spec`` has a ``schedule``, the final record's ``step`` too; ``labels``,
    ``data`` (the user's data, ``UserData.load``'s record) and ``source_profile`` (``None``: a source model
    from outside xlprune) where known);
    ``report``: ``report.layer_report`` of the saved model; ``files``: ``report.checkpoint_sizes`` of the
    folder; ``sizes``: examples per evaluation split (``{"validation": n, "test": n}``); ``model_type``: the
    saved config's ``model_type`` (``xlnet-pruned`` needs ``trust_remote_code``). Raises ``KeyError`` when
    ``sizes`` lacks a split.
    """
    spec = metrics.get("spec", {})
    base = None if _foreign(metrics) else base_model(profile)
    d = metrics.get("delivery") or {}
    made = f"from {metrics.get('source_model')}" if _foreign(metrics) else profile.name
    title = (f"XLNet ({made}), {100 * d.get('delivered', 0):.0f}% of its {d.get('unit', 'prunable weights')}"
             f" pruned ({spec.get('method', '?')}, {spec.get('granularity', '?')})")
    origin = (f"It starts from the classifier in `{metrics.get('source_model')}`, made outside xlprune"
              if _foreign(metrics) else f"It starts from [{base}](https://huggingface.co/{base})" if base else
              "It starts from an XLNet pretrained here from scratch")
    data = metrics.get("data") or {}
    labels = ", ".join(metrics.get("labels") or ("negative", "positive"))
    task = f"the `{profile.task}` task" if "source" not in data else f"the data `{data['source']}`"
    splits = (split_description(profile.task) if "source" not in data else
              "the validation and test splits of that data"
              + (f" (validation: {100 * data['validation_from_train']:.0f}% of train, seeded)"
                 if data.get("validation_from_train") else ""))
    layers = f"a {len(report['layers'])}-layer XLNet"   # counted in the saved model (dropped layers are gone)
    provenance = {k: metrics.get(k) for k in ("config", "git_commit", "versions", "machine")}
    parts = [
        _front_matter(profile, metrics), "", f"# {title}", "",
        f"{layers[0].upper()}{layers[1:]} classifier (labels: {labels}) on {task}, pruned with xlprune; {_recovery(spec, metrics)}. "
        f"{origin}" + (" (mapped into XLNet and adapted with permutation language modelling)."
                       if profile.warm_start and not _foreign(metrics) else "."),
        "", "## Measured", "",
        f"Accuracies on {splits}, with 95% bootstrap intervals over the examples:",
        "", *_accuracy_table(metrics, sizes), "", *_size_lines(metrics, report, files), "",
        "## How to load", "", *_how_to_load(model_type == PRUNED_MODEL_TYPE), "",
        "## Provenance", "", "The run that made this folder" + (" (its records are in the run's `rounds.jsonl`):"
                                                                 if spec.get("schedule") else
                                                                 " (also in `metrics.json`):"), "",
        "```json", json.dumps(provenance, indent=1, sort_keys=True, default=str), "```", "",
    ]
    return "\n".join(parts)
