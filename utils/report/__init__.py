"""The interactive HTML report of a selection or of a comparison: a 2-D map of the rows, the
pick curve, densities, duplicates, NovelSum per dataset; one offline file (plotly inlined)."""
