"""One self-contained HTML page: plotly's JavaScript inlined once, then headed sections of
figures and tables; written atomically."""

import html

from ..io.atomic import write_text_atomic

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
p.note { color: #555; max-width: 70em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: top; }
td.text { max-width: 60em; white-space: pre-wrap; }
"""


def figure_html(figure, div_id):
    """A figure's div and the script that draws it (the library itself is inlined once)."""
    return figure.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                          config={"displaylogo": False, "responsive": True})


def table_html(header, rows, text_columns=()):
    """An HTML table; every cell escaped, columns named in ``text_columns`` wrapped as text."""
    head = "".join(f"<th>{html.escape(str(name))}</th>" for name in header)
    body = "".join(
        "<tr>" + "".join(f"<td class=\"text\">{html.escape(str(cell))}</td>"
                         if name in text_columns else f"<td>{html.escape(str(cell))}</td>"
                         for name, cell in zip(header, row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def note_html(text):
    return f"<p class=\"note\">{html.escape(text)}</p>"


class Page:
    """Sections added in order, then ``write(path)``."""

    def __init__(self, title, subtitle):
        self.title, self.subtitle, self.parts = title, subtitle, []

    def section(self, heading, note=None):
        self.parts.append(f"<h2>{html.escape(heading)}</h2>")
        if note:
            self.parts.append(note_html(note))

    def figure(self, figure, div_id):
        self.parts.append(figure_html(figure, div_id))

    def add_html(self, fragment):
        self.parts.append(fragment)

    def text(self):
        from plotly.offline import get_plotlyjs

        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(self.title)}</title><style>{STYLE}</style>"
                f"<script type=\"text/javascript\">{get_plotlyjs()}</script></head><body>"
                f"<h1>{html.escape(self.title)}</h1>{note_html(self.subtitle)}"
                + "\n".join(self.parts) + "</body></html>\n")

    def write(self, path):
        """The page at ``path``, written under a temporary name and renamed."""
        write_text_atomic(path, self.text())
