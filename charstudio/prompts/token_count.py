"""A1111's prompt chunking and its ``75/75`` token counter.

SD 1.5's text encoder sees 77 positions: BOS, 75 prompt tokens, EOS. A1111 splits longer prompts
into 75-token chunks, encodes each separately and concatenates the results, so the counter shows
``tokens/limit`` with the limit growing by 75 per chunk. This module reproduces the chunking
exactly (including A1111's comma backtracking, BREAK and embedding placement) because the same
chunks are what the engine must encode to reproduce A1111 images.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from charstudio.prompts.attention import AttentionRun, parse_attention_runs
from charstudio.prompts.clip_tokenizer import ClipTokenizer, get_clip_tokenizer
from charstudio.prompts.extra_networks import split_extra_networks
from charstudio.prompts.schedule import prompt_schedule

__all__ = [
    "CHUNK_LENGTH",
    "COMMA_BACKTRACK",
    "DEFAULT_STEPS",
    "EMBEDDING_PLACEHOLDER_ID",
    "EmbeddingSlot",
    "PromptTokens",
    "count_prompt_tokens",
    "count_scheduled_tokens",
    "format_prompt_report",
    "format_schedule",
    "prompt_report",
]

CHUNK_LENGTH = 75
# A1111's "comma_padding_backtrack" setting (default 20; 0 disables it).
COMMA_BACKTRACK = 20
# A1111 reserves an embedding's positions with token 0 and swaps the vectors in later.
EMBEDDING_PLACEHOLDER_ID = 0
# The steps a prompt's schedule is worked out for when none are given (charstudio's default).
DEFAULT_STEPS = 30


@dataclass(frozen=True, slots=True)
class EmbeddingSlot:
    """Where a textual-inversion embedding's vectors go: ``chunk``, starting at ``offset``."""

    chunk: int
    offset: int
    name: str
    n_vectors: int


@dataclass(slots=True)
class PromptTokens:
    """A prompt split into A1111 chunks.

    ``chunks`` holds the token ids of each chunk without BOS/EOS/padding (each has at most 75;
    embeddings appear as ``EMBEDDING_PLACEHOLDER_ID`` repeated ``n_vectors`` times).
    ``token_count`` is the number of real tokens, ``limit`` is 75 per chunk.
    """

    chunks: list[list[int]]
    token_count: int
    limit: int
    # Per-token attention weights, parallel to ``chunks`` (what the engine multiplies by).
    weights: list[list[float]] = field(default_factory=list)
    embeddings: list[EmbeddingSlot] = field(default_factory=list)
    # A1111's own figure, which counts every chunk but the last as a full 75 (padding
    # included), so "a BREAK b" shows 76/150 there and 2/150 in ``token_count``.
    a1111_token_count: int = 0

    @property
    def counter(self) -> str:
        return f"{self.token_count}/{self.limit}"


class _EmbeddingMatcher:
    """Finds embedding names in a token sequence, as A1111 does: by token ids, longest first.

    Matching on tokens rather than on words means case and spacing follow the tokenizer
    (``MyChar`` matches ``mychar``), and a name is found even when glued to punctuation or
    digits (``mychar,`` or ``mychar2``), exactly like A1111.
    """

    def __init__(self, embeddings: Mapping[str, int], tokenizer: ClipTokenizer) -> None:
        by_first: dict[int, list[tuple[tuple[int, ...], str, int]]] = {}
        for name, n_vectors in embeddings.items():
            ids = tuple(tokenizer.encode(name))
            if ids:
                by_first.setdefault(ids[0], []).append((ids, name, int(n_vectors)))
        for candidates in by_first.values():
            candidates.sort(key=lambda c: len(c[0]), reverse=True)
        self._by_first = by_first

    def match(self, tokens: Sequence[int], position: int) -> tuple[str, int, int] | None:
        """``(name, n_vectors, n_tokens_of_name)`` for an embedding starting at ``position``."""
        for ids, name, n_vectors in self._by_first.get(tokens[position], ()):
            if tuple(tokens[position : position + len(ids)]) == ids:
                return name, n_vectors, len(ids)
        return None


