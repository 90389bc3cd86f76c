"""One-shot vs iterative vs gradual magnitude pruning, and gradual movement pruning, at equal fine-tuning budgets.

For each approach: the highest weight sparsity whose final model stays within ``--tolerance`` of the dense
validation accuracy, and the wall time of each run. Every run goes through ``xlprune_lib.loops.iterative.iterate``
(cached in the run cache, so a second call only reads the results):

* one-shot: one round straight to the sparsity, then ``--budget`` fine-tuning steps;
* iterative: the geometric loop (``--step`` of what remains per round, ``--round-steps`` each) towards
  ``--iterative-target``; its answer is the last round that met the requirement;
* gradual: the cubic schedule inside ``--budget`` steps, magnitude and movement scores.

Usage: python scripts/iterative_grid.py [--profile tiny] [--sparsities 0.85,0.9,0.95] [--csv FILE]
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys


def main(argv=None) -> int:
    from xlprune_lib.config import DEFAULT_PROFILE, UserError, get_profile, write_text_atomic
    from xlprune_lib.train.finetune import dense_run
    from xlprune_lib.loops.iterative import IterSpec, iterate
    from xlprune_lib.measure.report import git_commit
    from xlprune_lib.loops.rounds import SUMMARY, read_records

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=DEFAULT_PROFILE)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sparsities", default="0.9,0.95,0.97", help="final sparsities for one-shot and gradual")
    ap.add_argument("--iterative-target", type=float, default=0.98)
    ap.add_argument("--step", type=float, default=0.3)
    ap.add_argument("--round-steps", type=int, default=40)
    ap.add_argument("--budget", type=int, default=360, help="fine-tuning steps of one-shot and gradual runs")
    ap.add_argument("--tolerance", type=float, default=0.01)
    ap.add_argument("--csv", help="also write the rows here")
    a = ap.parse_args(argv)
    try:
        profile = get_profile(a.profile)
        model = dense_run(profile, seed=a.seed)
        requirement = f"dense-{a.tolerance}"
        runs = [("iterative magnitude", IterSpec("magnitude", target=a.iterative_target, schedule="geometric",
                                                 step=a.step, round_steps=a.round_steps, requirement=requirement))]
        for s in (float(x) for x in a.sparsities.split(",")):
            runs.append(("one-shot magnitude", IterSpec("magnitude", target=s, schedule="constant", step=s,
                                                        round_steps=a.budget, requirement=requirement)))
            for method in ("magnitude", "movement"):
                runs.append((f"gradual {method}", IterSpec(method, target=s, schedule="cubic", total_steps=a.budget,
                                                           round_steps=a.round_steps, requirement=requirement)))
        rows = []
        for name, spec in runs:
            out = iterate(model, spec, profile=profile, seed=a.seed, progress=False, report=False)
            summary, records = json.loads((out / SUMMARY).read_text()), read_records(out)
            last = records[-1]
            # the loop keeps its last passing round; one-shot and gradual runs end with their last record
            final = summary["final"] if spec.schedule == "geometric" and summary["final"] else last
            rows.append({"approach": name, "schedule": spec.schedule, "target": spec.target,
                         "final_sparsity": final["prunable_sparsity"], "final_validation": final["validation_accuracy"],
                         "final_test": final["test_accuracy"], "met_requirement": bool(last["passed"]),
                         "dense_validation": records[0]["validation_accuracy"],
                         "steps": last["step"], "wall_seconds": last["total_seconds"], "run": str(out),
                         "git_commit": git_commit()})
    except UserError as exc:
        print(f"iterative_grid: {exc}", file=sys.stderr)
        return 2
    print(f"{'approach':<22}{'target':>7}{'sparsity':>10}{'val':>8}{'test':>8}{'meets':>7}{'steps':>7}{'wall s':>8}")
    for r in rows:
        print(f"{r['approach']:<22}{r['target']:>7.3f}{r['final_sparsity']:>10.3f}{r['final_validation']:>8.4f}"
              f"{r['final_test']:>8.4f}{str(r['met_requirement']):>7}{r['steps']:>7}{r['wall_seconds']:>8.0f}")
    print("\nhighest sparsity within the tolerance of dense validation accuracy:")
    for name in dict.fromkeys(r["approach"] for r in rows):
        ok = [r for r in rows if r["approach"] == name and (r["met_requirement"] or name.startswith("iterative"))]
        best = max(ok, key=lambda r: r["final_sparsity"], default=None)
        print(f"  {name:<22}" + (f"{best['final_sparsity']:.3f} (test {best['final_test']:.4f}, "
                                 f"{best['wall_seconds']:.0f} s)" if best else "none"))
    if a.csv:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        try:
            write_text_atomic(a.csv, buffer.getvalue())   # never half a table
        except UserError as exc:
            print(f"iterative_grid: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
