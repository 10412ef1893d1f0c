"""The ``--plot`` pictures: novelty per pick, and NovelSum per dataset."""

import numpy as np

FIGURE_SIZE = (8, 4.5)  # inches


DPI = 120  # 960 x 540 pixels


EARLY_FRACTION = 0.1  # the early level: the mean novelty of the first 10% of picks


def known_picks(novelty):
    """Pick numbers (1-based) of the picks that have a novelty: all of them beside a given
    set; all but the first, drawn at random, without one."""
    return np.flatnonzero(np.isfinite(np.asarray(novelty, dtype=np.float64))) + 1


def early_level(novelty):
    """Mean novelty of the first 10% of picks that have one (at least one pick)."""
    known = np.asarray(novelty, dtype=np.float64)[known_picks(novelty) - 1]
    if not len(known):
        return float("nan")
    return float(np.mean(known[:max(1, int(round(len(known) * EARLY_FRACTION)))]))


def half_point(novelty):
    """The first pick number (1-based) whose novelty is at most half the early level, or None."""
    level, picks = early_level(novelty), known_picks(novelty)
    below = picks[np.asarray(novelty, dtype=np.float64)[picks - 1] <= level / 2]
    return int(below[0]) if len(below) else None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def plot_pick_novelty(novelty, path, title):
    """Novelty at pick against pick number, with the early level and its half marked."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=FIGURE_SIZE, dpi=DPI)
    picks = known_picks(novelty)
    axes.plot(picks, np.asarray(novelty)[picks - 1], color="tab:blue", linewidth=1.2,
              marker="." if len(picks) < 50 else None, label="novelty of the pick")
    level, half = early_level(novelty), half_point(novelty)
    if np.isfinite(level):
        axes.axhline(level, color="tab:gray", linestyle=":", linewidth=1,
                     label=f"early level {level:.3g} (first 10% of picks)")
        axes.axhline(level / 2, color="tab:gray", linestyle="--", linewidth=1,
                     label="half the early level")
    if half is not None:
        axes.axvline(half, color="tab:red", linewidth=1.2,
                     label=f"falls to half at pick {half:,}")
    axes.set_xlabel("pick number")
    axes.set_ylabel("novelty when picked")
    axes.set_title(title)
    axes.set_xlim(1, max(2, len(novelty)))
    axes.grid(alpha=0.3)
    axes.legend(loc="upper right", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)


def plot_novelsum(names, values, per_sample, setting, path):
    """NovelSum of each dataset (bars, left) and the spread of its per-sample novelty (box
    plots, right), at the grid point described by ``setting``."""
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(FIGURE_SIZE[0] * 1.4, FIGURE_SIZE[1]),
                                         dpi=DPI, sharey=True)
    positions = np.arange(len(names))
    left.barh(positions, values, color="tab:blue")
    for y, value in zip(positions, values):
        left.text(value, y, f" {value:.3f}", va="center", fontsize=9)
    left.invert_yaxis()
    left.set_xlabel("NovelSum")
    left.set_xlim(0, max(values) * 1.25 if len(values) and max(values) > 0 else 1)
    left.set_title(f"NovelSum ({setting})")
    right.boxplot(per_sample, positions=positions, orientation="horizontal", widths=0.6,
                  showmeans=True,
                  flierprops={"markersize": 2})
    left.set_yticks(positions, labels=names)  # after the box plots, which relabel the axis
    right.set_xlabel("per-sample novelty")
    right.set_title("spread over samples (box: quartiles; triangle: mean)")
    for axes in (left, right):
        axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)