class _Chunker:
    """A1111's chunk builder (``tokenize_line``), kept as close to its control flow as sensible."""

    def __init__(self, comma_id: int, comma_backtrack: int) -> None:
        self.comma_id = comma_id
        self.comma_backtrack = comma_backtrack
        self.chunks: list[list[int]] = []
        self.weights: list[list[float]] = []
        self.slots: list[EmbeddingSlot] = []
        self.tokens: list[int] = []
        self.mults: list[float] = []
        self.pending_slots: list[tuple[int, str, int]] = []
        self.last_comma = -1
        self.a1111_count = 0

    def close_chunk(self, *, is_last: bool = False) -> None:
        self.a1111_count += len(self.tokens) if is_last else CHUNK_LENGTH
        index = len(self.chunks)
        self.slots.extend(EmbeddingSlot(index, off, name, n) for off, name, n in self.pending_slots)
        self.chunks.append(self.tokens)
        self.weights.append(self.mults)
        self.tokens, self.mults, self.pending_slots = [], [], []
        self.last_comma = -1

    def add_run(self, tokens: list[int], weight: float, matcher: _EmbeddingMatcher | None) -> None:
        position = 0
        while position < len(tokens):
            token = tokens[position]
            if token == self.comma_id:
                self.last_comma = len(self.tokens)
            elif (
                self.comma_backtrack
                and len(self.tokens) == CHUNK_LENGTH
                and self.last_comma != -1
                and len(self.tokens) - self.last_comma <= self.comma_backtrack
            ):
                # The chunk is full and a comma is near its end: cut after the comma and carry
                # the words after it into the next chunk, so a phrase is not split in two.
                cut = self.last_comma + 1
                moved_tokens, moved_mults = self.tokens[cut:], self.mults[cut:]
                # A1111's quirk, kept so images match: an embedding's vectors stay at their old
                # positions (over the old chunk's padding) while its placeholder tokens move.
                self.tokens, self.mults = self.tokens[:cut], self.mults[:cut]
                self.close_chunk()
                self.tokens, self.mults = moved_tokens, moved_mults

            if len(self.tokens) == CHUNK_LENGTH:
                self.close_chunk()

            found = matcher.match(tokens, position) if matcher is not None else None
            if found is None:
                self.tokens.append(token)
                self.mults.append(weight)
                position += 1
                continue

            name, n_vectors, name_length = found
            # An embedding's vectors are never split across chunks.
            if len(self.tokens) + n_vectors > CHUNK_LENGTH:
                self.close_chunk()
            self.pending_slots.append((len(self.tokens), name, n_vectors))
            self.tokens.extend([EMBEDDING_PLACEHOLDER_ID] * n_vectors)
            self.mults.extend([weight] * n_vectors)
            position += name_length


def count_prompt_tokens(
    prompt: str,
    *,
    embeddings: Mapping[str, int] | None = None,
    tokenizer: ClipTokenizer | None = None,
    comma_backtrack: int = COMMA_BACKTRACK,
    attention: bool = True,
) -> PromptTokens:
    """Split ``prompt`` into A1111's 75-token chunks and count its tokens.

    ``embeddings`` maps textual-inversion names (file names without extension) to their number
    of vectors; each occurrence counts as that many tokens. ``attention=False`` is A1111's
    emphasis mode "None": the whole text is one run of weight 1, brackets (and BREAK) included.

    BREAK follows A1111 exactly: it always closes the current chunk, even an empty one, so a
    prompt starting with BREAK (or "BREAK BREAK") gets an all-padding chunk. A1111 encodes such
    chunks too and they change the image, so the count must include them. A BREAK at the very
    end adds no chunk after it.
    """
    tokenizer = tokenizer if tokenizer is not None else get_clip_tokenizer()
    matcher = _EmbeddingMatcher(embeddings, tokenizer) if embeddings else None
    comma_id = tokenizer.token_to_id(",</w>")
    assert comma_id is not None  # part of every CLIP vocabulary

    chunker = _Chunker(comma_id, comma_backtrack)
    runs = parse_attention_runs(prompt) if attention else [AttentionRun(prompt)]
    for run in runs:
        if run.is_break:
            chunker.close_chunk()
        else:
            chunker.add_run(tokenizer.encode(run.text), run.weight, matcher)
    if chunker.tokens or not chunker.chunks:
        chunker.close_chunk(is_last=True)

    token_count = sum(len(chunk) for chunk in chunker.chunks)
    return PromptTokens(
        chunks=chunker.chunks,
        token_count=token_count,
        limit=CHUNK_LENGTH * len(chunker.chunks),
        weights=chunker.weights,
        embeddings=chunker.slots,
        a1111_token_count=chunker.a1111_count,
    )


