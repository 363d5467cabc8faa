"""Textual-inversion embedding files, read and written the way A1111 does.

Formats read (all as in A1111's ``create_embedding_from_data``):

* A1111 ``.pt``: ``{"string_to_token": {"*": 265}, "string_to_param": {"*": Tensor[n, 768]},
  "name", "step", "sd_checkpoint", "sd_checkpoint_name"}``. Read only through
  ``torch.load(weights_only=True)``; a file that needs arbitrary unpickling is refused.
* ``.safetensors`` with one tensor ``emb_params`` (kohya, charstudio's trainer).
* diffusers concepts: a ``.bin``/``.safetensors``/``.pt`` dict ``{token: Tensor[768] | [n, 768]}``.

A file holding more than one term is rejected, as A1111 does. A width other than the model's
(768 for SD 1.x) is rejected with a message naming the likely family (SD 2.x, SDXL).

Names are file stems, as in A1111. The library keys them case-sensitively (two files may differ
only in case on Linux) but prompts find them by CLIP tokens, which are lowercase, so in a prompt
``MyChar`` and ``mychar`` both match; :meth:`EmbeddingLibrary.get` tries the exact name first,
then a unique case-insensitive match. When several files share a stem, the first found wins:
folders in the order given (the project's ``embeddings/`` before the user folder, so a project
can override a shared embedding), then shallower paths, then ``.safetensors`` over ``.pt`` over
``.bin``. (A1111 instead lets the last file loaded win, an accident of directory-walk order.)

torch and safetensors are imported inside functions so importing this module stays cheap.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from charstudio.atomic_files import atomic_write
from charstudio.engine.pt_files import (
    RefusedPickle,
    UnreadableTorchFile,
    load_weights_only,
    misnamed_safetensors,
    torch_save_bytes,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "EMBEDDING_EXTENSIONS",
    "SD1_WIDTH",
    "Embedding",
    "EmbeddingError",
    "EmbeddingLibrary",
    "embedding_from_data",
    "load_embedding",
    "save_a1111_pt",
    "save_safetensors",
]

SD1_WIDTH = 768
# Preference order when one folder holds the same stem in several formats.
EMBEDDING_EXTENSIONS: tuple[str, ...] = (".safetensors", ".pt", ".bin")
# What A1111 writes in ``string_to_token``: the id of "*", kept for readers that look at it.
_A1111_TOKEN_ID = 265

# Widths of other model families, to make a width mismatch message useful.
_FAMILY_BY_WIDTH = {768: "SD 1.x", 1024: "SD 2.x", 1280: "SDXL (clip_g)"}


class EmbeddingError(ValueError):
    """An embedding file that cannot be used; the message names the file and the reason."""


@dataclass(eq=False)
class Embedding:
    """One textual-inversion term: ``vectors`` is float32 ``[n_vectors, width]`` on the CPU."""

    name: str
    vectors: torch.Tensor
    step: int | None = None
    sd_checkpoint: str | None = None
    source: Path | None = None
    sd_checkpoint_name: str | None = None
    _sha256: str | None = field(default=None, repr=False)

    @property
    def n_vectors(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def width(self) -> int:
        return int(self.vectors.shape[-1])

    @property
    def sha256(self) -> str | None:
        """SHA-256 of the file (hex), computed on first use; None for in-memory embeddings."""
        if self._sha256 is None and self.source is not None:
            digest = hashlib.sha256()
            with open(self.source, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            self._sha256 = digest.hexdigest()
        return self._sha256

    @property
    def shorthash(self) -> str | None:
        """A1111's short hash (first 12 hex digits of the file's SHA-256), as in ``TI hashes``."""
        full = self.sha256
        return full[:12] if full else None


def _preview_keys(data: Mapping[str, Any], limit: int = 3) -> str:
    keys = [str(k) for k in list(data)[:limit]]
    return ", ".join(keys) + (", …" if len(data) > limit else "")


def _describe_width(width: int) -> str:
    family = _FAMILY_BY_WIDTH.get(width)
    return f"{width} wide ({family})" if family else f"{width} wide"


def embedding_from_data(
    data: Any,
    name: str,
    *,
    source: Path | None = None,
    width: int | None = SD1_WIDTH,
) -> Embedding:
    """Build an :class:`Embedding` from a loaded file's contents (A1111's rules).

    ``width`` is the model's token-embedding width; None accepts any width.
    """
    import torch

    label = str(source) if source is not None else name
    if not isinstance(data, Mapping):
        raise EmbeddingError(f"{label}: not an embedding file (found {type(data).__name__})")

    if "string_to_param" in data:
        params = data["string_to_param"]
        # Files saved by torch 1.11 hold a ParameterDict; its tensors live in ``_parameters``.
        params = getattr(params, "_parameters", params)
        if not isinstance(params, Mapping) or not params:
            raise EmbeddingError(f"{label}: 'string_to_param' holds no vectors")
        if len(params) != 1:
            raise EmbeddingError(
                f"{label}: the file holds {len(params)} terms; an embedding file must hold one"
            )
        tensor = next(iter(params.values()))
    elif "clip_l" in data and "clip_g" in data:
        raise EmbeddingError(f"{label}: an SDXL embedding (clip_l + clip_g); this is SD 1.x")
    else:
        tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
        if not tensors:
            raise EmbeddingError(f"{label}: not a textual-inversion embedding (no vectors found)")
        if len(data) != 1:
            raise EmbeddingError(
                f"{label}: the file holds {len(data)} entries ({_preview_keys(data)}); an "
                "embedding file must hold one term (is it a LoRA or a checkpoint?)"
            )
        tensor = next(iter(tensors.values()))

    if not isinstance(tensor, torch.Tensor):
        raise EmbeddingError(f"{label}: the vectors are not a tensor")
    # A copy that owns its memory: a tensor from safetensors' load_file is a view of the file
    # mapped into memory, and Windows cannot replace or delete a mapped file (re-exporting or
    # retraining NAME.safetensors) while the library caches this embedding.
    vectors = tensor.detach().to("cpu", torch.float32, copy=True)
    if vectors.ndim == 1:  # diffusers concepts store a single vector as [768]
        vectors = vectors.unsqueeze(0)
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise EmbeddingError(
            f"{label}: expected vectors shaped [n, width], got {tuple(tensor.shape)}"
        )
    if width is not None and vectors.shape[1] != width:
        raise EmbeddingError(
            f"{label}: the vectors are {_describe_width(int(vectors.shape[1]))}; this model needs "
            f"{_describe_width(width)}"
        )

    step = data.get("step")
    checkpoint = data.get("sd_checkpoint")
    checkpoint_name = data.get("sd_checkpoint_name")
    return Embedding(
        name=name,
        vectors=vectors.contiguous(),
        step=int(step) if isinstance(step, int | float) and not isinstance(step, bool) else None,
        sd_checkpoint=str(checkpoint) if checkpoint else None,
        source=source,
        sd_checkpoint_name=str(checkpoint_name) if checkpoint_name else None,
    )


def _torch_load_safely(path: Path) -> Any:
    try:
        return load_weights_only(path)
    except RefusedPickle as exc:
        what = f"; it references {exc.found}" if exc.found else ""
        raise EmbeddingError(
            f"{path}: refused: loading it would need unsafe unpickling (it may run code{what}). "
            "Only plain tensor files are read; convert it to .safetensors with a trusted tool."
        ) from exc
    except UnreadableTorchFile as exc:
        raise EmbeddingError(f"{path}: not a readable PyTorch file ({exc})") from exc


def _read_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        with open(path, "rb") as file:
            misnamed = misnamed_safetensors(path, file.read(9), str(path))
    except OSError:
        misnamed = None  # load_file says what is wrong
    if misnamed:
        raise EmbeddingError(misnamed)
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise EmbeddingError(f"{path}: not a readable safetensors file ({exc})") from exc


def load_embedding(path: Path | str, *, width: int | None = SD1_WIDTH) -> Embedding:
    """Read one embedding file; its name is the file stem. Raises :class:`EmbeddingError`."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        data = _read_safetensors(path)
    elif suffix in (".pt", ".bin"):
        data = _torch_load_safely(path)
    else:
        raise EmbeddingError(f"{path}: unsupported embedding file type {path.suffix!r}")
    return embedding_from_data(data, path.stem, source=path, width=width)


