"""Fitting model Markdown into Slack messages.

Slack renders standard Markdown sent as `markdown_text`, up to 12,000 characters a message,
but not tables: `slack_markdown` turns those into aligned code blocks. Longer answers are
split at paragraph boundaries, and never inside a code fence: a fence that is itself too long
is closed at the cut and reopened in the next part.
"""

import re
import unicodedata

MARKDOWN_LIMIT = 12_000
# Room for a reopened fence header and closing fence on top of the text itself.
SAFE_LIMIT = MARKDOWN_LIMIT - 200


_FENCE_START = re.compile(r"^\s*(`{3,}|~{3,})")


def _fence_change(line: str, fence: str | None) -> str | None:
    """The fence open after `line`: its opening marker (```, ~~~~, …) or None."""
    match = _FENCE_START.match(line)
    if not match:
        return fence
    marker = match.group(1)
    if fence is None:
        return marker
    closes = marker[0] == fence[0] and len(marker) >= len(fence) and not line.strip()[len(marker) :]
    return None if closes else fence


def split_markdown(text: str, limit: int = SAFE_LIMIT) -> list[str]:
    """Split `text` into parts of at most about `limit` characters, in order.

    Cuts fall at the last paragraph end (a blank line outside code) that fits; failing that,
    at a line end, where an open code fence is closed and reopened in the next part; and only
    a single enormous line is cut mid-line.
    """
    if len(text) <= limit:
        return [text]
    parts: list[str] = []
    lines: list[str] = []  # the current part
    size = 0
    fence: str | None = None  # marker of the fence open at the end of `lines`
    opener = ""  # that fence's opening line, to reopen it after a cut
    paragraph_end = 0  # lines[:paragraph_end] end at a blank line outside any fence

    def cut(at: int, open_fence: str | None) -> None:
        nonlocal lines, size, paragraph_end
        head, lines = lines[:at], lines[at:]
        part = "".join(head)
        if open_fence:
            part = part.rstrip("\n") + "\n" + open_fence + "\n"
            lines = [opener if opener.endswith("\n") else opener + "\n", *lines]
        parts.append(part)
        size, paragraph_end = sum(map(len, lines)), 0

    for raw in text.splitlines(keepends=True):
        for line in [raw[k : k + limit // 2] for k in range(0, len(raw), limit // 2)]:
            if size + len(line) > limit and lines:
                if paragraph_end:
                    cut(paragraph_end, None)
                else:
                    cut(len(lines), fence)
            before = fence
            fence = _fence_change(line, fence)
            if before is None and fence is not None:
                opener = line
            lines.append(line)
            size += len(line)
            if fence is None and not line.strip():
                paragraph_end = len(lines)
    if lines:
        parts.append("".join(lines))
    return [p.strip("\n") for p in parts if p.strip()]


# --- Markdown for Slack ------------------------------------------------------------------------
#
# Slack renders standard Markdown sent as `markdown_text` (or in a `markdown` block): bold,
# italics, strikethrough, links, lists, headers, inline code and code fences. It documents no
# table support, and a GFM pipe table shows up as raw pipes in a proportional font. So tables
# become code blocks with aligned columns; everything else passes through unchanged.

_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})(.*)$")
_DELIMITER_CELL = re.compile(r"^:?-+:?$")
_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)")
_ESCAPED = re.compile(r"\\([!-/:-@\[-`{-~])")
_HOLE = re.compile("\ue000(\\d+)\ue001")
_TEXT, _FENCE_LINE, _CODE = 0, 1, 2


def _line_kinds(lines: list[str]) -> list[int]:
    """For each line: plain text, a code fence's opening or closing line, or code inside it.

    Fences may be indented (inside list items); a fence closes with a line of the same
    character, at least as long. A fence left open runs to the end, as in CommonMark.
    """
    kinds: list[int] = []
    fence: str | None = None
    for line in lines:
        match = _FENCE.match(line)
        if fence is None:
            opens = match is not None and not (match.group(2)[0] == "`" and "`" in match.group(3))
            kinds.append(_FENCE_LINE if opens else _TEXT)
            if opens:
                fence = match.group(2)
        elif (
            match is not None
            and match.group(2)[0] == fence[0]
            and len(match.group(2)) >= len(fence)
            and not match.group(3).strip()
        ):
            kinds.append(_FENCE_LINE)
            fence = None
        else:
            kinds.append(_CODE)
    return kinds


