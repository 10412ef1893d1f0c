"""Checks of the selection's inputs: quality scores and resumed picks."""

import numpy as np

from ..errors import InputError, setting


def check_pick_count(k, n):
    """1 <= k <= n: the one check of how many picks a pool of ``n`` allows."""
    if not 1 <= k <= n:
        raise InputError(f"{setting('k', k)}: must be between 1 and the pool size ({n})")


def check_quality_scores(scores, n, source):
    """Quality scores: one finite, non-negative number per pool sample."""
    scores = np.asarray(scores)
    if scores.ndim != 1 or scores.dtype.kind not in "fiu":
        raise InputError(f"{source}: expected a flat list of numbers, one per sample")
    if len(scores) != n:
        raise InputError(f"{source}: {len(scores)} quality scores for a pool of {n} samples")
    bad = ~np.isfinite(scores) | (scores < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(f"{source}: score {i} is {scores[i]}; scores must be finite and >= 0")
    if not scores.any():
        raise InputError(f"{source}: every quality score is 0, so every candidate would tie")
    return scores.astype(np.float64)


def check_resume_picks(picks, n, k, source):
    """Picks to start a selection from: a non-empty list of at most ``k`` distinct integers,
    each a row of a pool of ``n``. Returns them as a list of Python ints, in the given order."""
    if isinstance(picks, np.ndarray):
        picks = picks.tolist()
    if not isinstance(picks, (list, tuple)):
        raise InputError(f"{source}: expected a list of pool indices (integers), not "
                         f"{type(picks).__name__}")
    if not picks:
        raise InputError(f"{source}: the list of indices is empty; give at least one")
    for position, index in enumerate(picks):
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise InputError(f"{source}: expected a list of pool indices (integers); item "
                             f"{position} is {index!r}")
    picks = [int(index) for index in picks]
    if len(picks) > k:
        raise InputError(f"{source}: {len(picks)} indices, more than {setting('k', k)}")
    seen = {}
    for position, index in enumerate(picks):
        if not 0 <= index < n:
            raise InputError(f"{source}: index {index} (item {position}) is out of range for a "
                             f"pool of {n} samples")
        if index in seen:
            raise InputError(f"{source}: index {index} is given twice (items {seen[index]} "
                             f"and {position})")
        seen[index] = position
    return picks
