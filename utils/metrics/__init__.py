"""NovelSum over its grid, and the --metrics registry of other diversity measures."""
