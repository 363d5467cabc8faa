"""Model hashes as AUTOMATIC1111 writes them into infotexts.

``Model hash: 9aba26abdf`` is the first 10 hex digits of the file's sha256 (A1111's "AutoV2"
hash). Hashing a 2-7 GB checkpoint takes seconds, so full digests are kept in a small JSON cache
keyed by the file's path, size and modification time; a file that changes is hashed again.

Old A1111 versions (and infotexts written by them) carry an 8-digit "legacy" hash of 64 KiB read
at offset 1 MiB; :func:`legacy_model_hash` computes it for matching such infotexts.

LoRAs (``Lora hashes: "name: 1a2b3c4d5e6f"``) use kohya's "addnet" hash for ``.safetensors``
files: the sha256 of the bytes after the safetensors header (:func:`addnet_hash`), cached in the
same file under its own kind.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from charstudio.atomic_files import write_bytes_atomic

__all__ = [
    "HashCache",
    "addnet_hash",
    "default_cache_dir",
    "hash_cache",
    "legacy_model_hash",
    "model_hash",
    "sha256_file",
]

CHUNK_SIZE = 1 << 20
MODEL_HASH_LENGTH = 10
_CACHE_VERSION = 1
_CACHE_FILE_NAME = "model_hashes.json"


def default_cache_dir(app_name: str = "charstudio") -> Path:
    """The per-user cache folder, where platformdirs would put it (stdlib only)."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / app_name / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / app_name
    xdg = os.environ.get("XDG_CACHE_HOME")
    # XDG says a relative value is invalid and must be ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / app_name


def sha256_file(
    path: Path, *, progress: Callable[[int, int], None] | None = None, chunk_size: int = CHUNK_SIZE
) -> str:
    """Full hex sha256 of a file, streamed so a multi-GB checkpoint never sits in memory.

    ``progress(done_bytes, total_bytes)`` is called after each chunk.
    """
    digest = hashlib.sha256()
    total = os.path.getsize(path)
    done = 0
    with open(path, "rb") as file:
        while chunk := file.read(chunk_size):
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return digest.hexdigest()


def legacy_model_hash(path: Path) -> str:
    """A1111's old short hash: sha256 of the 64 KiB at offset 0x100000, first 8 hex digits.

    Files shorter than 1 MiB hash the empty string, exactly as A1111 did.
    """
    with open(path, "rb") as file:
        file.seek(0x100000)
        return hashlib.sha256(file.read(0x10000)).hexdigest()[:8]


def addnet_hash(data: bytes) -> str:
    """kohya's "addnet" hash of a ``.safetensors`` file's bytes, which A1111 writes (12 digits)
    in ``Lora hashes``: the sha256 of everything after the header (an 8-byte little-endian
    length n, then n bytes of JSON), so editing the metadata does not change it."""
    length = int.from_bytes(data[:8], "little")
    return hashlib.sha256(memoryview(data)[8 + length :]).hexdigest()


class HashCache:
    """Full digests in a JSON file, valid while a file's size and mtime are unchanged.

    Each file's entry holds one digest per kind: ``sha256`` of the whole file (model hashes),
    ``addnet`` (:func:`addnet_hash`, LoRAs). Thread-safe within the process; the file is
    replaced atomically so a crash mid-write never leaves a broken cache (a broken or foreign
    file is simply treated as empty).
    """

    def __init__(self, cache_file: Path | None = None) -> None:
        self.cache_file = Path(cache_file) if cache_file else default_cache_dir() / _CACHE_FILE_NAME
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, object]] | None = None

    @staticmethod
    def _key(path: Path) -> str:
        return os.path.normcase(str(Path(path).resolve()))

    def _load(self) -> dict[str, dict[str, object]]:
        if self._entries is None:
            try:
                data = json.loads(self.cache_file.read_text(encoding="utf-8"))
                entries = data.get("entries") if data.get("version") == _CACHE_VERSION else None
                self._entries = entries if isinstance(entries, dict) else {}
            except (OSError, ValueError, AttributeError):
                self._entries = {}
        return self._entries

    def _save(self) -> None:
        payload = json.dumps({"version": _CACHE_VERSION, "entries": self._entries}, indent=1)
        try:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            # A cache: not fsynced (a lost update costs a re-hash, like a broken file).
            write_bytes_atomic(self.cache_file, payload.encode("utf-8"), durable=False)
        except OSError:
            pass  # a cache that cannot be written only costs a re-hash next time

    def get(self, path: Path, kind: str, stat: os.stat_result) -> str | None:
        """The cached ``kind`` digest of ``path`` if the file still has ``stat``'s size and
        mtime, else None."""
        with self._lock:
            entry = self._load().get(self._key(path))
            if (
                isinstance(entry, dict)
                and entry.get("size") == stat.st_size
                and entry.get("mtime_ns") == stat.st_mtime_ns
                and isinstance(entry.get(kind), str)
            ):
                return str(entry[kind])
        return None

    def put(self, path: Path, kind: str, stat: os.stat_result, digest: str) -> None:
        """Remember ``path``'s ``kind`` digest for the file as ``stat`` describes it; digests of
        other kinds for the same size and mtime are kept."""
        key = self._key(path)
        with self._lock:
            # Re-read so hashes written meanwhile by another process are kept.
            self._entries = None
            entries = self._load()
            entry = entries.get(key)
            fresh: dict[str, object] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
            if isinstance(entry, dict) and all(entry.get(k) == v for k, v in fresh.items()):
                fresh = {**entry, **fresh}
            entries[key] = {**fresh, kind: digest}
            self._save()

    def sha256(self, path: Path, *, progress: Callable[[int, int], None] | None = None) -> str:
        """The file's full sha256, from the cache when its size and mtime still match."""
        stat = os.stat(path)
        cached = self.get(path, "sha256", stat)
        if cached is not None:
            return cached
        digest = sha256_file(path, progress=progress)  # outside the lock: may take seconds
        self.put(path, "sha256", stat, digest)
        return digest


_default_caches: dict[Path, HashCache] = {}
_default_caches_lock = threading.Lock()


def hash_cache(cache_file: Path | None = None) -> HashCache:
    """The process's :class:`HashCache` for ``cache_file`` (default: the user's cache folder)."""
    return _cache_for(cache_file)


def _cache_for(cache_file: Path | None) -> HashCache:
    path = Path(cache_file) if cache_file else default_cache_dir() / _CACHE_FILE_NAME
    with _default_caches_lock:
        cache = _default_caches.get(path)
        if cache is None:
            cache = _default_caches[path] = HashCache(path)
        return cache


def model_hash(
    path: Path,
    *,
    cache_file: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> str:
    """A1111's ``Model hash``: the first 10 hex digits of the file's sha256 (cached)."""
    return _cache_for(cache_file).sha256(Path(path), progress=progress)[:MODEL_HASH_LENGTH]
