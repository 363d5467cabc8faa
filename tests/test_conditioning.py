"""A1111 prompt -> CLIP conditioning on a tiny random CLIP text model and the real tokenizer."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from charstudio.engine.conditioning import (
    PromptEncoder,
    check_prompt_embeddings,
    encode_prompt,
    pad_to_same_length,
    prompt_embeddings,
    tokenize_prompt,
)
from charstudio.engine.embeddings import EmbeddingError, EmbeddingLibrary, save_a1111_pt
from charstudio.prompts import ClipTokenizer, get_clip_tokenizer

from .weights import set_random_weights

Encode = Callable[..., torch.Tensor]

WIDTH = 32  # the real SD 1.x width is 768; the code takes it from the model


@pytest.fixture(scope="module")
def tokenizer() -> ClipTokenizer:
    return get_clip_tokenizer()


@pytest.fixture(scope="module")
def text_encoder() -> torch.nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=WIDTH,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    return set_random_weights(CLIPTextModel(config), 0).eval()


@pytest.fixture
def encode(text_encoder: torch.nn.Module, tokenizer: ClipTokenizer) -> Encode:
    def run(prompt: str, **kwargs: object) -> torch.Tensor:
        return encode_prompt(prompt, text_encoder=text_encoder, tokenizer=tokenizer, **kwargs)

    return run


def raw_chunk(
    text_encoder: torch.nn.Module, tokenizer: ClipTokenizer, tokens: list[int]
) -> torch.Tensor:
    """The encoder's plain output for BOS + tokens + EOS padding, [77, width]."""
    ids = [tokenizer.bos_id, *tokens, *[tokenizer.eos_id] * (76 - len(tokens))]
    with torch.no_grad():
        return text_encoder(input_ids=torch.tensor([ids])).last_hidden_state[0]


def words(n: int) -> str:
    return " ".join(["a"] * n)  # "a" is one token


# -- chunks ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "chunks"),
    [
        ("", 1),
        (words(1), 1),
        (words(75), 1),
        (words(76), 2),
        (words(150), 2),
        (words(151), 3),
        ("a photo BREAK of a woman", 2),
        ("BREAK a", 2),
        ("a BREAK", 1),
    ],
)
def test_shapes(encode: Encode, prompt: str, chunks: int) -> None:
    z = encode(prompt)
    assert z.shape == (1, 77 * chunks, WIDTH)
    assert z.dtype == torch.float32 and not z.requires_grad


def test_chunks_are_encoded_independently(encode: Encode) -> None:
    long = encode(words(75) + " photo")
    assert torch.allclose(long[:, :77], encode(words(75)), atol=1e-6)
    assert torch.allclose(long[:, 77:], encode("photo"), atol=1e-6)
    broken = encode("a photo BREAK of a woman")
    assert torch.allclose(broken[:, :77], encode("a photo"), atol=1e-6)
    assert torch.allclose(broken[:, 77:], encode("of a woman"), atol=1e-6)


def test_chunk_is_bos_tokens_eos_padding(
    encode: Encode, text_encoder: torch.nn.Module, tokenizer: ClipTokenizer
) -> None:
    expected = raw_chunk(text_encoder, tokenizer, tokenizer.encode("a photo of a woman"))
    assert torch.allclose(encode("a photo of a woman")[0], expected, atol=1e-6)


def test_extra_network_tags_are_removed(encode: Encode) -> None:
    assert torch.equal(encode("a photo <lora:fr3nch:0.8>, red"), encode("a photo , red"))


def test_device_and_dtype(encode: Encode) -> None:
    z = encode("a photo", device="cpu", dtype=torch.float16)
    assert z.dtype == torch.float16 and z.device.type == "cpu"


# -- attention weights -----------------------------------------------------------------------


def test_weight_one_equals_unweighted(encode: Encode) -> None:
    assert torch.equal(encode("a (photo:1.0) of a woman"), encode("a photo of a woman"))


