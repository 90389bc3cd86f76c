"""``python -m xlprune_lib.book``: ``execute`` the chapters (what ``make book`` runs), make the reference
``results`` and the ``base-shape`` speed table (both ``make results``)."""
from __future__ import annotations

import argparse
import sys

from ..config import DEFAULT_PROFILE, UserError
from .build import execute
from .results import BASE_SHAPE_BENCH, SEEDS, base_shape_results, make_results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xlprune_lib.book")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("execute", help="execute the chapters with papermill into book/chapters")
    p.add_argument("--profile", default=DEFAULT_PROFILE)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="*", help="chapter number prefixes, e.g. 01 03")
    r = sub.add_parser("results", help="execute chapters 1-5 and copy their tables to data/results")
    r.add_argument("--profile", default=DEFAULT_PROFILE)
    r.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="seeds; chapters 2, 4 and 5 run at each, the others at the first (default: 0 1 2)")
    r.add_argument("--dest", help="where the CSVs go (default: data/results)")
    r.add_argument("--only", nargs="+", help="chapter numbers to run (default: 01 02 03 04 05; with --add, 02 04 05)")
    r.add_argument("--add", action="store_true",
                   help="keep the rows the tables hold for other seeds (add seeds one run at a time; chapters 2, 4, 5 "
                        "unless --only says otherwise)")
    b = sub.add_parser("base-shape", help="bench xlnet-base-cased's shape (random weights, 25/50/75%% of the "
                                          "encoder removed) into data/results/05_speed_base_shape.csv")
    b.add_argument("--dest", help="where the CSV goes (default: data/results)")
    b.add_argument("--repeats", type=int, default=BASE_SHAPE_BENCH["repeats"])
    args = parser.parse_args(argv)
    try:
        if args.command == "results":
            for path in make_results(args.profile, args.seeds or SEEDS, args.dest, args.only, args.add):
                print(f"wrote {path}")
        elif args.command == "base-shape":
            if args.repeats < 1:
                raise UserError(f"--repeats must be >= 1, got {args.repeats}")
            print(f"wrote {base_shape_results(args.dest, repeats=args.repeats)}")
        else:
            execute(args.profile, args.seed, only=args.only)
    except UserError as exc:
        print(f"xlprune: error: {exc}", file=sys.stderr)
        return 2
    return 0



raise SystemExit(main())   # this module only runs as ``python -m xlprune_lib.book``
