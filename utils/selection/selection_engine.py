"""The NovelSelect engine's contract and greedy loop (docs/method.md section 5).

Every unpicked candidate u keeps the values x(u, s) = (1 - cos(u, s)) * (rho(u) + rho(s)) for
the picks s so far, sorted ascending, and their weighted sum A(u) = sum_r w_r x_(r) with
w_r = r^-alpha; its novelty is v(u) = A(u) / t. When a pick adds one value x that lands after m
stored values, only the values behind it move one rank down:

    A_new = A_old + w_{m+1} x - sum_{r>m} (w_r - w_{r+1}) x_(r)

so a step costs one distance vector and one pass over each candidate's tail, not a matrix
product and a sort. Values are stored in float32 (4 bytes each, pool x k of them); sums
are float64, so the incremental A stays equal to a fresh sum far below the 1e-6 that matters.

Three kernels run the same update: on the CPU a numba loop (both cores, one candidate per
iteration), or for a small selection its numpy twin, bitwise the same, which never loads
numba; on a GPU, a Triton kernel that does the same per candidate (checked against the torch
kernel on the device before it is trusted), or else torch over row chunks.

Exact duplicates must tie exactly (docs/method.md section 6): a candidate's value must not
depend on where its row sits in memory, on how many rows there are, or on the engine. So the
dot product u . s is summed in one fixed order everywhere, a halving tree over the float32
products p_j = u_j s_j: with h the largest power of two below d, p_j += p_{j+h} for j < d - h,
then p_j += p_{j+h'} for j < h' = h/2, h/4, ..., 1, and p_0 is the dot (``halving_sums``). No
step is fused or reordered: numba runs without fastmath, torch runs it as elementwise
operations, each exactly rounded; on a GPU that is a dozen elementwise operations per row
chunk (log2 d), where a sequential order would need one per block of columns. The cosine
divides u . s by the rows' own computed norms, in float64 (``pair_values``: cos(u, u) is
exactly 1, so a pick's duplicate gets 0). The values x(u, s) are then bitwise the same on the
numba, torch and Triton engines (on a GPU too, by construction; tests/test_gpu.py checks it
there), and the lowest index wins among duplicates; ties between distinct candidates are
decided by ``TIE_RTOL``.
The insertion's tail sum is also fixed per row: by halving over the tail's ranks in numba
(its order set by t and the insertion point, never by where the row sits in memory) and in
torch, per block of ranks in Triton; the sums may differ between
engines in the last bits (the engines are compared to 1e-12), never between duplicates,
whatever the chunking.

An engine can also start from t given picks (a resumed or extended run, ``rebuild``): every
candidate's t values against them are computed in one batched pass over row blocks, with the
same fixed-order dot (so the values are bitwise those of the incremental path), sorted once per
row, and summed in float64 by halving over the ranks (``halving_sums``; the numba kernel
halves in the same order, so every engine rebuilds bitwise the same sums). A sum built by t
insertions carries the rounding of each insertion, which no single sum can reproduce, so the
rebuilt sums equal the incremental ones to a relative 1e-12 (``REBUILD_SUM_RTOL``; measured:
3e-15 after 300 picks, 2.5e-14 after 3,000; far below the 1e-6 of docs/method.md section 6),
not bit for bit (with alpha = 0 they are: float32 values summed in float64 are exact at these
sizes). The sorted values are bitwise equal, and duplicates still tie exactly.
"""

import abc

import numpy as np

from ..numerics.blocks import row_blocks
from ..numerics.fixed_order import fixed_order_bytes_per_row, fixed_order_dots, halving_sums
from ..numerics.weights import rank_weights, tail_coefficients
from .inputs import check_resume_picks
from .pair_values import as_float64, concatenated, pair_values, squared_norms

VALUE_BYTES = 4  # float32 per stored value


REBUILD_SUM_RTOL = 1e-12  # rebuilt sums vs the incremental ones (module docstring)
# Scores within this relative distance of the largest are a tie, won by the lowest index
# (docs/method.md section 6). Each stored value is its exact value rounded once to float32
# (``pair_values``; relative error at most 2^-24 where the dots are exact), so two candidates
# whose novelties tie in exact arithmetic differ by at most 2^-23 relative, plus the float64
# sums' order (1e-12, ``REBUILD_SUM_RTOL``): 2^-22 covers both, and lies well inside the
# near-ties (1e-6) where either pick is right.
TIE_RTOL = 2.0**-22


def tie_floor(best):
    """The lowest score that ties with the largest score ``best``."""
    return best - TIE_RTOL * abs(best)


def first_pick(n, seed):
    """The first pick: ``numpy.random.RandomState(seed).randint(0, n)``, as the reference."""
    return int(np.random.RandomState(seed).randint(0, n))


PICK_NOVELTY_BYTES = 64 * 2**20  # working memory of one block of ``pick_novelty``


