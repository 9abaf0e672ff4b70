#!/usr/bin/env python
"""Draw a NASNet cell the way the paper's Fig. 4 shows it.

    python tools/draw_cell.py nasnet_a --out nasnet_a_normal.png
    python tools/draw_cell.py nasnet_a --cell reduce --out reduce.svg
    python tools/draw_cell.py my_genotype.json --cell both --out cells.pdf
    python tools/draw_cell.py pnasnet5 --out pnas.dot

GENOTYPE is a registered name or a genotype JSON file. The format follows the extension
(.png, .svg, .pdf, .dot). ``--cell both`` puts the normal and the reduction cell side by side in
one file. ``--engine auto`` uses Graphviz when ``dot`` is on PATH and matplotlib otherwise.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install


from nasnet_det.space import GenotypeError, list_genotypes, resolve_genotype
from nasnet_det.visualize import ENGINES, FORMATS, DiagramError, draw_genotype


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=f"registered genotypes: {', '.join(list_genotypes())}",
    )
    p.add_argument("genotype", metavar="GENOTYPE", help="registered genotype name or a genotype .json path")
    p.add_argument("--out", required=True, help=f"output file; format from the extension ({', '.join(FORMATS)})")
    p.add_argument("--cell", choices=("normal", "reduce", "both"), default="normal",
                   help="which cell to draw; 'both' draws them side by side in one file (default: normal)")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="renderer for .png/.svg/.pdf (default: graphviz if 'dot' is installed, else matplotlib)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        genotype = resolve_genotype(args.genotype)
        out = draw_genotype(genotype, args.out, cell=args.cell, engine=args.engine)
    except (GenotypeError, DiagramError) as err:
        print(f"draw_cell.py: error: {err}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
