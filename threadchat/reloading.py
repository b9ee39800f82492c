"""A settings file as it is now: read again when it changes, so that new conversations pick up
an operator's edit without a restart. An edit that breaks the file is logged, and the last
good version stays (the worker checked the file at start)."""

import logging
import os
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class ReloadingFile(Generic[T]):
    def __init__(
        self,
        setting: str,
        path: str | None,
        value: T,
        load: Callable[[str], T] | None,
        errors: type[Exception],
    ):
        self.setting, self.path, self.value = setting, path, value
        self.load, self.errors = load, errors
        self.seen = self._stamp()

    def _stamp(self) -> tuple[int, int] | None:
        try:
            stat = os.stat(self.path) if self.path else None
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size) if stat else None

    def current(self) -> T:
        """The file's contents, read again if it changed since the last look."""
        stamp = self._stamp()
        if stamp != self.seen and self.path and self.load:
            self.seen = stamp
            try:
                self.value = self.load(self.path)
                log.info("%s read again from %s", self.setting, self.path)
            except self.errors as err:
                log.error("%s: %s; keeping what was read before", self.setting, err)
        return self.value
