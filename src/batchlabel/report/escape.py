"""Text from the data (error reasons, label names) as literal Markdown, for the report's tables and lists."""

from __future__ import annotations

#: characters that mean something to Markdown inside a line (``|`` ends a table cell, ``<`` starts raw HTML)
MARKDOWN_SPECIAL = frozenset("\\|<>&`*_[]")


def cell(value: object) -> str:
    """``value`` as literal Markdown text on one line (a table cell, a list item): newlines become spaces and
    Markdown's special characters are backslash-escaped, so a ``|`` or ``<script>`` in a model's reply is shown
    as written and cannot break the table."""
    text = " ".join(str(value).split())
    return "".join("\\" + c if c in MARKDOWN_SPECIAL else c for c in text)
