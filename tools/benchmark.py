"""Benchmark mmmask: side-by-side ratios, printed as a table and written as JSON.

    python tools/benchmark.py [--quick] [--output F.json] [--device cpu|cuda]
                              [--threads N]
                              [--sections pipeline,crop,sam,cm3,text,eval,shipped,memory]

``--quick`` uses the tiny Shapes-OV models (under 2 minutes on a 2-core CPU); the full run uses
convnext_tiny / ViT-S-32 CLIP shapes with random weights at 512 and 1024 px (under 10 minutes).
"""

import argparse
import json
import os
import sys

from mmmask.utils.benchmark import SECTIONS, format_table, run_benchmark


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny models, small sizes")
    parser.add_argument("--output", help="write the JSON report here")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: stable ratios on a shared machine; "
                             "0 = torch's default)")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)}")
    args = parser.parse_args(argv)
    sections = tuple(s.strip() for s in args.sections.split(",") if s.strip())
    try:
        report = run_benchmark(quick=args.quick, device=args.device, sections=sections,
                               threads=args.threads,
                               progress=lambda m: print(m, file=sys.stderr, flush=True))
    except (ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    m = report["machine"]
    print(f"{m['cpu']} ({m['cpu_cores']} cores, {m['torch_threads']} threads), torch {m['torch']},"
          f" device {m['device']}, {report['mode']} run in {report['elapsed_s']:.0f} s")
    print(format_table(report))
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1, default=str)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
