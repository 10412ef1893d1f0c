"""What a point's hover label says: its index, an excerpt of its text, its numbers."""

import html
import json
import re

from ..errors import InputError
from ..io.text_items import item_text

EXCERPT_CHARACTERS = 300
LINE_CHARACTERS = 90  # hover labels do not wrap by themselves
# up to 90 characters ending at a space, or 90 of a longer word (a regex: textwrap took 11 s
# for the 40,000 labels of a 100,000-row pool)
LINE = re.compile(r".{1,%d}(?:\s+|$)|.{%d}" % (LINE_CHARACTERS, LINE_CHARACTERS))


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
        lines += LINE.findall(line) or [""]
    # quotes stay as they are: plotly's labels decode &lt; &gt; &amp; but show &quot; as typed
    return "<br>".join(html.escape(line.rstrip(), quote=False) for line in lines)


def hover_label(heading, numbers, text=None):
    """``heading`` in bold, then ``name: value`` lines, then the text excerpt."""
    parts = [f"<b>{html.escape(heading, quote=False)}</b>"]
    parts += [f"{html.escape(name, quote=False)}: {value}" for name, value in numbers]
    if text is not None:
        parts.append(label_text(text))
    return "<br>".join(parts)


def number(value):
    """A value for a label: 4 significant digits, or "-" when unknown."""
    return "-" if value is None or value != value else f"{value:.4g}"
