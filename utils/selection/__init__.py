"""NovelSelect: the engine contract, its CPU and GPU kernels, the sharded engine, memory checks,
the greedy run, and the baseline selectors."""
