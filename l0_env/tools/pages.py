"""Render a passage for the agent, one page at a time (pure).

Output is bounded whatever the passage: at most ``page_chars`` characters of text per call, a
title cut to `MAX_TITLE_CHARS`, and a footer naming the next page.
"""

from __future__ import annotations

from l0_env.tools.search import Page

MAX_TITLE_CHARS = 200


def split_pages(text: str, page_chars: int) -> list[str]:
    """Cut ``text`` into chunks of at most ``page_chars`` characters, at whitespace where possible."""
    if page_chars < 1:
        raise ValueError(f"page_chars must be >= 1, got {page_chars}")
    pages: list[str] = []
    rest = text
    while len(rest) > page_chars:
        cut = rest.rfind(" ", page_chars // 2, page_chars + 1)
        if cut <= 0:
            cut = page_chars
        pages.append(rest[:cut])
        rest = rest[cut:].lstrip(" ")
    pages.append(rest)
    return pages


def format_page(page: Page, *, page_no: int = 1, page_chars: int = 2000) -> str:
    """Format one page of a passage: a title line, the text chunk, and a footer if there is more.

    Args:
        page: The passage.
        page_no: 1-based page number.
        page_chars: Most characters of text per page.

    Raises:
        ValueError: ``page_no`` is not an int in [1, number of pages].
    """
    chunks = split_pages(page.text, page_chars)
    n = len(chunks)
    if isinstance(page_no, bool) or not isinstance(page_no, int) or not 1 <= page_no <= n:
        raise ValueError(f"page {page_no!r} is out of range: {page.doc_id!r} has {n} page(s) (1..{n})")
    title = page.title if len(page.title) <= MAX_TITLE_CHARS else page.title[: MAX_TITLE_CHARS - 1] + "…"
    out = f"# {title} (id: {page.doc_id})\n{chunks[page_no - 1]}"
    if n > 1:
        if page_no < n:
            out += f"\n[page {page_no} of {n} — call open_page({page.doc_id!r}, page={page_no + 1}) for more]"
        else:
            out += f"\n[page {page_no} of {n}]"
    return out
