"""CLIP's byte-level BPE tokenizer (SD 1.5's text encoder), offline and without transformers.

The token counter runs on every keystroke in the prompt box, so it must not pull in torch or
transformers at start-up and must be fast: the vocabulary is built once, lazily, from the merges
file shipped in ``resources/clip``, and BPE results are cached per word.

It reproduces the tokenizer A1111 runs (transformers 4's CLIPTokenizer with ftfy installed): the
same 49408-token vocabulary, pre-tokenising regex and merge order as CLIP's ``SimpleTokenizer``,
and A1111's normalisation: ``ftfy.fix_text``, whitespace collapsed, lowercase, with no further
``html.unescape`` (CLIP's own tokenizer adds one). ftfy unescapes HTML entities itself unless the
text also holds ``<``, so ``&amp;`` stays as typed in a prompt with ``<``, as in A1111.
transformers 5 only NFC-normalises (no ftfy: curly quotes, ligatures, full-width letters and HTML
entities stay as typed).
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterable
from itertools import pairwise
from pathlib import Path

__all__ = ["BOS_TOKEN", "EOS_TOKEN", "ClipTokenizer", "get_clip_tokenizer"]

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"

# CLIP keeps the first 49152 - 256 - 2 merges so the vocabulary totals 49408 (with the 512 byte
# tokens and the two special tokens).
N_MERGES = 49152 - 256 - 2

# CLIP's pre-tokenising pattern; needs the ``regex`` module for \p{...}.
CLIP_PATTERN = (
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
)

# Past this many distinct words the cache is dropped rather than grown without bound in a
# long-running GUI session.
_CACHE_LIMIT = 200_000


def byte_alphabet() -> list[tuple[int, str]]:
    """CLIP/GPT-2's reversible byte -> printable character table, in vocabulary order.

    Bytes that are already printable (and not space) stand for themselves; the others (controls,
    space, soft hyphen...) are shifted to code points from 256 on, so BPE never sees whitespace.
    The order (printable bytes first, then the rest) is the order of the vocabulary's first 256
    entries.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    kept = set(printable)
    table = [(b, chr(b)) for b in printable]
    shifted = (b for b in range(256) if b not in kept)
    table.extend((b, chr(256 + i)) for i, b in enumerate(shifted))
    return table


def _default_merges_path() -> Path:
    from charstudio.resources import resource_path

    return resource_path("clip", "bpe_simple_vocab_16e6.txt.gz")


def read_merges(path: Path | str | None = None) -> list[tuple[str, str]]:
    """The merges CLIP uses, in rank order, from the gzip file (its first line is a header)."""
    path = Path(path) if path is not None else _default_merges_path()
    merges: list[tuple[str, str]] = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        next(fh)  # version header
        for line in fh:
            first, second = line.split()
            merges.append((first, second))
            if len(merges) == N_MERGES:
                break
    if len(merges) != N_MERGES:
        raise ValueError(f"{path}: expected {N_MERGES} merges, found {len(merges)}")
    return merges