def test_weights_follow_a1111s_mean_restoring_formula(
    encode: Encode, text_encoder: torch.nn.Module, tokenizer: ClipTokenizer
) -> None:
    ids = tokenizer.encode("a photo of a woman")
    z = raw_chunk(text_encoder, tokenizer, ids)
    mults = torch.ones(77)
    mults[2] = 1.5  # "photo" (position 0 is BOS)
    mults[5] = 1 / 1.1  # "[woman]"

    weighted = encode("a (photo:1.5) of a [woman]")[0]
    assert not torch.allclose(weighted, z)
    scaled = z * mults[:, None]
    assert torch.allclose(weighted, scaled * (z.mean() / scaled.mean()), atol=1e-6)
    assert torch.allclose(weighted.mean(), z.mean(), atol=1e-6)  # the mean is restored

    no_norm = encode("a (photo:1.5) of a [woman]", emphasis="No norm")[0]
    assert torch.allclose(no_norm, scaled, atol=1e-6)
    with pytest.raises(ValueError, match="emphasis"):
        encode("a", emphasis="Bogus")


def test_a_zero_mean_chunk_never_gives_nan(
    text_encoder: torch.nn.Module, tokenizer: ClipTokenizer
) -> None:
    # A final LayerNorm of weight 0 and bias 0 makes every output exactly 0: A1111's mean
    # restoration would divide 0 by 0 and turn the whole conditioning into NaN.
    zero = copy.deepcopy(text_encoder)
    norms = [m for name, m in zero.named_modules() if name.endswith("final_layer_norm")]
    with torch.no_grad():
        for norm in norms:
            norm.weight.zero_()
            norm.bias.zero_()
    for prompt in ("a photo of a woman", "a (photo:1.5) of a [woman]", "(a:0)"):
        z = encode_prompt(prompt, text_encoder=zero, tokenizer=tokenizer)
        assert torch.isfinite(z).all(), prompt
        assert torch.equal(z, torch.zeros_like(z)), prompt


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_a_tiny_mean_is_not_blown_up(dtype: torch.dtype) -> None:
    from charstudio.engine.conditioning import _apply_emphasis

    # Values whose weighted mean is almost zero: restoring the original mean would multiply
    # by ~2e6 (inf in half precision). The weighted values are kept instead.
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=dtype)
    multipliers = torch.tensor([1.0, 1e-6 - 1.0])
    out = _apply_emphasis(z, multipliers, "Original")
    assert torch.isfinite(out).all()
    assert torch.equal(out, z * multipliers.unsqueeze(-1))
    # An ordinary chunk still gets A1111's restoration.
    z = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=dtype)
    multipliers = torch.tensor([1.0, 1.5])
    weighted = z * multipliers.unsqueeze(-1)
    out = _apply_emphasis(z, multipliers, "Original")
    assert torch.equal(out, weighted * (z.mean() / weighted.mean()))


def test_weights_in_a_later_chunk(encode: Encode) -> None:
    plain, weighted = encode(words(75) + " photo"), encode(words(75) + " (photo:1.3)")
    assert torch.equal(plain[:, :77], weighted[:, :77])
    assert not torch.allclose(plain[:, 77:], weighted[:, 77:])


# -- clip skip -------------------------------------------------------------------------------


def test_clip_skip(encode: Encode, text_encoder: torch.nn.Module, tokenizer: ClipTokenizer) -> None:
    prompt = "a photo of a woman"
    ids = [tokenizer.bos_id, *tokenizer.encode(prompt)]
    ids += [tokenizer.eos_id] * (77 - len(ids))
    with torch.no_grad():
        out = text_encoder(input_ids=torch.tensor([ids]), output_hidden_states=True)
        penultimate = text_encoder.final_layer_norm(out.hidden_states[-2])
        third = text_encoder.final_layer_norm(out.hidden_states[-3])

    one, two = encode(prompt), encode(prompt, clip_skip=2)
    assert not torch.allclose(one, two)
    assert torch.allclose(two, penultimate, atol=1e-6)
    assert torch.allclose(encode(prompt, clip_skip=3), third, atol=1e-6)
    for bad in (0, 4):
        with pytest.raises(ValueError, match="clip skip"):
            encode(prompt, clip_skip=bad)


