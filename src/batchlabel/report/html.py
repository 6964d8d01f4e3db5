"""report.html: the report's Markdown rendered as one self-contained HTML page.

Handles the Markdown the report writers emit (report/markdown.py, the nightly drift section, the usage
section): ``#``/``##``/``###`` headings, ``- `` bullet lists, pipe tables (``|---:|`` = right-aligned),
``![alt](file.png)`` pictures, paragraphs, and inline ``**bold**`` and `` `code` ``. Every text is
HTML-escaped; pictures are inlined as ``data:image/png;base64`` URIs, so the one file works when
downloaded on its own (e.g. from S3). No JavaScript, no external CSS or fonts.
"""

from __future__ import annotations

import base64
import html
import re
from typing import Mapping

_IMAGE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<src>[^)\s]+)\)\s*$")
_INLINE = re.compile(r"\*\*(?P<bold>.+?)\*\*|`(?P<code>[^`]+)`")
_HEADING = re.compile(r"^(?P<level>#{1,3}) (?P<text>.*)$")

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


def inline(text: str) -> str:
    """Escape ``text`` and render **bold** and `code` spans."""
    out, last = [], 0
    for match in _INLINE.finditer(text):
        out.append(html.escape(text[last:match.start()]))
        if match.group("bold") is not None:
            out.append(f"<strong>{inline(match.group('bold'))}</strong>")
        else:
            out.append(f"<code>{html.escape(match.group('code'))}</code>")
        last = match.end()
    out.append(html.escape(text[last:]))
    return "".join(out)


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _is_separator(line: str) -> bool:
    return bool(line.strip().startswith("|")) and all(re.fullmatch(r":?-{3,}:?", c) for c in _cells(line))


def _table(lines: list[str]) -> str:
    header, aligns = _cells(lines[0]), _cells(lines[1])
    right = [a.endswith(":") for a in aligns]

    def row(cells: list[str], tag: str) -> str:
        parts = []
        for i, cell in enumerate(cells):
            attr = ' class="num"' if i < len(right) and right[i] else ""
            parts.append(f"<{tag}{attr}>{inline(cell)}</{tag}>")
        return "<tr>" + "".join(parts) + "</tr>"

    body = "".join(row(_cells(line), "td") for line in lines[2:])
    return f"<table><thead>{row(header, 'th')}</thead><tbody>{body}</tbody></table>"


def _image(alt: str, src: str, images: Mapping[str, bytes]) -> str:
    data = images.get(src)
    if data is None:
        return f'<p class="missing">[picture {html.escape(src)} not available]</p>'
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return f'<figure><img src="{uri}" alt="{html.escape(alt)}"><figcaption>{html.escape(alt)}</figcaption></figure>'


def markdown_to_html(markdown: str, title: str, images: Mapping[str, bytes] | None = None) -> str:
    """The Markdown report as a self-contained HTML page; ``images``: picture file name -> PNG bytes."""
    images = images or {}
    lines = markdown.splitlines()
    body: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        heading, image = _HEADING.match(line), _IMAGE.match(line.strip())
        if heading:
            level = len(heading.group("level"))
            body.append(f"<h{level}>{inline(heading.group('text'))}</h{level}>")
            i += 1
        elif image:
            body.append(_image(image.group("alt"), image.group("src"), images))
            i += 1
        elif line.lstrip().startswith("|") and i + 1 < len(lines) and _is_separator(lines[i + 1]):
            end = i + 2
            while end < len(lines) and lines[end].lstrip().startswith("|"):
                end += 1
            body.append(_table(lines[i:end]))
            i = end
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{inline(lines[i][2:])}</li>")
                i += 1
            body.append("<ul>" + "".join(items) + "</ul>")
        else:
            paragraph = []
            while i < len(lines) and lines[i].strip() and not _starts_block(lines, i):
                paragraph.append(lines[i].strip())
                i += 1
            body.append(f"<p>{inline(' '.join(paragraph))}</p>")
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _starts_block(lines: list[str], i: int) -> bool:
    line = lines[i]
    return bool(
        _HEADING.match(line) or _IMAGE.match(line.strip()) or line.startswith("- ")
        or (line.lstrip().startswith("|") and i + 1 < len(lines) and _is_separator(lines[i + 1]))
    )
