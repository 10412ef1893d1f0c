"""The selection report: where the picks lie in the pool, what they say, how the subset grew,
their density factors against the pool's, and the pool's duplicates."""

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..metrics.proximity import proximity_profile
from .duplicates import PREFILTER_AXES, DuplicateGroups, duplicate_groups, group_of_rows
from .hover import excerpt, hover_label, number
from .page import Page, table_html
from .projection import map_coordinates, unit_axes
from .sampling import drawn_others, sample_note

CURVE_POINTS = 24  # pick numbers at which the subset's NovelSum is computed
TABLE_PICKS = 50
TABLE_GROUPS = 10
GROUP_TEXTS = 3


@dataclass
class SelectionData:
    """A finished selection: the pool ``vectors`` (n, d) and ``items`` (n texts or records),
    ``picks`` in order, each pick's ``novelty`` when picked (NaN for a random first pick),
    every pool row's ``density_factor`` (sigma^beta), the ``given`` vectors or None, and
    ``parameters`` (neighbors, density_power, distance_power) for the titles."""

    vectors: np.ndarray
    items: list
    picks: list
    novelty: np.ndarray
    density_factor: np.ndarray
    given: np.ndarray | None
    parameters: dict


def check_texts(items, n, source):
    """The report shows each row's text: one item per pool row."""
    if items is None or len(items) != n:
        raise InputError(f"{source}: the report needs the pool's texts, one per row "
                         f"({n:,} rows, {0 if items is None else len(items):,} texts); give "
                         f"the text shards the embeddings were made from")


def curve_pick_numbers(k, count=CURVE_POINTS):
    """Pick numbers 2..k, spaced geometrically (the curve bends early), k included."""
    if k < 2:
        return np.array([], dtype=np.int64)
    return np.unique(np.geomspace(2, k, min(count, k - 1)).round().astype(np.int64))


def novelsum_curve(vectors, picks, density_factor, distance_power):
    """NovelSum of the first t picks, with the pool as density reference, at
    ``curve_pick_numbers``: mean over the t picks of sigma^beta x P(alpha) (SPEC section 4)."""
    numbers = curve_pick_numbers(len(picks))
    values = []
    for t in numbers:
        subset = np.asarray(picks[:t])
        means = proximity_profile(vectors[subset], [distance_power]).means[:, 0]
        values.append(float(np.mean(density_factor[subset].astype(np.float64) * means)))
    return numbers, np.array(values)


def point_labels(data, rows, order_of, groups_of):
    """Hover labels of pool ``rows``: index, pick order and novelty for picks, density factor,
    near duplicates, and the text."""
    labels = []
    for i in rows:
        numbers = []
        order = order_of.get(int(i))
        if order is not None:
            numbers += [("pick", order + 1), ("novelty when picked", number(data.novelty[order]))]
        numbers.append(("density factor", number(float(data.density_factor[i]))))
        if groups_of[i] >= 0:
            numbers.append(("near-duplicate group", groups_of[i] + 1))
        labels.append(hover_label(f"index {i}", numbers, excerpt(data.items[i])))
    return labels


def map_points(data, coordinates, settings, groups_of):
    """The map's traces (``map_figure``) and the note on what was drawn."""
    from .selection_figures import GIVEN_COLOUR, GREY
    n, picks = len(data.vectors), np.asarray(data.picks, dtype=np.int64)
    given_count = 0 if data.given is None else len(data.given)
    others = drawn_others(n, picks, max(0, settings.max_points - given_count))
    order_of = {int(p): t for t, p in enumerate(picks)}
    points = {"not picked": (coordinates[others], point_labels(data, others, order_of,
                                                                groups_of), GREY)}
    if given_count:
        points["given"] = (coordinates[n:], [hover_label(f"given, index {i}", [])
                                             for i in range(given_count)], GIVEN_COLOUR)
    points["picks"] = (coordinates[picks], point_labels(data, picks, order_of, groups_of),
                       np.arange(1, len(picks) + 1))
    return points, sample_note(len(others), n - len(picks), "unpicked rows")


