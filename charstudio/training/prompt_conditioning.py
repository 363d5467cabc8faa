"""Training prompts -> conditioning through the engine's own A1111 prompt encoder.

Every training text goes through :func:`charstudio.engine.conditioning.encode_prompt`, the
function generation uses: the embedding's name is tokenized as a placeholder of ``n`` vectors
and the trainable vectors are injected over the placeholder's token embeddings by its forward
hook (a differentiable copy, with autograd kept on), so what is trained is exactly what
generation later reads. Only the vectors receive gradients; the text encoder is frozen.

A batch usually repeats one text (one template line, no ``[filewords]``), so each distinct
text is encoded once and shared; prompts of different chunk counts are padded with the
empty-prompt chunk, as A1111 pads a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from charstudio.engine.conditioning import encode_prompt, pad_to_same_length
from charstudio.prompts import ClipTokenizer

if TYPE_CHECKING:
    import torch

__all__ = ["TrainingPromptEncoder"]


class TrainingPromptEncoder:
    """Encodes batches of training texts with the trainable vectors injected."""

    def __init__(
        self,
        text_encoder: Any,
        *,
        name: str,
        vectors: torch.Tensor,
        tokenizer: ClipTokenizer | None = None,
        clip_skip: int = 1,
    ) -> None:
        self.text_encoder = text_encoder
        self.name = name
        self.vectors = vectors
        self.tokenizer = tokenizer
        self.clip_skip = clip_skip
        self._empty: torch.Tensor | None = None

    def _encode(self, text: str, *, requires_grad: bool) -> torch.Tensor:
        return encode_prompt(
            text,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            embeddings={self.name: self.vectors},
            clip_skip=self.clip_skip,
            requires_grad=requires_grad,
        )

    def empty(self) -> torch.Tensor:
        if self._empty is None:
            self._empty = self._encode("", requires_grad=False)
        return self._empty

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """``[len(texts), 77 * chunks, width]``, differentiable in the vectors."""
        import torch

        distinct = list(dict.fromkeys(texts))
        encoded = {text: self._encode(text, requires_grad=True) for text in distinct}
        longest = max(e.shape[1] for e in encoded.values())
        for text, cond in encoded.items():
            if cond.shape[1] < longest:
                # Pad against an all-chunk reference so every text ends up the same length.
                reference = cond.new_zeros((1, longest, cond.shape[2]))
                encoded[text], _ = pad_to_same_length(cond, reference, self.empty())
        if len(distinct) == 1:
            return encoded[distinct[0]].expand(len(texts), -1, -1)
        return torch.cat([encoded[text] for text in texts])

    def uses_vectors(self, text: str) -> bool:
        """Whether ``text`` names the embedding (a line without it trains nothing)."""
        from charstudio.engine.conditioning import tokenize_prompt

        tokens = tokenize_prompt(
            text, tokenizer=self.tokenizer, embeddings={self.name: self.vectors}
        )
        return bool(tokens.embeddings)
