"""Benchmark: what a small job costs as a whole process, start-up included.

Times each command's `--help`, and NovelSum and NovelSelect on the golden inputs of tests/golden
(a 150-row target against 600 x 24 rows; a pool of 500 x 16), beside the baseline
restatements of the reference (benchmarks/baselines.py) on the same inputs. The NovelSelect run
is timed twice: as the command runs it (a selection this small takes the numpy kernels) and with
the numba kernels forced, as every CPU run took them before.

    python benchmarks/bench_startup.py --repeats 5
"""

import argparse
import sys
import tempfile
from pathlib import Path

from common import REPO, cpu_description, timed

NUMBA_FORCED = ("import sys, utils.selection.cpu as cpu; cpu.SMALL_SELECTION_WORK = 0; "
                "from utils.cli.novelselect import main; main(sys.argv[1:])")


def jobs(golden, work):
    """(name, our command, the baseline's command or None) for each job."""
    select_case, sum_case = golden / "novelselect", golden / "novelsum_default_grid"
    target = str(sum_case / "targets" / "subset_a.json")
    select_args = ["--embedding_dir", str(select_case / "embeddings"), "--text_dir",
                   str(select_case / "texts"), "--k", "20", "--gpu_id", "-1", "--quiet",
                   "--output_dir"]
    python = sys.executable
    return [
        ("novelselect.py --help", [python, "novelselect.py", "--help"], None),
        ("novelsum.py --help", [python, "novelsum.py", "--help"], None),
        ("embedding.py --help", [python, "embedding.py", "--help"], None),
        ("NovelSum, 150 x 24 target vs 600 x 24, 18-point grid",
         [python, "novelsum.py", "--single_dataset_path", target, "--dense_ref_dir",
          str(sum_case / "reference"), "--output_csv", str(work / "novelsum.csv"),
          "--gpu_id", "-1", "--quiet", "--overwrite"],
         [python, "benchmarks/baselines.py", "novelsum", target, str(sum_case / "reference"),
          str(work / "baseline.csv")]),
        ("NovelSelect, k = 20 of 500 x 16",
         [python, "novelselect.py", *select_args, str(work / "numpy")],
         [python, "benchmarks/baselines.py", "novelselect", str(select_case / "embeddings"),
          "20", str(work / "baseline.json")]),
        ("NovelSelect, k = 20 of 500 x 16, numba kernels forced",
         [python, "-c", NUMBA_FORCED, *select_args, str(work / "numba")], None),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--golden", type=Path, default=REPO / "tests" / "golden",
                        help="the golden inputs' folder (novelselect/, novelsum_default_grid/)")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each, the median shown")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_startup_"))
    print(f"Whole processes, median of {args.repeats}; {cpu_description()}")
    print(f"{'job':<56} {'ours (s)':>9} {'baseline (s)':>13}")
    for name, ours, baseline in jobs(args.golden.resolve(), work):
        ours_s, _ = timed(ours, repeats=args.repeats)
        base = f"{timed(baseline, repeats=args.repeats)[0]:>13.2f}" if baseline else f"{'':>13}"
        print(f"{name:<56} {ours_s:>9.2f} {base}", flush=True)


if __name__ == "__main__":
    main()
