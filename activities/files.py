"""Files shared in a thread, fetched from Slack for a model call: never stored, never logged.

Each file is looked up with files.info first: it must still exist and be shared in the
conversation's own channel, so a file id from another channel never reaches this thread's
prompt. Then its bytes come from url_private_download with the bot token, but only from
Slack's own file hosts (attachments.token_url): a file stored outside Slack, or a URL that
points elsewhere, is named to the model and never fetched. A redirect (Slack's sign-in page)
or an error means Slack will not serve it. A file stays in the prompt for
later turns while the budget has room, so the worker keeps the bytes it downloaded in memory
for a few minutes (bounded in size); the files.info check is made again every time.
"""

import logging
import threading

import urllib3
from cachetools import TTLCache
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from temporalio.exceptions import ApplicationError

from activities.slack import classify
from threadchat import attachments
from threadchat.model import FileRef
from threadchat.slack_client import HTTP_TIMEOUT_SECONDS

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT = urllib3.Timeout(connect=5, read=30)
KEPT_BYTES = 64_000_000
KEPT_SECONDS = 300


class FileUnavailable(Exception):
    """The file cannot be had; `reason` is a texts.FILE_PROBLEMS key."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _shared_in(file: dict, channel: str) -> bool:
    listed = [*(file.get("channels") or []), *(file.get("groups") or []), *(file.get("ims") or [])]
    shares = file.get("shares") or {}
    return channel in listed or any(channel in (shares.get(k) or {}) for k in ("public", "private"))


class SlackFiles:
    """Downloads files with the bot token. Synchronous: it runs in the model call's thread."""

    def __init__(self, token: str, api_url: str):
        self.token = token
        self.api_url = api_url
        self.client = WebClient(
            token=token, base_url=api_url, timeout=HTTP_TIMEOUT_SECONDS, retry_handlers=[]
        )
        self.http = urllib3.PoolManager(timeout=DOWNLOAD_TIMEOUT, retries=False)
        self.kept: TTLCache[str, bytes] = TTLCache(KEPT_BYTES, KEPT_SECONDS, getsizeof=len)
        self._lock = threading.Lock()  # model calls run in several threads

    def fetch(self, file: FileRef, channel: str) -> bytes:
        try:
            info = self.client.files_info(file=file.id)["file"]
        except SlackApiError as err:
            failure = classify(err)
            if not failure.non_retryable:
                raise failure from err  # rate limited or Slack down: the call is retried
            raise FileUnavailable("not_served") from None
        if not _shared_in(info, channel):
            raise FileUnavailable("not_here")
        with self._lock:
            kept = self.kept.get(file.id)
        if kept is not None:
            return kept
        if not (info.get("url_private_download") or info.get("url_private")):
            raise FileUnavailable("not_served")
        url = attachments.token_url(info, self.api_url)
        if url is None:
            raise FileUnavailable("elsewhere")
        limit = attachments.limit(file)
        try:
            response = self.http.request(
                "GET",
                url,
                headers={"Authorization": f"Bearer {self.token}"},
                redirect=False,
                preload_content=False,
            )
        except urllib3.exceptions.HTTPError as err:
            raise ApplicationError(
                f"download failed: {type(err).__name__}", type="SlackFileDownload"
            ) from None
        try:
            if response.status >= 500:
                raise ApplicationError(
                    f"download failed: HTTP {response.status}", type="SlackFileDownload"
                )
            if response.status != 200:
                raise FileUnavailable("not_served")
            data = response.read(limit + 1)
        finally:
            response.release_conn()
        if len(data) > limit:
            raise FileUnavailable("too_large")
        with self._lock:
            self.kept[file.id] = data
        return data
