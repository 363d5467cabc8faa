"""A1111 prompts -> CLIP conditioning, as A1111's ``FrozenCLIPEmbedderWithCustomWords`` does.

What A1111 does, and this module with it:

* Extra-network tags (``<lora:x:0.8>``) are removed before anything else.
* The prompt is split into chunks of 75 tokens by :func:`count_prompt_tokens` (BREAK, comma
  backtracking, embeddings never split across chunks).
* Each chunk becomes 77 ids: BOS, its tokens, padding with EOS up to 75 (SD 1.x pads with the
  end token), EOS. Chunks are encoded independently and concatenated along the token axis, so
  a prompt of k chunks gives ``[1, 77 * k, width]``.
* Textual-inversion vectors replace the token embeddings at their placeholder positions (A1111
  wraps the token-embedding module; we hook its output), before position embeddings are added.
* Clip skip N (A1111's "stop at last layers"): N = 1 is the final output; N > 1 takes the
  hidden state N layers from the end and applies ``final_layer_norm`` to it.
* Emphasis "Original" (A1111's default): ``z *= weights`` per token, then ``z *= old_mean /
  new_mean`` over the chunk so the overall mean is unchanged. "No norm" skips the rescale.
  "None" ignores the attention syntax: brackets, weights and BREAK are plain text.
* Prompt editing ``[a:b:when]`` and alternation ``[a|b]`` (A1111's extras) make the
  conditioning change during sampling: :meth:`PromptEncoder.schedule` works out the prompt's
  schedule (:mod:`charstudio.prompts.schedule`), encodes each distinct text once, and the
  sampler asks the resulting :class:`ConditioningSchedule` for every step's conditioning.

torch is imported inside functions so importing this module stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from charstudio.engine.embeddings import Embedding, EmbeddingError, EmbeddingLibrary
from charstudio.prompts import (
    CHUNK_LENGTH,
    ClipTokenizer,
    PromptTokens,
    count_prompt_tokens,
    get_clip_tokenizer,
    prompt_schedule,
    split_extra_networks,
)
from charstudio.prompts.attention import EMPHASIS_MODES
from charstudio.prompts.schedule import schedule_index
from charstudio.prompts.token_count import COMMA_BACKTRACK

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import torch

__all__ = [
    "EMPHASIS_MODES",
    "ConditioningSchedule",
    "EmbeddingsArg",
    "PromptEncoder",
    "check_prompt_embeddings",
    "encode_prompt",
    "pad_to_same_length",
    "prompt_embeddings",
    "tokenize_prompt",
]

EmbeddingsArg = EmbeddingLibrary | Mapping[str, "torch.Tensor"] | None


def _text_model(text_encoder: Any) -> Any:
    # transformers 4 nests the layers under ``text_model``; transformers 5 flattened them.
    return getattr(text_encoder, "text_model", text_encoder)


def _embedding_counts(embeddings: EmbeddingsArg) -> dict[str, int]:
    if embeddings is None:
        return {}
    if isinstance(embeddings, EmbeddingLibrary):
        return embeddings.names()
    counts: dict[str, int] = {}
    for name, vectors in embeddings.items():
        counts[name] = 1 if vectors.ndim == 1 else int(vectors.shape[0])
    return counts


def _embedding_vectors(embeddings: EmbeddingsArg, name: str) -> torch.Tensor:
    assert embeddings is not None
    if isinstance(embeddings, EmbeddingLibrary):
        return embeddings.get(name).vectors
    vectors = embeddings[name]
    return vectors.unsqueeze(0) if vectors.ndim == 1 else vectors


def tokenize_prompt(
    prompt: str,
    *,
    tokenizer: ClipTokenizer | None = None,
    embeddings: EmbeddingsArg = None,
    comma_backtrack: int = COMMA_BACKTRACK,
    attention: bool = True,
) -> PromptTokens:
    """The prompt's A1111 chunks, extra-network tags removed, embeddings placed;
    ``attention=False`` reads brackets as text (emphasis "None")."""
    text, _networks = split_extra_networks(prompt)
    return count_prompt_tokens(
        text,
        embeddings=_embedding_counts(embeddings),
        tokenizer=tokenizer if tokenizer is not None else get_clip_tokenizer(),
        comma_backtrack=comma_backtrack,
        attention=attention,
    )


@contextmanager
def _inject_vectors(
    token_embedding: Any, fixes: list[tuple[int, int, torch.Tensor]]
) -> Iterator[None]:
    """Replace rows of the token-embedding output: ``(chunk, position, vectors)`` each.

    A forward hook keeps the text encoder's own forward (attention implementation, causal mask,
    hidden-state capture) untouched across transformers versions, which ``inputs_embeds`` does
    not: transformers 5's CLIPTextModel no longer accepts it.
    """
    if not fixes:
        yield
        return

    def hook(_module: Any, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        for chunk, position, vectors in fixes:
            output[chunk, position : position + vectors.shape[0]] = vectors.to(
                output.device, output.dtype
            )
        return output

    handle = token_embedding.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


# Real prompts restore the mean with a ratio near 1 / (average weight), well inside this bound;
# beyond it the means are degenerate (near zero) and the rescale would only amplify noise.
MAX_MEAN_RESTORE = 1e3


def _apply_emphasis(z: torch.Tensor, multipliers: torch.Tensor, emphasis: str) -> torch.Tensor:
    """A1111's emphasis on one chunk's ``[77, width]`` output.

    The dtypes follow A1111's: float32 multipliers promote an fp16 ``z`` to float32, while the
    original mean is taken in the encoder's dtype.
    """
    if emphasis == "None":  # every weight is 1 and A1111 leaves the output alone
        return z
    weighted = z * multipliers.unsqueeze(-1)
    if emphasis == "No norm":
        return weighted
    # Restoring the mean "is likely not correct, but it seems to work well to prevent artifacts"
    # (A1111's own comment); reproduced as is because it shapes every weighted image. A1111
    # divides blindly, so a zero or tiny mean gives NaN or inf conditioning (black images);
    # when the ratio is not a sane finite number there is no mean to restore, and the weighted
    # chunk is kept as "No norm" would.
    ratio = z.mean() / weighted.mean()
    check = float(ratio.detach())
    if not math.isfinite(check) or abs(check) > MAX_MEAN_RESTORE:
        return weighted
    return weighted * ratio


def encode_prompt(
    prompt: str,
    *,
    text_encoder: Any,
    tokenizer: ClipTokenizer | None = None,
    embeddings: EmbeddingsArg = None,
    clip_skip: int = 1,
    emphasis: str = "Original",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    comma_backtrack: int = COMMA_BACKTRACK,
    requires_grad: bool = False,
) -> torch.Tensor:
    """Encode an A1111 prompt to ``[1, 77 * chunks, width]`` conditioning.

    ``text_encoder`` is a transformers ``CLIPTextModel``; the encoding runs on its device and in
    its dtype, and the result is moved to ``device``/``dtype`` when given. ``embeddings`` are
    the textual inversions the prompt may name (a library, or name -> ``[n, width]`` vectors).
    ``requires_grad`` keeps autograd on (e.g. to train through the injected vectors).
    The prompt is encoded as written: prompt editing and alternation are resolved before, by
    :meth:`PromptEncoder.schedule`.
    """
    import torch

    model = _text_model(text_encoder)
    token_embedding = model.embeddings.token_embedding
    weight = token_embedding.weight
    width = int(weight.shape[1])
    n_layers = len(model.encoder.layers)
    if not 1 <= clip_skip <= n_layers:
        raise ValueError(f"clip skip must be between 1 and {n_layers}, got {clip_skip}")
    if emphasis not in EMPHASIS_MODES:
        raise ValueError(f"unknown emphasis mode {emphasis!r}; expected one of {EMPHASIS_MODES}")

    tokenizer = tokenizer if tokenizer is not None else get_clip_tokenizer()
    tokens = tokenize_prompt(
        prompt,
        tokenizer=tokenizer,
        embeddings=embeddings,
        comma_backtrack=comma_backtrack,
        attention=emphasis != "None",
    )

    ids: list[list[int]] = []
    mults: list[list[float]] = []
    for chunk, chunk_weights in zip(tokens.chunks, tokens.weights, strict=True):
        padding = CHUNK_LENGTH - len(chunk)
        if padding < 0:  # only an embedding of more than 75 vectors can overflow a chunk
            raise ValueError(f"a prompt chunk holds {len(chunk)} tokens; at most 75 fit")
        ids.append([tokenizer.bos_id, *chunk, *[tokenizer.eos_id] * padding, tokenizer.eos_id])
        mults.append([1.0, *chunk_weights, *[1.0] * padding, 1.0])

    fixes: list[tuple[int, int, torch.Tensor]] = []
    for slot in tokens.embeddings:
        vectors = _embedding_vectors(embeddings, slot.name)
        if vectors.shape[-1] != width:
            raise EmbeddingError(
                f"embedding {slot.name!r} has vectors {vectors.shape[-1]} wide; "
                f"this text encoder needs {width}"
            )
        fixes.append((slot.chunk, slot.offset + 1, vectors))  # +1: the BOS before the chunk

    input_ids = torch.tensor(ids, dtype=torch.long, device=weight.device)
    multipliers = torch.tensor(mults, dtype=torch.float32, device=weight.device)
    with torch.set_grad_enabled(requires_grad), _inject_vectors(token_embedding, fixes):
        # All chunks in one batch: each row is encoded independently, as A1111's per-chunk calls.
        out = text_encoder(input_ids=input_ids, output_hidden_states=clip_skip > 1)
        if clip_skip > 1:
            z = model.final_layer_norm(out.hidden_states[-clip_skip])
        else:
            z = out.last_hidden_state
        z = torch.stack([_apply_emphasis(z[i], multipliers[i], emphasis) for i in range(len(z))])

    z = z.reshape(1, -1, width)
    return z.to(device=device if device is not None else z.device, dtype=dtype or z.dtype)


def pad_to_same_length(
    cond: torch.Tensor, uncond: torch.Tensor, empty: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Give ``cond`` and ``uncond`` the same number of 77-token chunks by appending ``empty``.

    ``empty`` is the encoding of the empty prompt (one chunk, ``encode_prompt("")``), as in
    A1111's "Pad prompt/negative prompt to be same length" option. (With that option off,
    A1111's default, it runs the UNet separately for cond and uncond instead; that equals
    attending to the unpadded tensors.)
    """
    import torch

    chunk = empty.shape[1]
    if cond.shape[1] % chunk or uncond.shape[1] % chunk:
        raise ValueError("conditioning lengths must be whole multiples of the empty encoding")
    diff = (cond.shape[1] - uncond.shape[1]) // chunk

    def pad(t: torch.Tensor, repeats: int) -> torch.Tensor:
        filler = empty.to(t.device, t.dtype).repeat(t.shape[0], repeats, 1)
        return torch.cat([t, filler], dim=1)

    if diff > 0:
        uncond = pad(uncond, diff)
    elif diff < 0:
        cond = pad(cond, -diff)
    return cond, uncond