# -- textual inversion -----------------------------------------------------------------------


def manual_injection(
    text_encoder: torch.nn.Module,
    tokenizer: ClipTokenizer,
    before: str,
    vectors: torch.Tensor,
    after: str,
) -> torch.Tensor:
    """Encode with the vectors written into spare rows of a copy's embedding table."""
    model = copy.deepcopy(text_encoder)
    spare = list(range(1000, 1000 + len(vectors)))
    with torch.no_grad():
        model.embeddings.token_embedding.weight[spare] = vectors
    return raw_chunk(
        model, tokenizer, [*tokenizer.encode(before), *spare, *tokenizer.encode(after)]
    )


def test_embedding_vectors_are_injected(
    encode: Encode, text_encoder: torch.nn.Module, tokenizer: ClipTokenizer
) -> None:
    vec = torch.randn(2, WIDTH, generator=torch.Generator().manual_seed(1))
    z = encode("a photo of fr3nch woman", embeddings={"fr3nch": vec})
    expected = manual_injection(text_encoder, tokenizer, "a photo of", vec, "woman")
    assert torch.allclose(z[0], expected, atol=1e-6)
    # Case follows the tokenizer (lowercase), as in A1111.
    assert torch.equal(encode("a photo of FR3NCH woman", embeddings={"fr3nch": vec}), z)
    # Without the embedding the name is plain text.
    assert not torch.allclose(encode("a photo of fr3nch woman"), z)


def test_single_vector_tensor_and_weighted_embedding(
    encode: Encode, text_encoder: torch.nn.Module, tokenizer: ClipTokenizer
) -> None:
    vec = torch.randn(WIDTH, generator=torch.Generator().manual_seed(2))
    z = encode("a fr3nch", embeddings={"fr3nch": vec})
    assert torch.allclose(z[0], manual_injection(text_encoder, tokenizer, "a", vec[None], ""))
    weighted = encode("a (fr3nch:1.2)", embeddings={"fr3nch": vec})
    mults = torch.ones(77)
    mults[2] = 1.2
    scaled = z[0] * mults[:, None]
    assert torch.allclose(weighted[0], scaled * (z[0].mean() / scaled.mean()), atol=1e-6)


def test_multi_vector_embedding_takes_n_slots(encode: Encode, tokenizer: ClipTokenizer) -> None:
    vec = torch.randn(3, WIDTH)
    tokens = tokenize_prompt("a fr3nch", tokenizer=tokenizer, embeddings={"fr3nch": vec})
    assert tokens.token_count == 4
    # 74 words + 3 vectors do not fit in one chunk: the embedding moves whole to the next.
    z = encode(words(74) + " fr3nch", embeddings={"fr3nch": vec})
    assert z.shape == (1, 154, WIDTH)
    assert torch.allclose(z[:, 77:], encode("fr3nch", embeddings={"fr3nch": vec}), atol=1e-6)


def test_library_embeddings_equal_tensors(encode: Encode, tmp_path: Path) -> None:
    vec = torch.randn(2, WIDTH)
    save_a1111_pt(tmp_path / "fr3nch.pt", "fr3nch", vec, 10)
    library = EmbeddingLibrary([tmp_path], width=WIDTH)
    prompt = "photo of (fr3nch:1.1), <lora:x:1> smiling"
    assert torch.equal(
        encode(prompt, embeddings=library), encode(prompt, embeddings={"fr3nch": vec})
    )
    assert prompt_embeddings(prompt, library) == ["fr3nch"]
    assert prompt_embeddings("fr3nch and fr3nch", {"fr3nch": vec}) == ["fr3nch"]
    assert prompt_embeddings("a photo", library) == []