def picks_table(data, groups, groups_of):
    """The first picks: order, index, novelty, density factor, near duplicates, text."""
    rows = []
    for t, pick in enumerate(data.picks[:TABLE_PICKS]):
        group = groups_of[pick]
        rows.append([t + 1, pick, number(data.novelty[t]), number(float(data.density_factor[pick])),
                     0 if group < 0 else len(groups[group]) - 1, excerpt(data.items[pick])])
    return table_html(["pick", "index", "novelty", "density factor", "near duplicates",
                       "text"], rows, text_columns=("text",))


def duplicates_html(data, duplicates, groups_of):
    """The duplicate counts, and the largest near-duplicate groups with the picks in them."""
    counts = [[what, *DuplicateGroups.summary(groups)] for what, groups in (
        ("identical vectors", duplicates.exact),
        (f"cosine similarity >= {duplicates.threshold:g}", duplicates.near))]
    summary = table_html(["duplicates", "groups", "rows in them", "rows beyond one per group"],
                         counts)
    order_of = {int(p): t for t, p in enumerate(data.picks)}
    exact_of = group_of_rows(duplicates.exact, len(data.vectors))
    rows = []
    for g, group in enumerate(duplicates.near[:TABLE_GROUPS]):
        picked = [f"pick {order_of[int(i)] + 1} (row {i})" for i in group if int(i) in order_of]
        identical = len(group) - len(np.unique(np.where(exact_of[group] >= 0, exact_of[group],
                                                        -1 - group)))
        texts = "\n---\n".join(f"row {i}: {excerpt(data.items[i], 150)}"
                               for i in group[:GROUP_TEXTS])
        rows.append([g + 1, len(group), identical, ", ".join(picked) or "none", texts])
    largest = table_html(["group", "rows", "identical copies", "picked: the pick stands for "
                          "the group", "first texts"], rows, text_columns=("first texts",))
    return summary + largest


def selection_page(data, settings):
    """The whole selection report as a ``Page``."""
    from .selection_figures import density_figure, map_figure, pick_curve_figure  # plotly

    n, k = len(data.vectors), len(data.picks)
    vectors = data.vectors if data.given is None else np.concatenate([data.vectors, data.given])
    axes = unit_axes(vectors, min(PREFILTER_AXES, vectors.shape[1]))
    coordinates = map_coordinates(vectors, settings.map_method, axes=axes)
    duplicates = duplicate_groups(data.vectors, settings.similarity, axes[1])
    groups_of = group_of_rows(duplicates.near, n)
    points, note = map_points(data, coordinates, settings, groups_of)
    p = data.parameters
    setting = (f"neighbors={p['neighbors']}, beta={p['density_power']:g}, "
               f"alpha={p['distance_power']:g}")
    page = Page(f"NovelSelect: {k:,} picks of {n:,} rows",
                f"{setting}; map: {settings.map_method.upper()} of the unit vectors"
                + (f"; {len(data.given):,} given rows" if data.given is not None else ""))
    page.section("Map of the pool", "Hover a point for its index, text and numbers. " + note)
    page.figure(map_figure(points, f"{k:,} picks (coloured by pick order) in the pool"), "map")
    numbers, values = novelsum_curve(data.vectors, data.picks, data.density_factor,
                                     p["distance_power"])
    page.section("How the subset grew", "NovelSum of the picks alone, the pool as density "
                 "reference, at pick numbers spaced geometrically.")
    page.figure(pick_curve_figure(np.asarray(data.novelty, dtype=np.float64), numbers, values),
                "curve")
    page.section("Density factors")
    page.figure(density_figure(data.density_factor, data.density_factor[data.picks]),
                "density")
    page.section(f"The first {min(k, TABLE_PICKS)} picks")
    page.add_html(picks_table(data, duplicates.near, groups_of))
    page.section("Duplicates in the pool", "Near duplicates are linked transitively: a group "
                 "holds rows joined by chains of similar pairs.")
    page.add_html(duplicates_html(data, duplicates, groups_of))
    return page


def write_selection_report(data, settings, path=None):
    """Draw the report of ``data`` and write it at ``path`` (default ``settings.path``)."""
    check_texts(data.items, len(data.vectors), "the pool")
    selection_page(data, settings).write(path or settings.path)
