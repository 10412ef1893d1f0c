"""Which rows a map draws: every kept row (picks, given rows), and of the others all, or above a
cap a uniform sample, seeded."""

import numpy as np

from ..errors import InputError

DEFAULT_MAX_POINTS = 40_000  # about 16 MB of points and texts: under 25 MB with plotly.js
SAMPLE_SEED = 0


def check_max_points(max_points):
    if max_points < 1:
        raise InputError(f"--report_max_points {max_points}: must be at least 1")


def drawn_others(n, kept, max_points, seed=SAMPLE_SEED):
    """Sorted rows of ``range(n)`` not in ``kept`` that the map draws: all of them when they
    fit beside ``kept`` within ``max_points``, else a uniform sample of the room left (never
    fewer than none)."""
    others = np.setdiff1d(np.arange(n), np.asarray(kept, dtype=np.int64))
    room = max(0, max_points - len(kept))
    if len(others) <= room:
        return others
    chosen = np.random.default_rng(seed).choice(len(others), size=room, replace=False)
    return others[np.sort(chosen)]


def sample_note(drawn, total, what):
    """How a figure states its sample, or "" when it draws every row."""
    if drawn == total:
        return ""
    return (f"{drawn:,} of the {total:,} {what} drawn, a uniform sample (seed {SAMPLE_SEED}), "
            f"to keep the file small")
