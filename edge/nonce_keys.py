"""The keys digest nonces are signed with, read from the file the operator rotates."""

from __future__ import annotations

import os
import time
from collections.abc import Callable


class NonceKeys:
    """The keys nonces are signed with: the first signs, every one verifies.

    From a file (`--nonce-secret-file`) holding one key per line, newest first; the file is read
    again when its modification time or size changes (checked at most every `recheck` seconds), so an
    operator rotates by adding a new first line and dropping the last one after a nonce lifetime.
    """

    def __init__(
        self,
        keys: list[bytes] | None = None,
        *,
        path: str | None = None,
        recheck: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path, self.recheck, self.clock = path, recheck, clock
        self._stamp: tuple[int, int] | None = None
        self._checked = -recheck
        self._keys: list[bytes] = list(keys) if keys else []
        if path is not None:
            self._reload(force=True)
        if not self._keys:
            self._keys = [os.urandom(32)]

    @classmethod
    def from_file(cls, path: str, recheck: float = 5.0) -> NonceKeys:
        """Raises OSError (unreadable) or ValueError (no key) at start-up, where it can be reported."""
        return cls(path=path, recheck=recheck)

    @staticmethod
    def parse(text: bytes) -> list[bytes]:
        keys = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith(b"#")]
        if not keys:
            raise ValueError("no key in the nonce secret file")
        return keys

    def _reload(self, force: bool = False) -> None:
        assert self.path is not None
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size)
            if not force and stamp == self._stamp:
                return
            with open(self.path, "rb") as fh:
                keys = self.parse(fh.read(1 << 16))
        except (OSError, ValueError):
            if force:
                raise
            return  # a file being rewritten or removed: keep the keys we have
        self._keys, self._stamp = keys, stamp

    def current(self) -> list[bytes]:
        if self.path is not None:
            now = self.clock()
            if now - self._checked >= self.recheck:
                self._checked = now
                self._reload()
        return self._keys