def prompt_embeddings(
    prompt: str, embeddings: EmbeddingsArg, *, tokenizer: ClipTokenizer | None = None
) -> list[str]:
    """Names of the embeddings the prompt uses, in order of first use (for "TI hashes")."""
    used: list[str] = []
    for slot in tokenize_prompt(prompt, tokenizer=tokenizer, embeddings=embeddings).embeddings:
        if slot.name not in used:
            used.append(slot.name)
    return used


def check_prompt_embeddings(
    prompt: str, library: EmbeddingLibrary, *, tokenizer: ClipTokenizer | None = None
) -> list[str]:
    """Problems to report before a job starts: embedding files the prompt names that can't load.

    A1111 reads any word that is not an embedding as text, so a *missing* embedding cannot be
    told from a word. What can be told: the prompt names a file that exists but is unusable
    (wrong width, several terms, unsafe pickle, corrupt). A1111 then silently uses the name as
    text; we report it. Names the job refers to explicitly (a sweep's embedding axis, the
    project's token) are checked with :meth:`EmbeddingLibrary.missing`.
    """
    broken = library.errors()
    if not broken:
        return []
    # Match usable and broken names together so overlapping names resolve as they would.
    counts = {**dict.fromkeys(broken, 1), **library.names()}
    text, _networks = split_extra_networks(prompt)
    tokens = count_prompt_tokens(text, embeddings=counts, tokenizer=tokenizer)
    problems: list[str] = []
    for slot in tokens.embeddings:
        message = broken.get(slot.name)
        if message is not None and message not in problems:
            problems.append(message)
    return problems


