"""The figures of a selection report: the map of the pool, the pick curve, the density factors
of the picks against the pool's."""

import numpy as np
import plotly.graph_objects as go

GREY, GIVEN_COLOUR = "rgba(150,150,150,0.45)", "#e8590c"
PICK_SCALE = "Viridis"


def map_figure(points, title):
    """The 2-D map: ``points`` maps a trace name to ``(xy, labels, colour)`` where colour is a
    colour name or an array of pick orders (drawn on a colour scale)."""
    figure = go.Figure()
    for name, (xy, labels, colour) in points.items():
        if not len(xy):
            continue
        scaled = not isinstance(colour, str)
        marker = dict(size=7 if scaled else 4, color=colour)
        if scaled:
            marker.update(colorscale=PICK_SCALE, colorbar=dict(title="pick order"),
                          line=dict(width=0.5, color="black"))
        figure.add_trace(go.Scattergl(
            x=xy[:, 0].astype(np.float32), y=xy[:, 1].astype(np.float32), mode="markers",
            name=name, text=labels, hoverinfo="text", marker=marker))
    figure.update_layout(title=title, height=720, hoverlabel=dict(align="left"),
                         legend=dict(orientation="h", y=-0.08), xaxis_title="map axis 1",
                         yaxis_title="map axis 2", template="plotly_white")
    return figure


def pick_curve_figure(novelty, curve_picks, curve_values):
    """Each pick's novelty against the pick number, and the subset's NovelSum at the pick
    numbers ``curve_picks`` (right axis)."""
    figure = go.Figure()
    numbers = np.arange(1, len(novelty) + 1)
    known = np.isfinite(novelty)
    figure.add_trace(go.Scatter(x=numbers[known], y=np.asarray(novelty)[known], mode="lines",
                                name="novelty of the pick"))
    figure.add_trace(go.Scatter(x=curve_picks, y=curve_values, mode="lines+markers",
                                name="NovelSum of the picks so far", yaxis="y2"))
    figure.update_layout(
        title="Novelty of each pick, and the NovelSum of the subset as it grows", height=420,
        xaxis_title="number of picks", yaxis=dict(title="novelty when picked"),
        yaxis2=dict(title="NovelSum", overlaying="y", side="right"),
        template="plotly_white", legend=dict(orientation="h", y=-0.2))
    return figure


def density_figure(pool_factors, pick_factors):
    """Histograms, as densities, of the density factor of the pool's rows and of the picks'."""
    figure = go.Figure()
    edges = np.histogram_bin_edges(np.asarray(pool_factors, dtype=np.float64), bins=60)
    for name, values in (("pool", pool_factors), ("picks", pick_factors)):
        counts, _ = np.histogram(np.asarray(values, dtype=np.float64), bins=edges, density=True)
        figure.add_trace(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, name=name,
                                width=np.diff(edges), opacity=0.6))
    figure.update_layout(barmode="overlay", height=380, template="plotly_white",
                         title="Density factor of the picks against the pool's",
                         xaxis_title="density factor (sigma^beta)",
                         yaxis_title="share of rows (density)")
    return figure