def count_scheduled_tokens(
    prompt: str,
    steps: int = DEFAULT_STEPS,
    *,
    embeddings: Mapping[str, int] | None = None,
    tokenizer: ClipTokenizer | None = None,
    attention: bool = True,
) -> PromptTokens:
    """The count of the longest text in ``prompt``'s schedule (prompt editing ``[a:b:when]``,
    alternation ``[a|b]``) at ``steps`` steps: what A1111's token counter shows. Ties go to
    the earliest text; a prompt without that syntax counts as :func:`count_prompt_tokens`."""
    tokenizer = tokenizer if tokenizer is not None else get_clip_tokenizer()
    counts = [
        count_prompt_tokens(text, embeddings=embeddings, tokenizer=tokenizer, attention=attention)
        for text in prompt_schedule(prompt, steps).texts
    ]
    return max(counts, key=lambda counted: counted.token_count)


def prompt_report(
    prompt: str,
    embeddings: Mapping[str, int] | None = None,
    *,
    steps: int = DEFAULT_STEPS,
    emphasis: str = "Original",
) -> dict[str, Any]:
    """JSON-ready summary of a prompt (backs ``charstudio prompt TEXT --json``).

    Extra-network tags (``<lora:name:0.8>``) are listed apart and, as in A1111, neither parsed
    for attention nor counted. ``schedule`` lists which text the sampler uses for which steps
    (1-based, inclusive) at ``steps`` steps; the attention, chunks and counter are those of the
    longest scheduled text, as A1111's counter shows. With ``emphasis`` "None" brackets are
    plain text."""
    text, networks = split_extra_networks(prompt)
    attention = emphasis != "None"
    schedule = prompt_schedule(text, steps)
    tokenizer = get_clip_tokenizer()
    counts = {
        variant: count_prompt_tokens(
            variant, embeddings=embeddings, tokenizer=tokenizer, attention=attention
        )
        for variant in schedule.texts
    }
    longest = max(counts, key=lambda variant: counts[variant].token_count)
    counted = counts[longest]
    runs = parse_attention_runs(longest) if attention else [AttentionRun(longest)]
    return {
        "prompt": prompt,
        "extra_networks": [
            {"kind": n.kind, "name": n.name, "args": list(n.args)} for n in networks
        ],
        "steps": schedule.steps,
        "schedule": [
            {
                "first_step": span.first,
                "last_step": span.last,
                "text": span.text,
                "token_count": counts[span.text].token_count,
            }
            for span in schedule.spans()
        ],
        "emphasis": emphasis,
        "attention": [list(run.as_tuple()) for run in runs],
        "chunks": [{"tokens": len(chunk)} for chunk in counted.chunks],
        "token_count": counted.token_count,
        "limit": counted.limit,
        "counter": counted.counter,
    }


def _steps_label(span: Mapping[str, Any]) -> str:
    first, last = span["first_step"], span["last_step"]
    return f"step {first}" if first == last else f"steps {first}–{last}"


def format_schedule(report: Mapping[str, Any]) -> str:
    """``steps 1–16: a cat; steps 17–30: a dog`` from a :func:`prompt_report`."""
    return "; ".join(f"{_steps_label(span)}: {span['text']}" for span in report["schedule"])


def format_prompt_report(report: Mapping[str, Any]) -> str:
    """Human-readable form of :func:`prompt_report` for the command line."""
    lines = []
    if len(report.get("schedule", ())) > 1:
        lines.append(f"Schedule ({report['steps']} steps):")
        for span in report["schedule"]:
            text = json.dumps(span["text"], ensure_ascii=False)
            lines.append(f"  {_steps_label(span)}: {text} ({span['token_count']} tokens)")
        lines.append("Attention (longest scheduled text):")
    else:
        lines.append("Attention:")
    for text, weight in report["attention"]:
        if text == "BREAK" and weight == -1:
            lines.append("  ------  BREAK")
        elif text:
            lines.append(f"  {weight:6.4f}  {json.dumps(text, ensure_ascii=False)}")
    lines.append("Chunks:")
    for i, chunk in enumerate(report["chunks"], start=1):
        lines.append(f"  {i}: {chunk['tokens']}/{CHUNK_LENGTH}")
    lines.append(f"Tokens: {report['counter']}")
    for network in report.get("extra_networks", []):
        args = ":".join(network["args"])
        lines.append(
            f"Extra network: {network['kind']} {network['name']}" + (f" ({args})" if args else "")
        )
    return "\n".join(lines)