def _as_vectors(vectors: torch.Tensor) -> torch.Tensor:
    import torch

    out = vectors.detach().to("cpu", torch.float32)
    if out.ndim == 1:
        out = out.unsqueeze(0)
    if out.ndim != 2:
        raise ValueError(f"expected vectors shaped [n, width], got {tuple(vectors.shape)}")
    # A private copy: the trainer keeps updating its own tensor after a save.
    return out.contiguous().clone()


def _write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write through a hidden temporary file that is flushed to disk and renamed (see
    :mod:`charstudio.atomic_files`), so a crash never leaves a half-written file;
    :class:`EmbeddingLibrary` skips the temporary file's dot-name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write)


def save_a1111_pt(
    path: Path | str,
    name: str,
    vectors: torch.Tensor,
    step: int | None = None,
    checkpoint_hash: str | None = None,
    checkpoint_name: str | None = None,
) -> Path:
    """Write an A1111 ``.pt`` embedding (exactly A1111's keys) that loads with weights_only and
    passes A1111's safe unpickler; the zip's top folder is ``name``.

    ``step`` is stored as given (A1111 stores the number of optimizer steps completed);
    ``checkpoint_hash`` is A1111's short model hash.
    """
    path = Path(path)
    data = {
        "string_to_token": {"*": _A1111_TOKEN_ID},
        "string_to_param": {"*": _as_vectors(vectors)},
        "name": name,
        "step": step,
        "sd_checkpoint": checkpoint_hash,
        "sd_checkpoint_name": checkpoint_name,
    }
    # Only the zip entries A1111's safe unpickler accepts, under the embedding's name (as
    # torch.save to NAME.pt writes), not torch's "archive"; see charstudio.engine.pt_files.
    payload = torch_save_bytes(data, name)
    _write_atomically(path, lambda fh: fh.write(payload))
    return path


