"""Where a knowledge base passage came from, as a person reads it: a name and a link.

Bedrock's Retrieve gives each passage a `location` (S3, web, Confluence, SharePoint,
Salesforce, OneDrive, Google Drive, Kendra, custom, SQL) and optional `metadata`. An S3 URI
`s3://bucket/policies/Vacation_policy.pdf` becomes "Vacation policy" with the object's https
URL; a page's URL is kept and its last path segment named. A `title` (or `source_url`) in the
document's metadata wins over what the location suggests. Pure: tested on its own.
"""

import re
from urllib.parse import quote, unquote, urlparse

from threadchat.model import ToolSource

_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,5}$")
_MAX_TITLE = 120

# Where each location type keeps its address.
_ADDRESS = {
    "S3": ("s3Location", "uri"),
    "WEB": ("webLocation", "url"),
    "CONFLUENCE": ("confluenceLocation", "url"),
    "SHAREPOINT": ("sharePointLocation", "url"),
    "SALESFORCE": ("salesforceLocation", "url"),
    "ONEDRIVE": ("oneDriveLocation", "url"),
    "GOOGLEDRIVE": ("googleDriveLocation", "url"),
    "KENDRA": ("kendraDocumentLocation", "uri"),
    "CUSTOM": ("customDocumentLocation", "id"),
    "SQL": ("sqlLocation", "query"),
}
_KIND = {
    "CONFLUENCE": "Confluence page",
    "SHAREPOINT": "SharePoint document",
    "SALESFORCE": "Salesforce record",
    "ONEDRIVE": "OneDrive document",
    "GOOGLEDRIVE": "Google Drive document",
    "SQL": "Database query",
}


def address(location: dict) -> str:
    """The raw address Bedrock gave (S3 URI, URL, custom id, SQL query); "" if none."""
    kind = str(location.get("type") or "").upper()
    field, key = _ADDRESS.get(kind, ("", ""))
    found = (location.get(field) or {}).get(key) if field else None
    if not found:  # a type we do not know: the first address-like value it carries
        for value in location.values():
            if isinstance(value, dict):
                found = value.get("url") or value.get("uri")
                if found:
                    break
    return str(found or "")


def source_of(location: dict, metadata: dict | None = None) -> ToolSource:
    """A passage's source: a readable name and a link ("" when there is none to give)."""
    metadata = metadata or {}
    kind = str(location.get("type") or "").upper()
    raw = address(location)
    url = _link(kind, raw)
    custom_url = _text(metadata.get("source_url")) or _text(metadata.get("url"))
    if custom_url.startswith(("https://", "http://")):
        url = custom_url
    title = _text(metadata.get("title")) or _title(kind, raw)
    return ToolSource(title=title[:_MAX_TITLE], url=url)


def s3_https_url(uri: str) -> str:
    """`s3://bucket/key` as the object's virtual-hosted https URL."""
    parsed = urlparse(uri)
    return f"https://{parsed.netloc}.s3.amazonaws.com/{quote(parsed.path.lstrip('/'))}"


def name_from_path(path: str) -> str:
    """A document's name from the last segment of its path: `Doc_name.pdf` -> "Doc name",
    `On-call+handbook` -> "On-call handbook"."""
    segment = unquote(path.rstrip("/").rsplit("/", 1)[-1])
    segment = _EXTENSION.sub("", segment)
    return " ".join(re.sub(r"[_+]+", " ", segment).split())


def _link(kind: str, raw: str) -> str:
    if kind == "S3" and raw.startswith("s3://"):
        return s3_https_url(raw)
    return raw if raw.startswith(("https://", "http://")) else ""


def _title(kind: str, raw: str) -> str:
    if kind == "SQL":
        return _KIND["SQL"]
    if kind == "CUSTOM":
        return raw or "Document"
    if not raw:
        return _KIND.get(kind, "Document")
    parsed = urlparse(raw)
    if parsed.scheme in ("http", "https") and kind == "SHAREPOINT":
        # SharePoint opens documents as Doc.aspx?file=Name.docx or sourcedoc=...
        for part in parsed.query.split("&"):
            key, _, value = part.partition("=")
            if key.lower() == "file" and value:
                return name_from_path(value)
    name = name_from_path(parsed.path) if parsed.path.strip("/") else ""
    if not name or name.isdigit():
        name = _KIND.get(kind) or parsed.netloc or raw
    return name


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""
