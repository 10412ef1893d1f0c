"""Loading embedding folders for a run, on one process or a rank's block."""



def load_embeddings(path, ranks, progress, allow_zero=False, embedding_field=None):
    """Embedding vectors (``utils.shards``): all of them in one process; under ``torchrun``
    this rank's block of rows (``ranks.block``), with global offsets."""
    from ..io.vectors import load_vector_block, load_vectors

    if ranks.grouped:
        return load_vector_block(path, ranks.block, progress, allow_zero=allow_zero,
                                 embedding_field=embedding_field)
    return load_vectors(path, progress, allow_zero=allow_zero, embedding_field=embedding_field)
