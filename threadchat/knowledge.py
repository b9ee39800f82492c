"""A channel's knowledge bases, as the tools file's `knowledge:` mapping sets them.

Either the list form, or a mapping with the number of results and a metadata filter:

    knowledge:
      C0123ABCD: [KB12345678]                 # results: 5, no filter
      default:
        ids: [KB12345678, KB87654321]
        results: 8                            # passages per search, across the bases (1-25)
        filter: {equals: {key: department, value: engineering}}   # Bedrock's RetrievalFilter

Pure: the tools file loader (threadchat/tools_file.py) and the `knowledge` tool both use it.
"""

import re
from dataclasses import dataclass, field

DEFAULT_RESULTS = 5
MAX_RESULTS = 25
_KB_ID = re.compile(r"^[0-9A-Za-z]{10}$")
# RetrievalFilter's operators (botocore bedrock-agent-runtime): anything else is a typo.
FILTER_OPERATORS = frozenset(
    {
        "equals",
        "notEquals",
        "greaterThan",
        "greaterThanOrEquals",
        "lessThan",
        "lessThanOrEquals",
        "in",
        "notIn",
        "startsWith",
        "listContains",
        "stringContains",
        "andAll",
        "orAll",
    }
)


class KnowledgeSettingError(ValueError):
    """What is wrong with one channel's `knowledge:` value (the loader adds file and line)."""


@dataclass(frozen=True)
class KnowledgeSetting:
    """The knowledge bases one channel searches, how many passages, and the filter."""

    ids: tuple[str, ...]
    results: int = DEFAULT_RESULTS
    filter: dict | None = field(default=None, hash=False)


def knowledge_setting(value: object) -> KnowledgeSetting:
    """A `knowledge:` value (a list of ids, a mapping, or a setting already) as a setting."""
    if isinstance(value, KnowledgeSetting):
        return value
    if isinstance(value, list | tuple):
        return KnowledgeSetting(ids=_ids(value))
    if not isinstance(value, dict):
        raise KnowledgeSettingError("must list knowledge base ids, or map ids, results, filter")
    unknown = set(value) - {"ids", "results", "filter"}
    if unknown:
        raise KnowledgeSettingError(f"unknown key {sorted(unknown)[0]!r} (ids, results, filter)")
    results = value.get("results", DEFAULT_RESULTS)
    if not isinstance(results, int) or isinstance(results, bool) or not 1 <= results <= 25:
        raise KnowledgeSettingError(f"results must be a whole number from 1 to {MAX_RESULTS}")
    filter_ = value.get("filter")
    if filter_ is not None:
        _check_filter(filter_)
    return KnowledgeSetting(ids=_ids(value.get("ids")), results=results, filter=filter_)


def _ids(value: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise KnowledgeSettingError("ids must list knowledge base ids")
    for kb in value:
        if not isinstance(kb, str) or not _KB_ID.match(kb):
            raise KnowledgeSettingError(f"{kb!r} is not a knowledge base id (10 letters or digits)")
    return tuple(value)


def _check_filter(node: object) -> None:
    if not isinstance(node, dict) or len(node) != 1:
        raise KnowledgeSettingError("filter must be one operator, e.g. {equals: {key, value}}")
    [(operator, operand)] = node.items()
    if operator not in FILTER_OPERATORS:
        raise KnowledgeSettingError(f"filter: unknown operator {operator!r}")
    if operator in ("andAll", "orAll"):
        if not isinstance(operand, list) or len(operand) < 2:
            raise KnowledgeSettingError(f"filter: {operator} takes a list of 2 or more filters")
        for each in operand:
            _check_filter(each)
    elif not (isinstance(operand, dict) and set(operand) == {"key", "value"}):
        raise KnowledgeSettingError(f"filter: {operator} takes {{key, value}}")
