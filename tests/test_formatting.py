"""Model Markdown for Slack: splitting long answers into Slack-sized messages, degrading
tables for `markdown_text`."""

import pytest

from threadchat.formatting import MARKDOWN_LIMIT, slack_markdown, split_markdown


def test_short_text_is_one_part():
    assert split_markdown("hello\n\nworld") == ["hello\n\nworld"]


def test_long_text_splits_at_paragraphs_in_order():
    paragraphs = [f"paragraph {i} " + "x" * 500 for i in range(60)]
    parts = split_markdown("\n\n".join(paragraphs))
    assert len(parts) > 2
    assert all(len(p) <= MARKDOWN_LIMIT for p in parts)
    rejoined = "\n\n".join(parts)
    assert rejoined == "\n\n".join(paragraphs)  # nothing lost, nothing reordered
    assert all(p.startswith("paragraph") for p in parts)  # cuts fall between paragraphs


def test_a_long_code_fence_is_closed_and_reopened():
    code = "intro\n\n```python\n" + "print(1)\n" * 3000 + "```\n\nafter"
    parts = split_markdown(code)
    assert all(len(p) <= MARKDOWN_LIMIT for p in parts)
    fenced = [p for p in parts if "print(1)" in p]
    assert len(fenced) > 1
    for part in fenced:
        assert part.count("```") % 2 == 0, part[:40]  # every part's fences are balanced
        assert part.lstrip().startswith("```python")
    assert sum(p.count("print(1)") for p in parts) == 3000
    assert parts[-1].endswith("after")


def test_a_single_enormous_line_is_still_cut():
    parts = split_markdown("y" * 30_000)
    assert all(len(p) <= MARKDOWN_LIMIT for p in parts)
    assert "".join(parts) == "y" * 30_000


# --- slack_markdown: what Slack's markdown_text renders passes through; tables degrade ---------

TABLE = "| Name | Size |\n|------|------|\n| alpha | 1 |\n| beta | 22 |"
TABLE_BLOCK = "```\nName  | Size\n------+-----\nalpha | 1\nbeta  | 22\n```"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plain words",
        "```python\nx = 1 | 2\n```",
        "- one\n- two\n  - nested **bold**",
        "1. first\n2. second",
        "[a link](https://example.com/a_(b)) and <https://example.com>",
        "**bold**, *italic*, _italic_, ***both***, ~~strike~~",
        "# Heading\n\n> quote\n\n---",
        "a | b in prose, with no delimiter row after it",
        "a | b\n---",  # a setext heading, not a one-column table
        "use `a | b` inline",
        "| one line with pipes |",
        "trailing newline\n\n",
    ],
)
def test_slack_markdown_leaves_what_slack_renders_unchanged(text):
    assert slack_markdown(text) == text


def test_a_table_becomes_an_aligned_code_block():
    assert slack_markdown(TABLE) == TABLE_BLOCK


def test_a_table_is_set_off_from_the_text_around_it():
    text = f"Sizes:\n{TABLE}\nThat is all."
    assert slack_markdown(text) == f"Sizes:\n\n{TABLE_BLOCK}\n\nThat is all."


def test_existing_blank_lines_around_a_table_are_not_doubled():
    text = f"Sizes:\n\n{TABLE}\n\nThat is all."
    assert slack_markdown(text) == f"Sizes:\n\n{TABLE_BLOCK}\n\nThat is all."


def test_a_table_ends_at_the_first_line_without_a_pipe():
    converted = slack_markdown(f"{TABLE}\nnot a row")
    assert converted.endswith("```\n\nnot a row")


def test_a_table_without_outer_pipes():
    text = "Name | Size\n--- | ---\nalpha | 1"
    assert slack_markdown(text) == "```\nName  | Size\n------+-----\nalpha | 1\n```"


def test_a_table_inside_a_code_fence_is_left_alone():
    text = f"before\n\n```markdown\n{TABLE}\n```\n\nafter"
    assert slack_markdown(text) == text


def test_a_table_inside_a_tilde_fence_and_after_a_longer_fence_is_left_alone():
    tilde = f"~~~\n{TABLE}\n~~~"
    longer = f"````\n```\n{TABLE}\n````"  # ``` does not close a ```` fence
    assert slack_markdown(tilde) == tilde
    assert slack_markdown(longer) == longer


def test_a_table_in_an_unclosed_fence_is_left_alone():
    text = f"```\n{TABLE}"
    assert slack_markdown(text) == text


def test_a_table_after_a_closed_fence_is_converted():
    text = f"```\ncode | here\n```\n{TABLE}"
    assert slack_markdown(text) == f"```\ncode | here\n```\n\n{TABLE_BLOCK}"