class ClipTokenizer:
    """CLIP BPE tokenizer: ``encode`` gives token ids without BOS/EOS.

    Thread-safe for concurrent ``encode`` calls: the only shared mutable state is the word cache,
    and a race there only recomputes an entry.
    """

    def __init__(self, merges_path: Path | str | None = None) -> None:
        # Imported here, not at module level, so importing charstudio.prompts stays cheap.
        import ftfy
        import regex

        self._fix_text = ftfy.fix_text
        self._whitespace = regex.compile(r"\s+")
        self._pattern = regex.compile(CLIP_PATTERN, regex.IGNORECASE)

        alphabet = byte_alphabet()
        self._byte_to_char: list[str] = [""] * 256
        for b, ch in alphabet:
            self._byte_to_char[b] = ch
        self._char_to_byte: dict[str, int] = {ch: b for b, ch in alphabet}

        merges = read_merges(merges_path)
        vocab = [ch for _, ch in alphabet]
        vocab += [ch + END_OF_WORD for _, ch in alphabet]
        vocab += [first + second for first, second in merges]
        vocab += [BOS_TOKEN, EOS_TOKEN]
        self._id_to_token: list[str] = vocab
        self._token_to_id: dict[str, int] = {tok: i for i, tok in enumerate(vocab)}
        self._ranks: dict[tuple[str, str], int] = {pair: i for i, pair in enumerate(merges)}

        self.bos_id: int = self._token_to_id[BOS_TOKEN]
        self.eos_id: int = self._token_to_id[EOS_TOKEN]
        # Special tokens written in the text are single tokens, never BPE'd.
        self._specials: dict[str, tuple[int, ...]] = {
            BOS_TOKEN: (self.bos_id,),
            EOS_TOKEN: (self.eos_id,),
        }
        self._cache: dict[str, tuple[int, ...]] = dict(self._specials)

    @property
    def vocab_size(self) -> int:
        return len(self._id_to_token)

    def token_to_id(self, token: str) -> int | None:
        """Id of a vocabulary entry (e.g. ``"a</w>"`` -> 320), or None if there is none."""
        return self._token_to_id.get(token)

    def id_to_token(self, token_id: int) -> str:
        return self._id_to_token[token_id]

    def normalize(self, text: str) -> str:
        """A1111's text clean-up: ftfy (which unescapes HTML entities unless the text holds
        ``<``), whitespace collapsed, lowercase."""
        text = self._fix_text(text)
        return self._whitespace.sub(" ", text).strip().lower()

    def tokenize(self, text: str) -> list[str]:
        """BPE tokens as vocabulary strings (``["a</w>", "photo</w>"]``), for debugging."""
        return [self._id_to_token[i] for i in self.encode(text)]

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without the BOS/EOS tokens."""
        ids: list[int] = []
        cache = self._cache
        for word in self._pattern.findall(self.normalize(text)):
            word_ids = cache.get(word)
            if word_ids is None:
                word_ids = self._encode_word(word)
            ids.extend(word_ids)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids; word ends become spaces, special tokens appear as written."""
        chars = "".join(self._id_to_token[i] for i in ids).replace(END_OF_WORD, " ")
        # A real space byte is spelt "Ġ" in the vocabulary, so " " here can only be a word end.
        data = bytes(32 if ch == " " else self._char_to_byte[ch] for ch in chars)
        return data.decode("utf-8", errors="replace").strip()

    def _encode_word(self, word: str) -> tuple[int, ...]:
        symbols = "".join(self._byte_to_char[b] for b in word.encode("utf-8"))
        ids = tuple(self._token_to_id[tok] for tok in self._bpe(symbols))
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache = dict(self._specials)
        self._cache[word] = ids
        return ids

    def _bpe(self, symbols: str) -> list[str]:
        """Apply merges to one pre-token, lowest rank first, as CLIP does.

        The last symbol carries the end-of-word marker. Each round merges every non-overlapping
        occurrence (scanning left to right) of the best-ranked adjacent pair.
        """
        parts = [*symbols[:-1], symbols[-1] + END_OF_WORD]
        ranks = self._ranks
        while len(parts) > 1:
            best: tuple[str, str] | None = None
            best_rank = len(ranks)
            for pair in pairwise(parts):
                rank = ranks.get(pair)
                if rank is not None and rank < best_rank:
                    best, best_rank = pair, rank
            if best is None:
                break
            first, second = best
            merged: list[str] = []
            i, n = 0, len(parts)
            while i < n:
                if i < n - 1 and parts[i] == first and parts[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return parts


_lock = threading.Lock()
_instance: ClipTokenizer | None = None


def get_clip_tokenizer() -> ClipTokenizer:
    """The shared tokenizer, built on first use from the shipped merges file."""
    global _instance
    if _instance is None:
        with _lock:
            if _instance is None:
                _instance = ClipTokenizer()
    return _instance
