"""A new embedding's starting vectors, from its initialization text, as A1111 makes them.

A1111 (``create_embedding``): the init text is tokenized without BOS/EOS and cut to the first
``n`` tokens; those tokens' rows of CLIP's token-embedding table are looked up; vector ``i`` of
``n`` is row ``i * L // n`` of the ``L`` looked-up rows. So the rows are *stretched*, not
cycled: ``woman`` (1 token) with 2 vectors gives [woman, woman]; a 2-token text with 4 vectors
gives [t0, t0, t1, t1]; a 3-token text with 2 vectors gives [t0, t1]. An empty init text gives
zero vectors. The vectors are float32 ``[n, width]`` whatever the model's precision.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from charstudio.prompts import ClipTokenizer, get_clip_tokenizer

if TYPE_CHECKING:
    import torch

__all__ = ["init_rows", "initial_vectors"]


def init_rows(token_count: int, n_vectors: int) -> list[int]:
    """Which looked-up token row each vector starts from (A1111's ``i * L // n``)."""
    return [i * token_count // n_vectors for i in range(n_vectors)]


def initial_vectors(
    text_encoder: Any,
    init_text: str,
    n_vectors: int,
    *,
    tokenizer: ClipTokenizer | None = None,
) -> torch.Tensor:
    """Starting vectors for a new embedding: float32 ``[n_vectors, width]`` on the CPU."""
    import torch

    tokenizer = tokenizer if tokenizer is not None else get_clip_tokenizer()
    model = getattr(text_encoder, "text_model", text_encoder)
    table = model.embeddings.token_embedding.weight
    vectors = torch.zeros((n_vectors, int(table.shape[1])), dtype=torch.float32)
    ids = tokenizer.encode(init_text)[:n_vectors] if init_text and init_text.strip() else []
    if not ids:
        return vectors
    with torch.no_grad():
        rows = table[torch.tensor(ids, device=table.device)].detach().to("cpu", torch.float32)
    for i, row in enumerate(init_rows(len(ids), n_vectors)):
        vectors[i] = rows[row]
    return vectors
