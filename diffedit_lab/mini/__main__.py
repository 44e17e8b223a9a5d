"""python -m diffedit_lab.mini [--root outputs/mini] [--out bench/results-mini.json] [--figures bench/mini] [--quick]"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from diffedit_lab.utils.errors import UserError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m diffedit_lab.mini", description=__doc__)
    p.add_argument("--root", type=Path, default=Path("outputs/mini"), help="cache of every step (resumable)")
    p.add_argument("--out", type=Path, default=Path("bench/results-mini.json"))
    p.add_argument("--figures", type=Path, default=Path("bench/mini"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--quick", action="store_true", help="a few iterations per step: the pipeline, not the claims")
    args = p.parse_args(argv)
    if len(args.seeds) < 3 and not args.quick:
        p.error("claims need at least 3 seeds")
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    from diffedit_lab.mini.report import claims_markdown, write_figures, write_results
    from diffedit_lab.mini.study import MiniSettings, MiniStudy

    seeds = tuple(args.seeds)
    settings = MiniSettings.quick(args.root, seeds) if args.quick else MiniSettings(root=args.root, seeds=seeds)
    study = MiniStudy(settings)
    try:
        result = study.run()
        result["figures"] = write_figures(study, args.figures, seeds[0])
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result["settings"] = {"seeds": list(seeds), "quick": args.quick, "root": str(args.root)}
    write_results(result, args.out)
    print(claims_markdown(result["claims"]))
    print(f"wrote {args.out} and {args.figures}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
