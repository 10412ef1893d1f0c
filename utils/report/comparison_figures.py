"""The figures of a comparison report: NovelSum per dataset, the whole grid, the spread of
per-sample novelty, and a map of all datasets together."""

import numpy as np
import plotly.graph_objects as go

from ..metrics.proximity import column_setting


def bars_figure(names, values, column):
    figure = go.Figure(go.Bar(x=names, y=values, text=[f"{v:.4g}" for v in values],
                              textposition="outside", name="NovelSum"))
    figure.update_layout(title=f"NovelSum of each dataset ({column_setting(column)})",
                         height=420, yaxis_title="NovelSum", template="plotly_white")
    return figure


def grid_figure(names, columns, values):
    """A heat map: one row per dataset, one column per grid point, the value written in."""
    labels = [column_setting(c) for c in columns]
    figure = go.Figure(go.Heatmap(z=values, x=labels, y=names, colorscale="Blues",
                                  text=[[f"{v:.4g}" for v in row] for row in values],
                                  texttemplate="%{text}", colorbar=dict(title="NovelSum")))
    figure.update_layout(title="NovelSum over the whole grid", template="plotly_white",
                         height=max(320, 60 + 40 * len(names)), xaxis=dict(tickangle=-45),
                         yaxis=dict(autorange="reversed"))  # datasets top-down, as the bars
    return figure


def spread_figure(spreads, column):
    """One box per dataset of its per-sample novelty (``spreads``: name -> values)."""
    figure = go.Figure()
    for name, values in spreads.items():
        figure.add_trace(go.Box(y=np.asarray(values, dtype=np.float32), name=name,
                                boxmean=True, boxpoints=False))
    figure.update_layout(title=f"Per-sample novelty ({column_setting(column)}; dashed: mean)",
                         height=420, yaxis_title="novelty of the sample",
                         template="plotly_white", showlegend=False)
    return figure


def datasets_map_figure(traces, title):
    """``traces``: name -> (xy, hover labels), one colour per dataset."""
    figure = go.Figure()
    for name, (xy, labels) in traces.items():
        figure.add_trace(go.Scattergl(x=xy[:, 0].astype(np.float32),
                                      y=xy[:, 1].astype(np.float32), mode="markers",
                                      name=name, text=labels, hoverinfo="text",
                                      marker=dict(size=5, opacity=0.7)))
    figure.update_layout(title=title, height=680, template="plotly_white",
                         hoverlabel=dict(align="left"), xaxis_title="map axis 1",
                         yaxis_title="map axis 2")
    return figure
