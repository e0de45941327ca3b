"""The CDR spool (`--cdr-spool DIR`): call ends the store did not take, kept on disk until it does.

A call refused because the store did not answer its admission, or a call whose end the store did not
take, has its end (CDR included) only in the edge's memory while the store is away. With a spool, that
end is appended to `DIR/pending.jsonl` and fsynced before the caller gets the 503 or the 200 to its
BYE, marked done once the store has it, and offered again by the next process that starts on the same
directory (in Kubernetes: an emptyDir, which outlives a container restart but not the pod).

The file is a log: one JSON line per end, `{"done": key}` once the store took it; rewritten with the
pending ends only when it would pass its size cap (the oldest ends then dropped and counted) and
emptied when nothing is pending. Every disk operation runs on one worker thread, in order, so the
event loop never waits on the disk (an fsync on a busy disk takes tens of milliseconds)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from trunkline.core.logs import event

log = logging.getLogger("trunkline.edge")
SPOOL_FILE = "pending.jsonl"
DEFAULT_MAX_BYTES = 16 * 1024 * 1024  # about 10,000 ends of ordinary calls


@dataclass(frozen=True)
class SpooledEnd:
    """What `StateStore.end_call_with_cdr` needs to end a call again: its key, trunk (as the store
    keys it), dialog keys and the CDR's JSON (with its id, so a second offer never bills twice)."""

    call: str
    trunk: str
    dialogs: tuple[str, ...]
    cdr: str

    def line(self) -> bytes:
        record = {"call": self.call, "trunk": self.trunk, "dialogs": list(self.dialogs), "cdr": self.cdr}
        return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def _parse(raw: bytes) -> SpooledEnd | str | None:
    """A line of the file: an end, the key of an end done, or None (a torn or foreign line)."""
    try:
        found = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(found, dict):
        return None
    if isinstance(done := found.get("done"), str):
        return done
    call, trunk, dialogs, cdr = (found.get(k) for k in ("call", "trunk", "dialogs", "cdr"))
    if not (isinstance(call, str) and isinstance(trunk, str) and isinstance(cdr, str)):
        return None
    if not isinstance(dialogs, list) or not all(isinstance(d, str) for d in dialogs):
        return None
    return SpooledEnd(call, trunk, tuple(dialogs), cdr)


class CdrSpool:
    def __init__(self, directory: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / SPOOL_FILE
        self.max_bytes = max_bytes
        self.dropped = 0  # ends dropped, oldest first, to keep the file under its cap
        self._pending: dict[str, SpooledEnd] = {}  # by call key, oldest first
        self._size = 0  # bytes in the file
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="cdr-spool")
        self._file: BinaryIO | None = None
        self._loaded: list[SpooledEnd] = []
        self._closed = False

    @property
    def pending(self) -> int:
        return len(self._pending)

    def load(self) -> list[SpooledEnd]:
        """At start, before any call: the ends a previous process left (the file rewritten with them
        alone). Lines that do not parse (an end torn by a kill mid-write) are skipped."""
        found: dict[str, SpooledEnd] = {}
        if self.path.exists():
            with self.path.open("rb") as file:
                for raw in file:
                    item = _parse(raw)
                    if isinstance(item, str):
                        found.pop(item, None)
                    elif item is not None:
                        found[item.call] = item
        self._pending = found
        self._loaded = list(found.values())
        self._rewrite(b"".join(end.line() for end in self._loaded))
        return self._loaded

    def loaded(self) -> list[SpooledEnd]:
        """What `load` found that is still pending (not yet taken by the store)."""
        return [end for end in self._loaded if end.call in self._pending]

    async def add(self, end: SpooledEnd) -> None:
        """Append `end` and fsync it (on the worker thread): on disk when this returns. OSError when it
        could not be (a full disk, or the spool closed as the edge stops)."""
        if self._closed:
            raise OSError("the CDR spool is closed")
        await asyncio.get_running_loop().run_in_executor(self._worker, self._add, end)

    async def done(self, call: str) -> None:
        """The store took the end of `call`: marked done (no fsync: an end offered twice is refused by
        the store as already ended, and its CDR id deduplicates it at the sinks)."""
        if self._closed:
            return
        await asyncio.get_running_loop().run_in_executor(self._worker, self._done, call)

    def close(self) -> None:
        self._closed = True
        self._worker.shutdown(wait=True)
        if self._file is not None:
            self._file.close()
            self._file = None

    # -- on the worker thread ----------------------------------------------------------------------
    def _add(self, end: SpooledEnd) -> None:
        line = end.line()
        self._pending.pop(end.call, None)
        if self._size + len(line) > self.max_bytes:
            self._fit(len(line))
        self._pending[end.call] = end
        self._append(line, sync=True)

    def _done(self, call: str) -> None:
        if self._pending.pop(call, None) is None:
            return
        try:
            if not self._pending:
                self._rewrite(b"")  # nothing pending: an empty file
            else:
                self._append(json.dumps({"done": call}).encode() + b"\n", sync=False)
        except OSError as exc:  # offered again at the next start: the store refuses it as ended
            event(log, logging.WARNING, "could not mark a spooled end done", call_id=call, error=str(exc))

    def _fit(self, room: int) -> None:
        """Rewrite the file with the pending ends only, dropping the oldest until `room` more fits."""
        lines = [end.line() for end in self._pending.values()]
        total = sum(len(line) for line in lines)
        while lines and total + room > self.max_bytes:
            total -= len(lines.pop(0))
            oldest = next(iter(self._pending))
            del self._pending[oldest]
            self.dropped += 1
            event(log, logging.ERROR, "CDR spool full: oldest end dropped", call_id=oldest)
        self._rewrite(b"".join(lines))

    def _rewrite(self, content: bytes) -> None:
        if self._file is not None:
            self._file.close()
        temporary = self.path.with_suffix(".tmp")
        with temporary.open("wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        self._file = self.path.open("ab")
        self._size = len(content)

    def _append(self, line: bytes, sync: bool) -> None:
        if self._file is None:
            self._file = self.path.open("ab")
        self._file.write(line)
        self._file.flush()
        if sync:
            os.fsync(self._file.fileno())
        self._size += len(line)
