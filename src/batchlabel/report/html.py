"""report.html: the report's Markdown rendered as one self-contained HTML page, by markdown-it-py.

CommonMark plus pipe tables, with raw HTML off: every text (an error reason, a label, the title) is escaped,
never interpreted. Three render rules keep the page the report needs: right-aligned columns (``|---:|``) get
``class="num"`` (the page's CSS, no inline styles); a picture alone in its paragraph (``![alt](file.png)``)
becomes a ``<figure>`` with the PNG inlined as a ``data:image/png;base64`` URI, so the one file works when
downloaded on its own (e.g. from S3); a picture that is not at hand is named in a ``missing`` note.
No JavaScript, no external CSS or fonts.
"""

from __future__ import annotations

import base64
import html
from typing import Mapping

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 60rem; margin: 2rem auto;
       padding: 0 1rem; color: #1a1a1a; line-height: 1.45; }
h1 { font-size: 1.6rem; border-bottom: 2px solid #ddd; padding-bottom: .3rem; }
h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #eee; }
h3 { font-size: 1.05rem; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .9rem; }
th, td { border: 1px solid #ccc; padding: .25rem .6rem; }
th { background: #f3f3f3; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fafafa; }
code { background: #f3f3f3; padding: 0 .2rem; border-radius: 3px; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85rem; color: #555; }
.missing { color: #a00; }
""".strip()


def _cell_open(renderer, tokens, index, options, env) -> str:
    """<th>/<td>, right-aligned ones with class="num" instead of markdown-it's inline style."""
    token = tokens[index]
    right = (token.attrGet("style") or "").replace(" ", "") == "text-align:right"
    return f'<{token.tag} class="num">' if right else f"<{token.tag}>"


def _figure(alt: str, src: str, images: Mapping[str, bytes]) -> str:
    data = images.get(src)
    if data is None:
        return f'<p class="missing">[picture {html.escape(src)} not available]</p>\n'
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return f'<figure><img src="{uri}" alt="{html.escape(alt)}"><figcaption>{html.escape(alt)}</figcaption></figure>\n'


def _renderer(images: Mapping[str, bytes]):
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    md.add_render_rule("th_open", _cell_open)
    md.add_render_rule("td_open", _cell_open)

    def figures(state) -> None:
        """A paragraph holding nothing but one picture becomes a figure (a block, not an <img> in a <p>)."""
        tokens = state.tokens
        for i in range(1, len(tokens) - 1):
            children = tokens[i].children or []
            if tokens[i].type == "inline" and len(children) == 1 and children[0].type == "image":
                if tokens[i - 1].type == "paragraph_open" and tokens[i + 1].type == "paragraph_close":
                    picture = children[0]
                    tokens[i - 1].hidden = tokens[i + 1].hidden = True
                    tokens[i].type, tokens[i].children = "html_block", None
                    tokens[i].content = _figure(picture.content, picture.attrGet("src") or "", images)

    md.core.ruler.push("batchlabel_figures", figures)
    return md


def markdown_to_html(markdown: str, title: str, images: Mapping[str, bytes] | None = None) -> str:
    """The Markdown report as a self-contained HTML page; ``images``: picture file name -> PNG bytes."""
    body = _renderer(images or {}).render(markdown)
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head>\n<body>\n" + body + "</body></html>\n"
    )
