"""The NovelSelect engine's contract and greedy loop (docs/method.md section 5)."""

import abc

import numpy as np

from ..numerics.blocks import row_blocks
from ..numerics.weights import rank_weights, tail_coefficients
from .inputs import check_resume_picks

VALUE_BYTES = 4  # float32 per stored value


REBUILD_SUM_RTOL = 1e-12  # rebuilt sums vs the incremental ones (module docstring)


def first_pick(n, seed):
    """The first pick: ``numpy.random.RandomState(seed).randint(0, n)``, as the reference."""
    return int(np.random.RandomState(seed).randint(0, n))


class SelectionEngine(abc.ABC):
    """What every engine shares: it owns the budget ``k`` (picks to make) and ``alpha``, sizes
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

    def _insert(self, pick):
        """Insert every active candidate's value against ``pick`` after the ``t`` it holds."""
        self._insert_vector(self.unit[pick], self.density_factors[pick], pick)

    def _rebuild(self, picks, blocks):
        """Every candidate's values against ``picks``, sorted and summed, in ``blocks``."""
        self._rebuild_vectors(self.unit[picks], self.density_factors[picks], picks, blocks)

    def best(self, quality=None):
        """The unpicked candidate with the largest novelty (times quality), the lowest index on
        ties, and its novelty, after the ``t`` picks added so far."""
        pick, novelty, _score = self.best_scored(quality)
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
    def best_scored(self, quality=None):
        """``best``, with the winning score (novelty times quality): ``(pick, novelty,
        score)``; ``(-1, nan, -inf)`` when no candidate is left (a rank whose rows are all
        picked)."""

    def run(self, first, quality=None, on_pick=None):
        """The greedy loop, to ``k`` picks: ``first`` is the first pick (an index) or the picks
        to start from (a list of distinct indices, at most ``k``; with two or more their state
        is rebuilt in one pass, ``rebuild``). ``on_pick(index, novelty)`` hears of each pick,
        the given ones first, with novelty NaN (not computed for them)."""
        if self.t:
            raise ValueError(f"the engine already holds {self.t} picks; build a new one")
        single = isinstance(first, (int, np.integer)) and not isinstance(first, bool)
        picks = check_resume_picks([first] if single else first, self.n, self.k,
                                   "the picks to start from")
        quality = self.device_array(quality) if quality is not None else None
        if on_pick:
            for pick in picks:
                on_pick(pick, float("nan"))
        if len(picks) == 1 and self.k > 1:
            self.add_pick(picks[0])  # marks the pick as taken, so it is never chosen again
        elif len(picks) < self.k:
            self.rebuild(picks)
        while len(picks) < self.k:
            pick, novelty = self.best(quality)
            picks.append(pick)
            if on_pick:
                on_pick(pick, novelty)
            if len(picks) < self.k:
                self.add_pick(pick)
        return picks




