"""What a report is asked for (its path, map, duplicate threshold, point cap, grid point), checked
before any long work."""

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .duplicates import DEFAULT_SIMILARITY, check_similarity
from .projection import check_map_method
from .sampling import DEFAULT_MAX_POINTS, check_max_points


@dataclass(frozen=True)
class ReportSettings:
    """``path``: the HTML file; ``map_method``: pca or umap; ``similarity``: the cosine
    similarity of near duplicates; ``max_points``: points a map draws at most (picks and given
    rows always); ``column``: the grid column a comparison shows (None: the recommended)."""

    path: Path
    map_method: str = "pca"
    similarity: float = DEFAULT_SIMILARITY
    max_points: int = DEFAULT_MAX_POINTS
    column: str | None = None


def check_report_path(path, option="--report"):
    """A file name ending in .html, in a folder that exists, not itself a folder."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: {option} is a folder; give a file name such as "
                         f"{path / 'report.html'}")
    if path.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"{path}: {option} writes an HTML page; give a name ending in .html")
    folder = path.absolute().parent
    if not folder.is_dir():
        raise InputError(f"{path}: {option}: the folder {folder} does not exist; create it "
                         f"or give a path in an existing folder")


def check_settings(settings, option="--report"):
    """Every setting, before any long work (``InputError`` naming the option at fault)."""
    check_report_path(settings.path, option)
    check_map_method(settings.map_method)
    check_similarity(settings.similarity)
    check_max_points(settings.max_points)