def test_uneven_columns_and_inline_code():
    text = (
        "| Command | What |\n"
        "|---|---|\n"
        "| `ls -l | wc` | counts | extra |\n"
        "| `x` |\n"
        "| a \\| b | escaped |"
    )
    assert slack_markdown(text) == (
        "```\n"
        "Command    | What    |\n"  # a missing cell pads with spaces; an extra one gets a column
        "-----------+---------+------\n"
        "ls -l | wc | counts  | extra\n"
        "x          |         |\n"
        "a | b      | escaped |\n"
        "```"
    )


def test_cells_lose_their_markup_but_keep_link_targets():
    text = "| A | B |\n|---|---|\n| **bold** and *it* | [docs](https://x.io/a_(b)) |"
    assert slack_markdown(text) == (
        "```\nA           | B\n------------+--------------------------\n"
        "bold and it | docs (https://x.io/a_(b))\n```"
    )


def test_column_alignment_follows_the_delimiter_row():
    text = "| L | R | C |\n|:--|--:|:-:|\n| a | b | c |\n| long | long | long |"
    assert slack_markdown(text) == (
        "```\nL    |    R |  C\n-----+------+-----\na    |    b |  c\nlong | long | long\n```"
    )


def test_wide_characters_count_as_two_columns():
    text = "| 名前 | n |\n|---|---|\n| ab | 1 |"
    assert slack_markdown(text) == "```\n名前 | n\n-----+--\nab   | 1\n```"


def test_a_header_and_delimiter_with_different_cell_counts_is_not_a_table():
    text = "| a | b |\n|---|\n| c | d |"
    assert slack_markdown(text) == text


def test_a_table_inside_a_list_item_keeps_its_indentation():
    text = "1. Sizes:\n\n   | a | b |\n   |---|---|\n   | 1 | 2 |"
    assert slack_markdown(text) == "1. Sizes:\n\n   ```\n   a | b\n   --+--\n   1 | 2\n   ```"


def test_a_cell_with_backticks_gets_a_longer_fence():
    text = "| code |\n|---|\n| ``a ``` b`` |"
    assert slack_markdown(text) == "````\ncode\n-------\na ``` b\n````"


def test_two_tables_and_pipes_in_other_code_stay_apart():
    text = f"{TABLE}\n\ntext with `a|b`\n\n{TABLE}"
    assert slack_markdown(text) == f"{TABLE_BLOCK}\n\ntext with `a|b`\n\n{TABLE_BLOCK}"


def test_a_big_table_in_a_long_text_still_splits_into_balanced_parts():
    rows = "\n".join(f"| row {i} | {'x' * 40} | `code|{i}` |" for i in range(600))
    text = (
        "intro "
        + "words " * 300
        + "\n\n| Row | Data | Code |\n|---|---|---|\n"
        + rows
        + "\n\n```python\nprint('after')\n```\n\noutro"
    )
    parts = split_markdown(slack_markdown(text))
    assert len(parts) > 2
    assert all(len(p) <= MARKDOWN_LIMIT for p in parts)
    for part in parts:
        assert part.count("```") % 2 == 0, part[:60]
    joined = "\n".join(parts)
    assert all(f"row {i} " in joined for i in range(600))
    assert "| row 0 |" not in joined  # no raw table rows left
    assert parts[-1].endswith("outro")


def _fences_balanced(part: str) -> bool:
    from threadchat.formatting import _fence_change

    fence = None
    for line in part.splitlines():
        fence = _fence_change(line, fence)
    return fence is None


@pytest.mark.parametrize(
    "text",
    [
        # A fence right after a line of prose, as models often write it.
        "Here is the code:\n```python\n" + "x = 1\n" * 4000 + "```\nDone.",
        # A tilde fence.
        "Intro\n\n~~~\n" + "y = 2\n" * 4000 + "~~~\n\nAfter.",
        # A four-backtick fence containing three-backtick lines.
        "````markdown\n" + "```\ninner\n```\n" * 1500 + "````\n\nEnd.",
    ],
)
def test_every_part_has_balanced_fences_and_nothing_is_lost(text):
    parts = split_markdown(text)
    assert len(parts) > 1
    assert all(len(p) <= MARKDOWN_LIMIT for p in parts)
    assert all(_fences_balanced(p) for p in parts), [p[-40:] for p in parts]
    body = [line for line in text.splitlines() if line.strip()]
    kept = [line for p in parts for line in p.splitlines() if line.strip()]
    assert [line for line in kept if line in body] == body or set(body) <= set(kept)
    assert parts[-1].rstrip().endswith(text.rstrip().splitlines()[-1])


def test_prose_is_cut_at_paragraph_ends_not_mid_word():
    text = "\n\n".join(f"Sentence {i} " + "lorem ipsum " * 30 for i in range(100))
    parts = split_markdown(text)
    assert all(p.startswith("Sentence") for p in parts)
    assert all(p.rstrip().endswith("ipsum") for p in parts)
