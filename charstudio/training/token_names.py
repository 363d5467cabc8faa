"""Checks on an embedding's name, which is also the word typed in prompts to use it.

A1111 finds an embedding in a prompt by the CLIP tokens of its file name, so the name must be a
usable file name, on Windows too (``con`` or ``nul`` are devices there), and should be a
made-up word: a name CLIP already knows (``woman``, ``emma``, ``red_hair``) makes the
placeholder fight the word's meaning wherever the name is typed, and the training starts from a
concept the artist did not choose. That is a warning, not an error.
"""

from __future__ import annotations

import re

from charstudio.portable_paths import windows_name_problem
from charstudio.prompts import ClipTokenizer, get_clip_tokenizer

__all__ = ["token_name_problems", "token_name_warnings"]

# The project token's rule (it is typed in prompts and becomes file names).
_NAME = re.compile(r"[A-Za-z0-9_\-]+")
_LETTER_RUNS = re.compile(r"[^\W\d_]+")
# Shorter letter runs are mostly syllables and abbreviations ("fr", "dy"), not words.
_MIN_WORD = 3
_MAX_LENGTH = 64


def token_name_problems(name: str) -> list[str]:
    """Why ``name`` cannot be an embedding name (an empty list when it can)."""
    if not isinstance(name, str) or not name.strip():
        return ["the embedding needs a name (the token typed in prompts, e.g. fr3nchl4dy)"]
    if not _NAME.fullmatch(name):
        return [
            f"embedding name {name!r}: use letters, digits, '_' or '-' only "
            "(it is typed in prompts and becomes the file name)"
        ]
    if len(name) > _MAX_LENGTH:
        return [f"embedding name {name!r} is longer than {_MAX_LENGTH} characters"]
    problem = windows_name_problem(name, what="embedding name")  # e.g. con, nul, com1
    return [problem] if problem else []


def _whole_word_token(tokenizer: ClipTokenizer, text: str) -> str | None:
    ids = tokenizer.encode(text)
    if len(ids) != 1:
        return None
    token = tokenizer.id_to_token(ids[0])
    return token.removesuffix("</w>") if token.endswith("</w>") else None


def token_name_warnings(name: str, *, tokenizer: ClipTokenizer | None = None) -> list[str]:
    """Warnings about a name CLIP already gives a meaning to."""
    if token_name_problems(name):
        return []
    tokenizer = tokenizer if tokenizer is not None else get_clip_tokenizer()
    advice = "a made-up word such as fr3nchl4dy trains a cleaner concept"
    single = _whole_word_token(tokenizer, name)
    if single is not None:
        return [
            f"{name!r} is a single word CLIP already knows ({single!r}): the embedding will "
            f"compete with that meaning wherever the name is typed; {advice}"
        ]
    words = _LETTER_RUNS.findall(name.lower())
    known = [w for w in words if len(w) >= _MIN_WORD and _whole_word_token(tokenizer, w) == w]
    if words and len(known) == len(words):
        return [
            f"{name!r} is made of words CLIP already knows ({', '.join(known)}): the embedding "
            f"will compete with their meaning; {advice}"
        ]
    return []
