"""Self-contained HTML pages: inline CSS, figures embedded as base64 PNG (readable offline, one file)."""
from __future__ import annotations

import base64
import html
import io
from typing import Any, Iterable, Sequence

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#1d2330;
line-height:1.45;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #dde;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}th,td{border:1px solid #d6d9e0;padding:.3rem .55rem;
text-align:left;vertical-align:top}th{background:#f3f4f8}.note{background:#fff6dd;border-left:4px solid #e0a800;
padding:.4rem .8rem;margin:.5rem 0}.bad{color:#b3261e;font-weight:600}.good{color:#1b7f3b;font-weight:600}
.muted{color:#667}figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #e3e5ea}
figcaption{font-size:.85rem;color:#556}code{background:#f3f4f8;padding:0 .2rem;border-radius:3px}
.state-holds{color:#1b7f3b;font-weight:600}.state-fails{color:#b3261e;font-weight:600}
.state-undecided{color:#8a6d00;font-weight:600}.state-incomplete{color:#5b5f6b;font-weight:600}
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def img(png: bytes, alt: str, caption: str = "") -> str:
    data = base64.b64encode(png).decode()
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{data}">{cap}</figure>'


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], raw_columns: Sequence[int] = ()) -> str:
    """An HTML table; cells are escaped except those in ``raw_columns`` (already HTML)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c if i in raw_columns else esc(c)}</td>" for i, c in enumerate(row))
                   + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head><body>{body}</body></html>\n")