def test_wrong_width_embedding_is_an_error(encode: Encode) -> None:
    with pytest.raises(EmbeddingError, match=r"768 wide.*needs 32"):
        encode("a fr3nch", embeddings={"fr3nch": torch.randn(1, 768)})


def test_embedding_longer_than_a_chunk_is_an_error(encode: Encode) -> None:
    with pytest.raises(ValueError, match="at most 75"):
        encode("fr3nch", embeddings={"fr3nch": torch.randn(76, WIDTH)})


def test_check_prompt_embeddings_reports_broken_files(tmp_path: Path) -> None:
    save_a1111_pt(tmp_path / "good.pt", "good", torch.randn(1, WIDTH))
    save_a1111_pt(tmp_path / "wide.pt", "wide", torch.randn(1, 768))
    library = EmbeddingLibrary([tmp_path], width=WIDTH)
    assert check_prompt_embeddings("a photo of good", library) == []
    problems = check_prompt_embeddings("good, (wide:1.2) and wide", library)
    assert len(problems) == 1 and "wide.pt" in problems[0] and "768" in problems[0]
    assert check_prompt_embeddings("plain words", EmbeddingLibrary([tmp_path / "none"])) == []


def test_gradient_reaches_injected_vectors(encode: Encode) -> None:
    vec = torch.randn(2, WIDTH, requires_grad=True)
    z = encode("a fr3nch", embeddings={"fr3nch": vec}, requires_grad=True)
    z.sum().backward()
    assert vec.grad is not None and vec.grad.abs().sum() > 0


# -- negative prompt padding -----------------------------------------------------------------


def test_pad_to_same_length(encode: Encode) -> None:
    empty = encode("")
    cond, uncond = encode(words(80)), encode("blurry")
    padded_cond, padded_uncond = pad_to_same_length(cond, uncond, empty)
    assert padded_cond is cond
    assert padded_uncond.shape == cond.shape
    assert torch.equal(padded_uncond[:, :77], uncond)
    assert torch.equal(padded_uncond[:, 77:], empty)

    long_uncond = encode(words(200))
    c, u = pad_to_same_length(uncond, long_uncond, empty)
    assert c.shape == u.shape == (1, 231, WIDTH)
    assert torch.equal(c[:, 154:], empty)

    batch = uncond.repeat(2, 1, 1)
    c, u = pad_to_same_length(cond.repeat(2, 1, 1), batch, empty)
    assert u.shape == (2, 154, WIDTH)


def test_prompt_encoder(
    text_encoder: torch.nn.Module, tokenizer: ClipTokenizer, encode: Encode
) -> None:
    vec = torch.randn(2, WIDTH)
    encoder = PromptEncoder(text_encoder, tokenizer=tokenizer, embeddings={"fr3nch": vec})
    cond, uncond = encoder.encode_pair(words(80) + " fr3nch", "blurry")
    assert cond.shape == uncond.shape == (1, 154, WIDTH)
    assert torch.equal(uncond[:, 77:], encode(""))
    assert encoder.empty() is encoder.empty()
    cond, uncond = encoder.encode_pair(words(80), "blurry", pad=False)
    assert uncond.shape == (1, 77, WIDTH)
    assert encoder.used_embeddings("fr3nch smiling") == {"fr3nch": None}


def test_half_precision_encoder_promotes_like_a1111(
    text_encoder: torch.nn.Module, tokenizer: ClipTokenizer
) -> None:
    # A1111's float32 multipliers promote a half-precision z; the caller picks the final dtype.
    half = copy.deepcopy(text_encoder).to(torch.bfloat16)
    z = encode_prompt("a (photo:1.2)", text_encoder=half, tokenizer=tokenizer)
    assert z.dtype == torch.float32
    z = encode_prompt("a (photo:1.2)", text_encoder=half, tokenizer=tokenizer, dtype=torch.bfloat16)
    assert z.dtype == torch.bfloat16