def pick_novelty(targets, factors, weights, first=1):
    """The novelty each of the picks ``first``, ``first + 1``, ... had when it was picked,
    from the rows ``targets`` (t, d) and density factors (t,) of every pick in order (a given
    set's rows first, when there is one), as numpy arrays or torch tensors on the engine's
    device; NaN for the picks before ``first`` (the first of a run was drawn at random).

    Pick j's values against the j picks before it are the rebuild's (``pair_values`` of
    fixed-order dots, so bitwise those its step inserted), sorted and summed in float64 by
    halving over the ranks, as ``SelectionEngine.rebuild`` sums them: the novelty equals the
    one the run logged to ``REBUILD_SUM_RTOL``. ``weights``: float64 w_r, like ``targets``."""
    t = len(targets)
    novelty = np.full(t, np.nan)
    if t < 2:
        return novelty
    squares = squared_norms(targets)
    step = max(1, PICK_NOVELTY_BYTES // fixed_order_bytes_per_row(targets.shape[1]))
    for j in range(max(first, 1), t):
        values = pair_values(concatenated([fixed_order_dots(targets[a:min(a + step, j)],
                                                            targets[j])
                                           for a in range(0, j, step)]),
                             squares[:j], factors[:j], squares[j], float(factors[j]))
        ordered = values.sort().values if hasattr(values, "clone") else np.sort(values)
        novelty[j] = float(halving_sums(as_float64(ordered) * weights[:j])) / j
    return novelty


class SelectionEngine(abc.ABC):
    """What every engine shares: it owns the pick count ``k`` and ``alpha``, sizes
    its stored values for them, counts the values it holds (``t``) and runs the greedy loop,
    so the loop cannot ask it for more picks than it has room for.

    A subclass provides the abstract methods below and the attributes ``block_bytes``,
    ``weighted_sums`` and ``active``.
    """

    def __init__(self, n, k, alpha):
        if k < 1:
            raise ValueError(f"an engine needs k >= 1 picks, not {k}")
        self.n, self.k, self.alpha = n, k, float(alpha)
        self.weights = rank_weights(k, alpha)
        self.coefficients = tail_coefficients(self.weights)
        self.width = max(k - 1, 1)  # stored values per candidate
        self.t = 0  # values each candidate holds: the picks added so far

    def _check_room(self):
        if self.t >= self.k - 1:
            raise ValueError(f"the engine was built for k={self.k} and already holds "
                             f"{self.t} values per candidate: no room for another pick")

    def add_pick(self, pick):
        """Insert every active candidate's value against ``pick`` and mark ``pick`` as taken."""
        self._check_room()
        self._insert(pick)
        self.t += 1

    def add_vector(self, target, pick_density_factor, taken=None):
        """Insert every active candidate's value against a pick given by its unit vector and
        density factor (a pick that another rank holds); ``taken``: the pick's row among this
        engine's candidates, marked as taken, or None when it is not one of them."""
        self._check_room()
        self._insert_vector(target, pick_density_factor, taken)
        self.t += 1

    def rebuild_blocks(self, t):
        """Row blocks ``(start, stop)`` of the rebuild against ``t`` given picks."""
        return list(row_blocks(self.n, self.rebuild_bytes_per_row(t), self.block_bytes))

    def rebuild(self, picks):
        """Start from the given picks (distinct, 1 <= t <= k - 1 of them, in pick order): mark
        them as taken and give every other candidate its t values against them, sorted, and
        their weighted sum, in one batched pass over ``rebuild_blocks`` (module docstring).

        The sorted values are bitwise those that t ``add_pick`` calls leave; the sums agree to
        ``REBUILD_SUM_RTOL``. Returns the row blocks used.
        """
        if self.t:
            raise ValueError(f"the engine already holds {self.t} picks; build a new one")
        picks = check_resume_picks(picks, self.n, self.k, "the picks to start from")
        if len(picks) > self.k - 1:
            raise ValueError(f"the engine was built for k={self.k}: room for {self.k - 1} "
                             f"values per candidate, not {len(picks)}")
        blocks = self.rebuild_blocks(len(picks))
        self._rebuild(picks, blocks)
        self.t = len(picks)
        return blocks

    def pick_vectors(self, picks):
        """Unit vectors and density factors of ``picks``, as numpy arrays, in their order."""
        return (np.asarray(self.host_rows(picks), dtype=np.float32),
                np.asarray(self.host_factors(picks), dtype=np.float32))

    def rebuild_vectors(self, targets, pick_density_factors, taken):
        """``rebuild`` for picks given by their unit vectors ``targets`` (t, d) and density
        factors (t,), in pick order (picks that other ranks hold); ``taken``: the rows among
        this engine's candidates that are picks. Returns the row blocks used."""
        if self.t:
            raise ValueError(f"the engine already holds {self.t} picks; build a new one")
        t = len(targets)
        if not 1 <= t <= self.k - 1:
            raise ValueError(f"the engine was built for k={self.k}: room for {self.k - 1} "
                             f"values per candidate, not {t}")
        blocks = self.rebuild_blocks(t)
        self._rebuild_vectors(targets, pick_density_factors, taken, blocks)
        self.t = t
        return blocks

    def pick_novelty(self, targets, pick_density_factors, first=1):
        """``pick_novelty`` of picks given by their rows and density factors (numpy), computed
        where this engine computes."""
        return pick_novelty(self.compute_array(targets), self.compute_array(pick_density_factors),
                            self.compute_array(self.weights), first)

    def compute_array(self, array):
        """A numpy array as this engine computes with it (a torch tensor on a GPU engine)."""
        return np.asarray(array)

    def _insert(self, pick):
        """Insert every active candidate's value against ``pick`` after the ``t`` it holds."""
        self._insert_vector(self.unit[pick], self.density_factors[pick], pick)

    def _rebuild(self, picks, blocks):
        """Every candidate's values against ``picks``, sorted and summed, in ``blocks``."""
        self._rebuild_vectors(self.unit[picks], self.density_factors[picks], picks, blocks)

    def best(self, quality=None):
        """The unpicked candidate with the largest novelty (times quality), the lowest index
        among those within ``TIE_RTOL`` of it, and its novelty, after the ``t`` picks added
        so far."""
        pick, novelty, _score, _largest = self.best_scored(quality)
        return pick, novelty

    @abc.abstractmethod
    def _insert_vector(self, target, pick_density_factor, taken):
        """Insert every active candidate's value against the pick with unit vector ``target``
        and density factor ``pick_density_factor`` after the ``t`` it holds; mark row ``taken``
        (if any) taken."""

    @abc.abstractmethod
    def _rebuild_vectors(self, targets, pick_density_factors, taken, blocks):
        """Every candidate's values against the picks ``targets`` / ``pick_density_factors``,
        sorted and summed, in ``blocks``; rows ``taken`` are marked taken."""

    @abc.abstractmethod
    def rebuild_bytes_per_row(self, t):
        """Working bytes per row of the rebuild against ``t`` given picks."""

    @abc.abstractmethod
    def device_array(self, values):
        """``values`` as float64 where this engine keeps its sums (quality scores)."""

    @abc.abstractmethod
    def best_scored(self, quality=None, floor=None):
        """``best``, with the winning score (novelty times quality) and the largest score:
        ``(pick, novelty, score, largest)``, the pick being the lowest index whose score
        reaches ``floor`` (by default ``tie_floor(largest)``); ``(-1, nan, -inf, largest)``
        when no candidate does (a rank whose rows are all picked, or all below ``floor``)."""

    def run(self, first, quality=None, on_pick=None, given=None):
        """The greedy loop, to ``k`` picks: ``first`` is the first pick (an index) or the picks
        to start from (a list of distinct indices, at most ``k``; with two or more their state
        is rebuilt in one pass, ``rebuild``). ``on_pick(index, novelty)`` hears of each pick,
        the given ones first, with the novelty each had when it was picked (``given_novelty``;
        NaN for the first).

        ``given``: a set the user already has (docs/method.md section 10), as its unit vectors
        and density factors ``(targets, factors)``: its m rows count as picks made before
        ``first`` (then a list, possibly empty), and the engine, built for m + k picks, makes
        k - len(first) more.
        """
        if self.t:
            raise ValueError(f"the engine already holds {self.t} picks; build a new one")
        prior = 0 if given is None else len(given[0])
        count = self.k - prior  # the picks this run returns
        single = isinstance(first, (int, np.integer)) and not isinstance(first, bool)
        picks = [] if prior and not len(first) else check_resume_picks(
            [first] if single else first, self.n, count, "the picks to start from")
        quality = self.device_array(quality) if quality is not None else None
        self._start(picks, given, count, on_pick)
        while len(picks) < count:
            pick, novelty = self.best(quality)
            if pick < 0:  # every score NaN or infinite: never write a row that was not picked
                raise ValueError(f"pick {len(picks) + 1}: no candidate has a finite score")
            picks.append(pick)
            if on_pick:
                on_pick(pick, novelty)
            if len(picks) < count:
                self.add_pick(pick)
        return picks

    def _start(self, picks, given, count, on_pick):
        """The state after the given set (if any) and ``picks``, and ``on_pick`` told of each
        of ``picks`` with its novelty when it was picked."""
        if given is None:
            if on_pick:
                novelty = (self.pick_novelty(*self.pick_vectors(picks))
                           if len(picks) > 1 else [float("nan")])
                for pick, value in zip(picks, novelty):
                    on_pick(pick, float(value))
            if len(picks) == 1 and count > 1:
                self.add_pick(picks[0])  # marks the pick as taken, so it is never chosen again
            elif len(picks) < count:
                self.rebuild(picks)
            return
        targets, factors = (np.asarray(given[0], dtype=np.float32),
                            np.asarray(given[1], dtype=np.float32))
        if picks:
            more_targets, more_factors = self.pick_vectors(picks)
            targets = np.concatenate([targets, more_targets])
            factors = np.concatenate([factors, more_factors])
            if on_pick:
                novelty = self.pick_novelty(targets, factors, first=len(given[0]))
                for pick, value in zip(picks, novelty[len(given[0]):]):
                    on_pick(pick, float(value))
        if len(picks) < count:
            self.rebuild_vectors(targets, factors, picks)
