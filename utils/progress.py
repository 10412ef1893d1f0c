"""Progress reporting as the library sees it: an optional wrapper around an iterable."""


def tracked(iterable, progress=None):
    """``progress(iterable)`` when a progress wrapper (for example a tqdm factory) is given,
    else the iterable itself."""
    return progress(iterable) if progress else iterable
