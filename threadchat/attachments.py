"""Files people share: which ones the model can read, within Bedrock's limits, and how they
count in the context window. Pure: the reply activity fetches the bytes."""

import math
import re
from urllib.parse import urlsplit

from threadchat.model import FileRef

IMAGES = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif", "image/webp": "webp"}
DOCUMENTS = {
    "application/pdf": "pdf",
    "text/csv": "csv",
    "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.ms-excel": "xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "text/html": "html",
    "text/plain": "txt",
    "text/markdown": "md",
}
# Slack labels some text files only by their name: logs, Markdown, CSV exported oddly.
_BY_EXTENSION = {"md": "md", "markdown": "md", "log": "txt", "txt": "txt", "csv": "csv"}

# Converse limits per request (Bedrock's documentation): images up to 3.75 MB, at most 20;
# documents up to 4.5 MB, at most 5.
MAX_IMAGE_BYTES = 3_750_000
MAX_DOCUMENT_BYTES = 4_500_000
MAX_IMAGES = 20
MAX_DOCUMENTS = 5

# Token estimates for the context budget; Bedrock's usage has the exact figures afterwards.
# An image costs about width x height / 750 tokens, which is about 1,600 at the size Claude
# scales images down to; a PDF page of some 100 KB comes to about 2,000 tokens, so a token a
# 50 bytes.
IMAGE_TOKENS = 1_600
DOCUMENT_BYTES_PER_TOKEN = 50

# Models that read images and documents in Converse.
_READS_FILES = re.compile(
    r"anthropic\.claude-(3|sonnet-4|opus-4|haiku-4)|amazon\.nova-(lite|pro|premier)"
)


def kind(file: FileRef) -> tuple[str, str] | None:
    """("image" | "document", Converse format), or None when the model cannot read it."""
    mimetype = file.mimetype.split(";")[0].strip().lower()
    if mimetype in IMAGES:
        return "image", IMAGES[mimetype]
    if mimetype in DOCUMENTS:
        return "document", DOCUMENTS[mimetype]
    extension = file.name.rsplit(".", 1)[-1].lower() if "." in file.name else ""
    if mimetype.startswith("text/") and extension in _BY_EXTENSION:
        return "document", _BY_EXTENSION[extension]
    return None


def problem(file: FileRef, model_id: str) -> str:
    """Why `file` cannot go to the model (a texts.FILE_PROBLEMS key); "" when it can."""
    found = kind(file)
    if not _READS_FILES.search(model_id):
        return "no_vision"
    if found is None:
        return "unsupported"
    limit = MAX_IMAGE_BYTES if found[0] == "image" else MAX_DOCUMENT_BYTES
    return "too_large" if file.size > limit else ""


def limit(file: FileRef) -> int:
    found = kind(file)
    return MAX_IMAGE_BYTES if found and found[0] == "image" else MAX_DOCUMENT_BYTES


def estimate_tokens(file: FileRef) -> int:
    found = kind(file)
    if found is None:
        return 0
    if found[0] == "image":
        return IMAGE_TOKENS
    return math.ceil(file.size / DOCUMENT_BYTES_PER_TOKEN)


def document_name(name: str, taken: set[str]) -> str:
    """A name Converse accepts for a document (letters, digits, spaces, hyphens, brackets;
    no runs of spaces), unique within the request."""
    stem = name.rsplit(".", 1)[0] if "." in name else name
    clean = re.sub(r"[^A-Za-z0-9\-()\[\] ]+", " ", stem)
    clean = re.sub(r"\s+", " ", clean).strip()[:100] or "document"
    unique, n = clean, 2
    while unique in taken:
        unique, n = f"{clean} ({n})", n + 1
    taken.add(unique)
    return unique


def megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB" if size >= 100_000 else f"{math.ceil(size / 1000)} KB"


# Where Slack serves the files it hosts. The bot token goes only there, over https: a file's
# URL comes from files.info, and a file shared from external storage (or a forged or
# future Slack answer) may point anywhere.
SLACK_FILE_HOSTS = frozenset({"files.slack.com", "files.slack-gov.com"})


def _origin(url: str) -> tuple[str, str, int | None] | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
        return None
    default = {"http": 80, "https": 443}[parts.scheme]
    return parts.scheme, parts.hostname.lower(), port or default


def token_url(info: dict, api_url: str) -> str | None:
    """The URL to download a file from with the bot token, or None when it must not be
    fetched: stored outside Slack (`mode` external), or served from anywhere but Slack's
    own file hosts over https, or the origin of `api_url` (the local servers, or a proxy
    already trusted with the token)."""
    if info.get("mode") in ("external", "tombstone") or info.get("is_external"):
        return None
    url = info.get("url_private_download") or info.get("url_private")
    origin = _origin(url) if isinstance(url, str) else None
    if origin is None:
        return None
    scheme, host, port = origin
    if scheme == "https" and host in SLACK_FILE_HOSTS and port == 443:
        return url
    return url if origin == _origin(api_url) else None