class ConditioningSchedule:
    """The conditioning for each sampling step: what the sampler asks for at every step.

    ``cond`` and ``uncond`` are A1111 schedules, ``(end_at_step, tensor)`` ascending; at
    sampler call ``step`` (0-based) each uses its first entry whose end is at least ``step``
    (A1111's ``reconstruct_cond_batch``). ``empty`` gives the empty prompt's encoding, asked
    for only when a pair differs in length, to pad the shorter to the same number of chunks;
    without it the pairs must already match.
    A prompt without prompt editing or alternation has a single entry.
    """

    def __init__(
        self,
        cond: list[tuple[int, torch.Tensor]],
        uncond: list[tuple[int, torch.Tensor]],
        *,
        empty: Callable[[], torch.Tensor] | None = None,
    ) -> None:
        if not cond or not uncond:
            raise ValueError("a conditioning schedule needs at least one entry each")
        self.cond = cond
        self.uncond = uncond
        self.empty = empty
        self._pairs: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def constant(cls, cond: torch.Tensor, uncond: torch.Tensor) -> ConditioningSchedule:
        """The same (already padded) pair for every step (past its end, A1111's lookup falls
        back to the first entry)."""
        return cls([(0, cond)], [(0, uncond)])

    @property
    def is_scheduled(self) -> bool:
        return len(self.cond) > 1 or len(self.uncond) > 1

    def indices(self, step: int) -> tuple[int, int]:
        """Which cond and uncond entries sampler call ``step`` (0-based) uses."""
        return (
            schedule_index([end for end, _ in self.cond], step),
            schedule_index([end for end, _ in self.uncond], step),
        )

    def at(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cond, uncond)`` for sampler call ``step`` (0-based), padded to the same length."""
        key = self.indices(step)
        pair = self._pairs.get(key)
        if pair is None:
            cond, uncond = self.cond[key[0]][1], self.uncond[key[1]][1]
            if cond.shape[1] != uncond.shape[1] and self.empty is not None:
                cond, uncond = pad_to_same_length(cond, uncond, self.empty())
            pair = self._pairs[key] = (cond, uncond)
        return pair


class PromptEncoder:
    """Encodes a job's prompts with fixed settings; caches the empty-prompt encoding."""

    def __init__(
        self,
        text_encoder: Any,
        *,
        tokenizer: ClipTokenizer | None = None,
        embeddings: EmbeddingsArg = None,
        clip_skip: int = 1,
        emphasis: str = "Original",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer if tokenizer is not None else get_clip_tokenizer()
        self.embeddings = embeddings
        self.clip_skip = clip_skip
        self.emphasis = emphasis
        self.device = device
        self.dtype = dtype
        self._empty: torch.Tensor | None = None

    def encode(self, prompt: str) -> torch.Tensor:
        return encode_prompt(
            prompt,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            embeddings=self.embeddings,
            clip_skip=self.clip_skip,
            emphasis=self.emphasis,
            device=self.device,
            dtype=self.dtype,
        )

    def empty(self) -> torch.Tensor:
        """The empty prompt's encoding (A1111's ``cond_stage_model_empty_prompt``)."""
        if self._empty is None:
            self._empty = self.encode("")
        return self._empty

    def encode_pair(
        self, prompt: str, negative_prompt: str, *, pad: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cond, uncond)``; with ``pad`` both get the same number of chunks."""
        cond, uncond = self.encode(prompt), self.encode(negative_prompt)
        if pad and cond.shape[1] != uncond.shape[1]:
            cond, uncond = pad_to_same_length(cond, uncond, self.empty())
        return cond, uncond

    def schedule(self, prompt: str, negative_prompt: str, steps: int) -> ConditioningSchedule:
        """Both prompts' conditioning for ``steps`` sampling steps, following their prompt
        editing and alternation (A1111's ``get_learned_conditioning``); each distinct text is
        encoded once. Extra-network tags are removed first, as A1111 does."""
        encoded: dict[str, torch.Tensor] = {}

        def entries(text: str) -> list[tuple[int, torch.Tensor]]:
            plain, _networks = split_extra_networks(text)
            result = []
            for end, variant in prompt_schedule(plain, steps).entries:
                if variant not in encoded:
                    encoded[variant] = self.encode(variant)
                result.append((end, encoded[variant]))
            return result

        cond, uncond = entries(prompt), entries(negative_prompt)
        return ConditioningSchedule(cond, uncond, empty=self.empty)

    def used_embeddings(self, prompt: str) -> dict[str, Embedding | None]:
        """Embeddings a prompt uses -> their :class:`Embedding` (None for plain tensors)."""
        names = prompt_embeddings(prompt, self.embeddings, tokenizer=self.tokenizer)
        library = self.embeddings if isinstance(self.embeddings, EmbeddingLibrary) else None
        return {name: library.get(name) if library else None for name in names}
