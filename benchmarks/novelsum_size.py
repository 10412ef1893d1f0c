"""How NovelSum moves with a dataset's size: uniform subsamples of one real set, measured
against the same reference, and a dataset's gain over a given set next to its own redundancy.

    python benchmarks/novelsum_size.py [--draws 5]

Prints two tables (docs/reading-results.md quotes them): NovelSum at the recommended setting
(k=10, beta=0.5, alpha=1) of subsamples of the example pool's 500 ShareGPT conversations at
several sizes, the whole 744-sample pool as the reference (mean and spread over seeded
draws); and, with the 80 MT-Bench questions as the given set, each example source's gain
beside its NovelSum alone.
"""

import argparse
import json

import numpy as np
from common import REPO

from utils.api import beside_given, novelsum_score

POOL = REPO / "examples" / "pool" / "embeddings"
SIZES = (20, 40, 80, 160, 320, 500)


def shard(i):
    return np.asarray(json.loads((POOL / f"{i}.json").read_text()), dtype=np.float32)


def size_curve(sharegpt, reference, draws):
    """(size, mean, standard deviation, min, max) of NovelSum over ``draws`` subsamples."""
    rows = []
    for size in SIZES:
        scores = [novelsum_score(sharegpt[np.random.default_rng(seed).choice(
            len(sharegpt), size, replace=False)], reference=reference)
            for seed in range(draws if size < len(sharegpt) else 1)]
        rows.append((size, np.mean(scores), np.std(scores), min(scores), max(scores)))
    return rows


def gains(sets, given, reference):
    """(name, rows, NovelSum alone, NovelSum beside the given set, gain) of each set."""
    alone_given = novelsum_score(given, reference=reference)
    rows = []
    for name, vectors in sets.items():
        together = novelsum_score(beside_given(vectors, given), reference=reference)
        rows.append((name, len(vectors), novelsum_score(vectors, reference=reference),
                     together, together - alone_given))
    return alone_given, rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=5, help="subsamples per size")
    draws = parser.parse_args().draws
    mt_bench, humaneval = shard(0), shard(3)
    sharegpt = np.concatenate([shard(1), shard(2)])
    reference = np.concatenate([mt_bench, sharegpt, humaneval])
    print(f"NovelSum (k=10, beta=0.5, alpha=1) of ShareGPT subsamples, the 744-sample example "
          f"pool as reference, {draws} draws per size")
    print(f"{'size':>6}  {'mean':>8}  {'std':>7}  {'min':>8}  {'max':>8}")
    for size, mean, std, low, high in size_curve(sharegpt, reference, draws):
        print(f"{size:>6}  {mean:>8.4f}  {std:>7.4f}  {low:>8.4f}  {high:>8.4f}")
    alone_given, rows = gains({"humaneval (164)": humaneval, "sharegpt (500)": sharegpt},
                              mt_bench, reference)
    print(f"\nbeside the 80 MT-Bench questions (NovelSum {alone_given:.4f} alone)")
    print(f"{'set':<16}  {'rows':>5}  {'alone':>7}  {'with it':>8}  {'gain':>8}")
    for name, count, alone, together, gain in rows:
        print(f"{name:<16}  {count:>5}  {alone:>7.4f}  {together:>8.4f}  {gain:>+8.4f}")


if __name__ == "__main__":
    main()
