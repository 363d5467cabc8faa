"""uv's output lines turned into progress events: what it downloads, and how far it has got."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from charstudio.install.setup_events import DownloadProgress, Event, Installing

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# uv 0.13 prints, for each of the larger downloads (small ones go unmentioned):
#   "Downloading numpy (15.6MiB)"  when it starts   and   " Downloaded numpy"  when it is done;
# then "Prepared 4 packages in 291ms" and "Installed 4 packages in 35ms".
_DOWNLOADING = re.compile(
    r"^Downloading (?P<name>.+) \((?P<size>\d+(?:\.\d+)?) ?(?P<unit>[kKMGT]?i?B)\)$"
)
_DOWNLOADED = re.compile(r"^Downloaded (?P<name>.+)$")
_PREPARED = re.compile(r"^Prepared \d+ packages?\b")
_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
_UNITS |= {"KB": 10**3, "kB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}


def parse_size(number: str, unit: str) -> int:
    return int(float(number) * _UNITS.get(unit, 1))


class DownloadTracker:
    """Estimates the bytes downloaded from uv's start and end lines.

    uv downloads in parallel and the connections share the bandwidth. So when a download ends,
    every download still running has received about as much as the one that just ended, and
    the bytes so far are the finished ones plus that much for each one still running; divided
    by the time since the first started, that gives the rate the estimate moves on with.
    """

    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}
        self.finished: set[str] = set()
        self.started_at: float | None = None
        self.estimate: DownloadProgress | None = None

    def start(self, name: str, size: int, now: float) -> DownloadProgress:
        if self.started_at is None:
            self.started_at = now
        self.sizes[name] = size
        return self._progress(now, current=name)

    def finish(self, name: str, now: float) -> DownloadProgress | None:
        if name not in self.sizes or name in self.finished:
            return None
        self.finished.add(name)
        return self._progress(now, current=name)

    def _progress(self, now: float, current: str) -> DownloadProgress:
        total = sum(self.sizes.values())
        finished = sum(self.sizes[name] for name in self.finished)
        running = [size for name, size in self.sizes.items() if name not in self.finished]
        last = max((self.sizes[name] for name in self.finished), default=0)
        done = min(total, finished + sum(min(size, last) for size in running))
        if self.estimate is not None and not running:
            done = total
        elif self.estimate is not None:
            done = max(done, min(self.estimate.now(now).done_bytes, total))
        elapsed = now - (self.started_at if self.started_at is not None else now)
        rate = done / elapsed if done and elapsed > 0 else None
        self.estimate = DownloadProgress(
            done, total, len(self.finished), len(self.sizes), rate, now, current
        )
        return self.estimate


class OutputParser:
    """Turns uv's output lines into progress events."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.downloads = DownloadTracker()

    def feed(self, raw: str) -> Event | None:
        line = _ANSI.sub("", raw).rstrip()
        text = line.strip()
        if match := _DOWNLOADING.match(text):
            size = parse_size(match["size"], match["unit"])
            return self.downloads.start(match["name"], size, self.clock())
        if match := _DOWNLOADED.match(text):
            return self.downloads.finish(match["name"], self.clock())
        if _PREPARED.match(text):
            return Installing()
        return None
