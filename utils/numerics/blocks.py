"""Row blocks sized from a memory budget: the one chunk planner."""



MIB = 2**20


DEFAULT_BLOCK_MIB = 256  # working memory of one block unless told otherwise (--block_mib)


def rows_per_block(bytes_per_row, block_bytes):
    """How many rows fit in ``block_bytes`` when each costs ``bytes_per_row``; at least one,
    so that a single row larger than the budget still makes progress."""
    return max(1, int(block_bytes // max(1, bytes_per_row)))


def row_blocks(n_rows, bytes_per_row, block_bytes):
    """Yield ``(start, stop)`` ranges covering ``range(n_rows)`` in order, each within budget."""
    step = rows_per_block(bytes_per_row, block_bytes)
    for start in range(0, n_rows, step):
        yield start, min(n_rows, start + step)
