"""Splitting long Markdown answers into Slack-sized messages."""

from threadchat.formatting import MARKDOWN_LIMIT, split_markdown


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
