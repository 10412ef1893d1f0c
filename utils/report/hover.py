"""What a point's hover label says: its index, an excerpt of its text, its numbers."""

import html
import json
import textwrap

from ..errors import InputError
from ..io.text_items import item_text

EXCERPT_CHARACTERS = 300
LINE_CHARACTERS = 90  # hover labels do not wrap by themselves


def excerpt(item, limit=EXCERPT_CHARACTERS):
    """The first ``limit`` characters of an item's text (a conversation's turns joined, as
    embedded), with an ellipsis when cut; a record of no known shape as its JSON."""
    try:
        text = item_text(item, "the report")
    except InputError:
        text = json.dumps(item, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "…"


def label_text(text):
    """``text`` for a plotly label: escaped, its lines wrapped, joined with ``<br>``."""
    lines = []
    for line in text.splitlines() or [""]:
        lines += textwrap.wrap(line, LINE_CHARACTERS, break_long_words=True,
                               replace_whitespace=False) or [""]
    return "<br>".join(html.escape(line) for line in lines)


def hover_label(heading, numbers, text=None):
    """``heading`` in bold, then ``name: value`` lines, then the text excerpt."""
    parts = [f"<b>{html.escape(heading)}</b>"]
    parts += [f"{html.escape(name)}: {value}" for name, value in numbers]
    if text is not None:
        parts.append(label_text(text))
    return "<br>".join(parts)


def number(value):
    """A value for a label: 4 significant digits, or "-" when unknown."""
    return "-" if value is None or value != value else f"{value:.4g}"
