"""NovelSum toolkit: measure the diversity of instruction-tuning data (NovelSum) and pick the
most diverse subset of a pool (NovelSelect), after arXiv 2502.17184.

Installed, this package is ``novelsum_toolkit``; in the repository it is the folder ``utils``.
The public API is imported lazily, so that the command-line scripts start fast::

    import novelsum_toolkit as nt
    nt.novelsum_score(vectors, reference=pool)
"""

__all__ = ["DEFAULT_DENSITY_POWERS", "DEFAULT_DISTANCE_POWERS", "DEFAULT_NEIGHBORS",
           "InputError", "NovelSumResult", "SelectionResult", "density_reference",
           "embed_texts", "novelselect", "novelsum", "novelsum_score"]


def __getattr__(name):
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
