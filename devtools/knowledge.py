"""Knowledge bases for the local Bedrock server: `Retrieve` (POST
/knowledgebases/{knowledgeBaseId}/retrieve, bedrock-agent-runtime's wire shape) over the
sample company's documents shipped in devtools/knowledge/, so the `knowledge` tool works
offline, in tests and in the playground.

Each `##` section of a document is one passage. Scoring is plain and deterministic: the share
of the query's words (3+ letters, a trailing "s" dropped, common words left out) found in the
passage; ties keep the documents' order. Locations are S3 URIs, as a knowledge base on S3
gives them. An unknown knowledge base id answers ResourceNotFoundException; `denied` ids
AccessDeniedException; `throttle(n)` makes the next n searches ThrottlingException.
"""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

DOCUMENTS = Path(__file__).parent / "knowledge"
SAMPLE_KB = "KBSAMPLE01"
BUCKET = "acme-knowledge"
DEFAULT_RESULTS = 5
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    re.findall(
        r"[a-z]+",
        "the and for with what how are was when who why can does our you your from that this "
        "have has about into any all per get there their they them its which much many",
    )
)


@dataclass(frozen=True)
class Passage:
    document: str  # the file's name
    heading: str
    text: str
    metadata: dict[str, Any]

    @property
    def uri(self) -> str:
        return f"s3://{BUCKET}/handbook/{self.document}"


def words(text: str) -> set[str]:
    """The words a query or passage is matched on."""
    return {w.removesuffix("s") for w in _WORD.findall(text.lower()) if len(w) > 2} - _STOP


def load_passages(folder: Path = DOCUMENTS) -> list[Passage]:
    """Every `##` section of every document, in file-name order; a `---` header's `key:
    value` lines are the document's metadata (what filters match)."""
    passages = []
    for path in sorted(folder.glob("*.md")):
        text = path.read_text()
        metadata: dict[str, Any] = {}
        if text.startswith("---\n"):
            header, text = text[4:].split("\n---\n", 1)
            for line in header.splitlines():
                key, _, value = line.partition(":")
                metadata[key.strip()] = value.strip()
        title = text.split("\n", 1)[0].lstrip("# ").strip()
        for section in text.split("\n## ")[1:]:
            heading, _, body = section.partition("\n")
            passages.append(
                Passage(
                    path.name,
                    heading.strip(),
                    f"{title}: {heading.strip()}. {body.strip()}",
                    metadata,
                )
            )
    return passages


class RetrieveError(Exception):
    STATUS = {
        "ResourceNotFoundException": 404,
        "AccessDeniedException": 403,
        "ThrottlingException": 429,
        "ValidationException": 400,
    }

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class LocalKnowledgeBases:
    """The knowledge bases the local Bedrock serves, and what was asked of them."""

    bases: dict[str, list[Passage]] = field(default_factory=lambda: {SAMPLE_KB: load_passages()})
    denied: set[str] = field(default_factory=set)
    requests: list[tuple[str, dict]] = field(default_factory=list)
    _throttled: int = 0

    def throttle(self, times: int = 1) -> None:
        self._throttled += times

    def retrieve(self, kb: str, body: dict) -> dict:
        """Retrieve's answer for `body` (the request's JSON), or raise RetrieveError."""
        self.requests.append((kb, body))
        if self._throttled:
            self._throttled -= 1
            raise RetrieveError("ThrottlingException", "Rate exceeded")
        if kb in self.denied:
            raise RetrieveError(
                "AccessDeniedException",
                f"User is not authorized to perform: bedrock:Retrieve on knowledge base {kb}",
            )
        if kb not in self.bases:
            raise RetrieveError("ResourceNotFoundException", f"Knowledge base {kb} not found")
        query = ((body.get("retrievalQuery") or {}).get("text") or "").strip()
        if not query:
            raise RetrieveError("ValidationException", "retrievalQuery.text must not be empty")
        search = (body.get("retrievalConfiguration") or {}).get("vectorSearchConfiguration") or {}
        count = int(search.get("numberOfResults") or DEFAULT_RESULTS)
        if not 1 <= count <= 100:
            raise RetrieveError("ValidationException", "numberOfResults must be 1 to 100")
        wanted = words(query)
        scored = []
        for index, passage in enumerate(self.bases[kb]):
            if search.get("filter") and not matches(search["filter"], passage.metadata):
                continue
            hits = len(wanted & words(passage.text))
            if hits:
                scored.append((-hits / len(wanted), index, passage))
        scored.sort(key=lambda item: item[:2])
        return {"retrievalResults": [_result(p, -score) for score, _, p in scored[:count]]}

    async def handle(self, request: web.Request) -> web.Response:
        kb = request.match_info["knowledgeBaseId"]
        try:
            body = json.loads(await request.read() or b"{}")
            if not isinstance(body, dict):
                raise RetrieveError("ValidationException", "Malformed input request.")
            answer = self.retrieve(kb, body)
        except json.JSONDecodeError:
            return _error(RetrieveError("ValidationException", "Malformed input request."))
        except RetrieveError as err:
            return _error(err)
        return web.json_response(answer)


def matches(node: dict, metadata: dict[str, Any]) -> bool:
    """Whether a document's metadata passes a RetrievalFilter."""
    if not isinstance(node, dict) or len(node) != 1:
        raise RetrieveError("ValidationException", "a filter takes exactly one operator")
    [(operator, operand)] = node.items()
    if operator == "andAll":
        return all(matches(each, metadata) for each in operand)
    if operator == "orAll":
        return any(matches(each, metadata) for each in operand)
    key, value = operand.get("key"), operand.get("value")
    have = metadata.get(key)
    tests = {
        "equals": lambda: have == value,
        "notEquals": lambda: have != value,
        "in": lambda: have in value,
        "notIn": lambda: have not in value,
        "startsWith": lambda: isinstance(have, str) and have.startswith(value),
        "stringContains": lambda: isinstance(have, str) and value in have,
        "listContains": lambda: isinstance(have, list) and value in have,
    }
    if operator not in tests:
        raise RetrieveError("ValidationException", f"unsupported filter operator {operator}")
    return bool(tests[operator]())


def _result(passage: Passage, score: float) -> dict:
    return {
        "content": {"type": "TEXT", "text": passage.text},
        "location": {"type": "S3", "s3Location": {"uri": passage.uri}},
        "metadata": {
            "x-amz-bedrock-kb-source-uri": passage.uri,
            "x-amz-bedrock-kb-chunk-id": f"{passage.document}#{passage.heading}",
            **passage.metadata,
        },
        "score": round(score, 4),
    }


def _error(err: RetrieveError) -> web.Response:
    return web.json_response(
        {"message": err.message},
        status=RetrieveError.STATUS.get(err.code, 500),
        headers={"x-amzn-ErrorType": err.code},
    )