def save_safetensors(
    path: Path | str, vectors: torch.Tensor, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write a ``.safetensors`` embedding holding one tensor ``emb_params`` (+ text metadata)."""
    from safetensors.torch import save

    path = Path(path)
    tensors = {"emb_params": _as_vectors(vectors)}
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    _write_atomically(path, lambda fh: fh.write(save(tensors, metadata=meta or None)))
    return path


@dataclass(frozen=True, slots=True)
class _FileKey:
    path: Path
    mtime_ns: int
    size: int


class EmbeddingLibrary:
    """The embeddings a job can use: every file in ``folders`` (searched recursively).

    Folders are rescanned on each query (a directory listing is cheap), so files saved by a
    training run appear at once. Files are loaded lazily and cached by path, mtime and size.
    A file that cannot be used (unsafe pickle, several terms, wrong width, corrupt) is left out
    of :meth:`names` and reported by :meth:`errors`; in a prompt its name is then plain text,
    as in A1111, which is why :func:`charstudio.engine.conditioning.check_prompt_embeddings`
    warns about it before a job starts. Thread-safe.
    """

    def __init__(self, folders: Sequence[Path | str], *, width: int | None = SD1_WIDTH) -> None:
        self.folders = [Path(f) for f in folders]
        self.width = width
        self._lock = threading.RLock()
        self._cache: dict[Path, tuple[_FileKey, Embedding | EmbeddingError]] = {}

    # -- discovery -------------------------------------------------------------------------

    def paths(self) -> dict[str, Path]:
        """Name -> file for every embedding file found (usable or not), first one found wins."""
        found: dict[str, Path] = {}
        for folder in self.folders:
            if not folder.is_dir():
                continue
            candidates: list[tuple[int, str, int, Path]] = []
            for root, dirs, files in os.walk(folder, followlinks=True):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                rel = Path(root).relative_to(folder)
                depth = len(rel.parts)
                for fn in files:
                    path = Path(root, fn)
                    ext = path.suffix.lower()
                    if fn.startswith(".") or ext not in EMBEDDING_EXTENSIONS:
                        continue
                    candidates.append((depth, str(rel / fn), EMBEDDING_EXTENSIONS.index(ext), path))
            # Same stem: shallower first, then by folder, then the preferred format.
            candidates.sort(key=lambda c: (c[0], str(Path(c[1]).parent), c[3].stem, c[2]))
            for *_, path in candidates:
                found.setdefault(path.stem, path)
        return found

    def _load(self, path: Path) -> Embedding | EmbeddingError:
        try:
            st = path.stat()
        except OSError as exc:
            return EmbeddingError(f"{path}: cannot be read ({exc})")
        key = _FileKey(path, st.st_mtime_ns, st.st_size)
        with self._lock:
            cached = self._cache.get(path)
            if cached is not None and cached[0] == key:
                return cached[1]
        result: Embedding | EmbeddingError
        if st.st_size == 0:  # A1111 skips empty files; they appear while a copy is under way
            result = EmbeddingError(f"{path}: the file is empty")
        else:
            try:
                result = load_embedding(path, width=self.width)
            except EmbeddingError as exc:
                result = exc
        with self._lock:
            self._cache[path] = (key, result)
        return result

    # -- queries ---------------------------------------------------------------------------

    def names(self) -> dict[str, int]:
        """Usable name -> number of vectors (``count_prompt_tokens``'s ``embeddings``)."""
        out: dict[str, int] = {}
        for name, path in self.paths().items():
            loaded = self._load(path)
            if isinstance(loaded, Embedding):
                out[name] = loaded.n_vectors
        return out

    def errors(self) -> dict[str, str]:
        """Name -> why its file cannot be used, for every unusable file."""
        out: dict[str, str] = {}
        for name, path in self.paths().items():
            loaded = self._load(path)
            if isinstance(loaded, EmbeddingError):
                out[name] = str(loaded)
        return out

    def resolve(self, name: str) -> str | None:
        """The library's spelling of ``name``: exact, else a unique case-insensitive match."""
        paths = self.paths()
        if name in paths:
            return name
        folded = [n for n in paths if n.casefold() == name.casefold()]
        return folded[0] if len(folded) == 1 else None

    def get(self, name: str) -> Embedding:
        """The embedding called ``name``; KeyError if no file has that name, EmbeddingError if
        the file cannot be used."""
        resolved = self.resolve(name)
        if resolved is None:
            raise KeyError(f"no embedding named {name!r} in {', '.join(map(str, self.folders))}")
        loaded = self._load(self.paths()[resolved])
        if isinstance(loaded, EmbeddingError):
            raise loaded
        return loaded

    def missing(self, names: Iterable[str]) -> list[str]:
        """The names, among those a job refers to explicitly (a sweep's embedding axis, the
        project's token), that no usable file provides; in the order given, without repeats."""
        usable = self.names()
        folded = {n.casefold() for n in usable}
        out: list[str] = []
        for name in names:
            if name not in usable and name.casefold() not in folded and name not in out:
                out.append(name)
        return out

    def vectors(self) -> dict[str, torch.Tensor]:
        """Every usable embedding's vectors by name."""
        return {name: self.get(name).vectors for name in self.names()}

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()
