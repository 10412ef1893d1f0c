"""NovelSelect in exact arithmetic on binary pools, for the tie tests (tests/test_exact_ties.py,
tests/rank_checks.py): an implementation of docs/method.md section 5 with beta = 0 that shares
no code with the engines.

Every row of a pool (and of a given set) has ``hot`` ones, so cos(u, s) = shared / hot and the
value x(u, s) = 2 (1 - shared / hot) (beta = 0: rho = 1); hot * x = 2 (hot - shared) is an
integer X. For alpha in {0, 1, 2} the novelty times t * hot * L, L = lcm(1..t)^alpha, is the
integer sum_r X_(r) L / r^alpha: an exact key. For alpha = 0.5, r^-1/2 = 1 / (m sqrt(s)) with
r = m^2 s and s square-free; sqrt of distinct square-free numbers are linearly independent over
the rationals, so the novelty is exactly the integer coefficients of each 1 / sqrt(s) (times
lcm(1..5) = 60, enough for r <= 35): two novelties are equal exactly when their coefficients
are. Values for ordering are those keys in 60-digit decimals.
"""

import math
from decimal import Decimal, getcontext

import numpy as np

getcontext().prec = 60

ALPHAS = (0.0, 0.5, 1.0, 2.0)


def binary_pool(seed, hot, n=100, dim=8):
    """Row i has ones at ``default_rng(seed).choice(dim, hot, replace=False)``, drawn for
    i = 0, 1, ... in turn (the review's pools)."""
    rng = np.random.default_rng(seed)
    pool = np.zeros((n, dim), dtype=np.float32)
    for row in pool:
        row[rng.choice(dim, hot, replace=False)] = 1.0
    return pool


def square_free_split(r):
    """(m, s) with r = m^2 s and s square-free."""
    m = 1
    for f in range(2, int(math.isqrt(r)) + 1):
        while r % (f * f) == 0:
            r //= f * f
            m *= f
    return m, r


def exact_key(values, alpha):
    """The exact key of sum_r r^-alpha X_(r) for the integers ``values`` sorted ascending, on
    the scale of the module docstring (the same for every candidate of one step)."""
    values = sorted(values)
    t = len(values)
    if alpha == 0.5:
        scale = 60
        key = {}
        for r, value in enumerate(values, 1):
            m, s = square_free_split(r)
            assert scale % m == 0, "pools of more than 35 picks need a larger scale"
            key[s] = key.get(s, 0) + value * (scale // m)
        return tuple(sorted(key.items()))
    power = int(alpha)
    assert power == alpha and power in (0, 1, 2)
    scale = math.lcm(*range(1, t + 1)) ** power
    return sum(value * (scale // r ** power) for r, value in enumerate(values, 1))


def key_value(key):
    """A key as a 60-digit decimal (exact for the integer keys)."""
    if isinstance(key, int):
        return Decimal(key)
    return sum((Decimal(c) / Decimal(s).sqrt() for s, c in key), Decimal(0))


def exact_step(pool, chosen, alpha, taken):
    """{candidate: (exact key, value)} of every pool row not in ``taken`` (indices) against the
    rows ``chosen`` (binary vectors, the same number of ones everywhere)."""
    rows = [frozenset(np.flatnonzero(row).tolist()) for row in pool]
    picks = [frozenset(np.flatnonzero(row).tolist()) for row in chosen]
    hot = len(rows[0])
    scores = {}
    for u, row in enumerate(rows):
        if u in taken:
            continue
        key = exact_key([2 * (hot - len(row & pick)) for pick in picks], alpha)
        scores[u] = (key, key_value(key))
    return scores


def exact_selection(pool, k, alpha, first):
    """The exact greedy run: ``first``, then each time the lowest index among the candidates
    whose exact novelty is the largest."""
    picks = [first]
    while len(picks) < k:
        scores = exact_step(pool, [pool[p] for p in picks], alpha, set(picks))
        best = max(value for _key, value in scores.values())
        best_keys = {key for key, value in scores.values() if value == best}
        picks.append(min(u for u, (key, _value) in scores.items() if key in best_keys))
    return picks


def tie_failures(pool, picks, alpha, tie_rtol, rounding, given=None, start=1):
    """Steps ``start``, ``start + 1``, ... of ``picks`` (a run beside ``given``, binary rows too)
    where the pick breaks the tie rule, as (step, pick, allowed picks).

    With M the exact largest novelty and gap(u) = (M - v(u)) / M: the pick must reach within
    ``tie_rtol + rounding`` of M, and no candidate of a lower index may lie within
    ``tie_rtol - rounding`` (``rounding``: how far a computed relative gap may lie from the
    exact one). In particular, among exact ties the lowest index is picked."""
    given = [] if given is None else list(given)
    failures = []
    for step in range(start, len(picks)):
        scores = exact_step(pool, given + [pool[p] for p in picks[:step]], alpha,
                            set(picks[:step]))
        largest = max(value for _key, value in scores.values())

        def gap(u):
            return (largest - scores[u][1]) / largest if largest else Decimal(0)

        sure = min(u for u in scores if gap(u) <= Decimal(tie_rtol - rounding))
        allowed = [u for u in scores if u <= sure and gap(u) <= Decimal(tie_rtol + rounding)]
        if picks[step] not in allowed:
            failures.append((step, picks[step], allowed))
    return failures
