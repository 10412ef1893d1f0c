"""Optional progress reporting around an iterable."""



def tracked(iterable, progress=None):
    """``progress(iterable)`` when a progress wrapper (for example a tqdm factory) is given,
    else the iterable itself."""
    return progress(iterable) if progress else iterable