def _row_cells(line: str) -> list[str] | None:
    """The cells of a pipe-table row, or None when the line has no pipe outside code spans.

    Pipes inside code spans and escaped pipes (`\\|`) stay in their cell, as `|`.
    """
    text = line.strip()
    cells: list[str] = []
    current: list[str] = []
    pipes = 0
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and text[i + 1 : i + 2] == "|":
            current.append("|")
            i += 2
        elif char == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
        elif char == "`":
            span = _CODE_SPAN.match(text, i)
            end = span.end() if span else i + len(text[i:]) - len(text[i:].lstrip("`"))
            current.append(text[i:end].replace("\\|", "|"))  # GFM unescapes these too
            i = end
        elif char == "|":
            pipes += 1
            cells.append("".join(current))
            current = []
            i += 1
        else:
            current.append(char)
            i += 1
    if not pipes:
        return None
    cells.append("".join(current))
    if text.startswith("|"):
        cells = cells[1:]
    if text.endswith("|") and not text.endswith("\\|") and cells and not cells[-1]:
        cells = cells[:-1]
    return [cell.strip() for cell in cells]


def _delimiter_alignments(line: str) -> list[str] | None:
    """Column alignments ("<", ">" or "^") of a `|---|:--:|` row, or None if it is not one."""
    if "|" not in line:
        return None
    cells = _row_cells(line)
    if not cells or not all(_DELIMITER_CELL.match(cell) for cell in cells):
        return None
    return [
        "^" if c.startswith(":") and c.endswith(":") else ">" if c.endswith(":") else "<"
        for c in cells
    ]


def _stash(text: str, pattern: re.Pattern, render, holes: list[str]) -> str:
    """Replace matches of `pattern` with numbered holes holding `render(match)`."""

    def hole(match: re.Match) -> str:
        holes.append(render(match))
        return f"\ue000{len(holes) - 1}\ue001"

    return pattern.sub(hole, text)


def _fill(text: str, holes: list[str]) -> str:
    """Put the stashed texts back; they may hold holes themselves (a code span in a label)."""
    return _HOLE.sub(lambda m: _fill(holes[int(m.group(1))], holes), text)


def _unholed(text: str) -> str:
    """`text` without the private-use characters that mark holes, so none are forged."""
    return text.translate({0xE000: None, 0xE001: None, 0xE002: None})


def _code_span_text(match: re.Match) -> str:
    content = match.group(2)
    if len(content) > 1 and content.startswith(" ") and content.endswith(" ") and content.strip():
        content = content[1:-1]  # CommonMark strips one space on each side
    return content


def _links(text: str, render) -> str:
    """Replace `[label](url)` and `![alt](url)` with `render(label, url)`.

    URLs may hold balanced parentheses (`https://en.wikipedia.org/wiki/Foo_(bar)`) or be
    written in angle brackets; a link title (`"title"`) is dropped.
    """
    out: list[str] = []
    i = 0
    while i < len(text):
        start = text.find("[", i)
        if start < 0:
            break
        link = _parse_link(text, start)
        if link is None:
            out.append(text[i : start + 1])
            i = start + 1
            continue
        label, url, end = link
        image = start > i and text[start - 1] == "!"
        out.append(text[i : start - 1] if image else text[i:start])
        out.append(render(label, url))
        i = end
    out.append(text[i:])
    return "".join(out)


def _parse_link(text: str, start: int) -> tuple[str, str, int] | None:
    """(label, url, end) of an inline link whose `[` is at `start`."""
    depth, i = 0, start
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == "[":
            depth += 1
        elif text[i] == "]":
            depth -= 1
            if depth == 0:
                break
        i += 1
    if i >= len(text) or text[i + 1 : i + 2] != "(":
        return None
    label = text[start + 1 : i]
    i += 2
    while i < len(text) and text[i] == " ":
        i += 1
    if text[i : i + 1] == "<":
        close = text.find(">", i)
        if close < 0:
            return None
        url, i = text[i + 1 : close], close + 1
    else:
        depth, begin = 0, i
        while i < len(text) and not text[i].isspace():
            if text[i] == "(":
                depth += 1
            elif text[i] == ")":
                if depth == 0:
                    break
                depth -= 1
            i += 1
        url = text[begin:i]
    title = re.compile(r'\s*(?:"[^"]*"|\'[^\']*\'|\([^)]*\))?\s*\)').match(text, i)
    if not url or title is None:
        return None
    return label, url, title.end()


def _strip_inline(text: str) -> str:
    """A table cell's text without Markdown markup: it is shown inside a code block."""
    holes: list[str] = []
    text = _stash(_unholed(text), _CODE_SPAN, _code_span_text, holes)
    text = _links(text, lambda label, url: url if _plain(label) == url else f"{label} ({url})")
    return _fill(_plain(text), holes)


def _plain(text: str) -> str:
    text = re.sub(r"\*\*(?=\S)(.+?)(?<=\S)\*\*", r"\1", text)
    text = re.sub(r"(?<!\w)__(?=\S)(.+?)(?<=\S)__(?!\w)", r"\1", text)
    text = re.sub(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])", r"\1", text)
    text = re.sub(r"(?<!\w)_(?=[^\s_])(.+?)(?<=[^\s_])_(?!\w)", r"\1", text)
    text = re.sub(r"~~(?=\S)(.+?)(?<=\S)~~", r"\1", text)
    return _ESCAPED.sub(r"\1", text)


def _width(text: str) -> int:
    """Columns `text` takes in a monospace font: wide East Asian characters take two."""
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
        for c in text
    )


def _pad(text: str, width: int, align: str) -> str:
    room = width - _width(text)
    if align == ">":
        return " " * room + text
    if align == "^":
        return " " * (room // 2) + text + " " * (room - room // 2)
    return text + " " * room


def _table_block(indent: str, rows: list[list[str]], alignments: list[str]) -> list[str]:
    """A table as the lines of a fenced code block, columns padded to the same width."""
    columns = max(len(row) for row in rows)
    cells = [[_strip_inline(c) for c in row] + [""] * (columns - len(row)) for row in rows]
    alignments = alignments + ["<"] * (columns - len(alignments))
    widths = [max(1, *(_width(row[i]) for row in cells)) for i in range(columns)]

    def line(row: list[str]) -> str:
        padded = (_pad(c, w, a) for c, w, a in zip(row, widths, alignments, strict=True))
        return (indent + " | ".join(padded)).rstrip()

    runs = [len(run) for row in cells for cell in row for run in re.findall("`+", cell)]
    fence = "`" * max(3, *(n + 1 for n in runs)) if runs else "```"
    separator = indent + "-+-".join("-" * w for w in widths)
    return [indent + fence, line(cells[0]), separator, *map(line, cells[1:]), indent + fence]


def slack_markdown(text: str) -> str:
    """Model Markdown made safe for Slack's `markdown_text`.

    GFM pipe tables (a header row, a `|---|` delimiter row with as many cells, then rows with
    pipes) become fenced code blocks with aligned columns and the cells' inline markup
    removed, set off by blank lines. Everything else, code fences and inline code included,
    is returned unchanged.
    """
    lines = text.split("\n")
    kinds = _line_kinds(lines)
    out: list[str] = []
    i = 0
    while i < len(lines):
        header = _row_cells(lines[i]) if kinds[i] == _TEXT else None
        alignments = (
            _delimiter_alignments(lines[i + 1])
            if header and i + 1 < len(lines) and kinds[i + 1] == _TEXT
            else None
        )
        if not header or alignments is None or len(alignments) != len(header):
            out.append(lines[i])
            i += 1
            continue
        rows = [header]
        end = i + 2
        while end < len(lines) and kinds[end] == _TEXT and lines[end].strip():
            row = _row_cells(lines[end])
            if row is None:
                break
            rows.append(row)
            end += 1
        if out and out[-1].strip():
            out.append("")
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        out += _table_block(indent, rows, alignments)
        if end < len(lines) and lines[end].strip():
            out.append("")
        i = end
    return "\n".join(out)


# --- mrkdwn --------------------------------------------------------------------------------------
#
# Surfaces that take `text` (notification fallbacks, ephemeral messages, section blocks) speak
# Slack's own mrkdwn: *bold*, _italic_, ~strike~, <url|label>, and &, <, > escaped as entities.
