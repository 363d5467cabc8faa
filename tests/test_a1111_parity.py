"""The same pixels as A1111: the engine against an A1111-equivalent path (tests/a1111_reference.py,
written from k-diffusion's and A1111's published algorithms) on a tiny random-weight model with
A1111's CPU noise, and A1111's tokenizer and embedding-placement rules."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from charstudio.engine.conditioning import PromptEncoder, encode_prompt  # noqa: E402
from charstudio.engine.sampling import (  # noqa: E402
    decode_latents,
    sample_latents,
    to_uint8,
    vae_scale_factor,
)
from charstudio.prompts import EmbeddingSlot, count_prompt_tokens, get_clip_tokenizer  # noqa: E402

from . import a1111_reference as a1111  # noqa: E402
from .tiny_sd import tiny_components  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)

PROMPT = "a closeup photo of a (woman:1.2), neutral gray background"
NEGATIVE = "blurry, lowres"
SEEDS = [1234, 98765]
SIZE = 32


@pytest.fixture(scope="module")
def model():
    return tiny_components(seed=5)


def _engine(model, sampler: str, steps: int, seen: list[tuple[int, int]] | None = None):
    encoder = PromptEncoder(model.text_encoder)

    def on_step(step: int, total: int, _latents) -> None:
        if seen is not None:
            seen.append((step, total))

    latents = sample_latents(
        unet=model.unet,
        vae=model.vae,
        encoder=encoder,
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        seeds=SEEDS,
        steps=steps,
        cfg_scale=7.5,
        width=SIZE,
        height=SIZE,
        sampler=sampler,
        schedule_type=None,
        rng="CPU",
        on_step=on_step,
    )
    images = [np.asarray(im, dtype=np.uint8) for im in decode_latents(model.vae, latents)]
    return latents, images


def _reference(model, sampler: str, steps: int):
    cond, uncond = PromptEncoder(model.text_encoder).encode_pair(PROMPT, NEGATIVE)
    latents = a1111.txt2img_latents(
        sampler=sampler,
        unet=model.unet,
        cond=cond,
        uncond=uncond,
        seeds=SEEDS,
        steps=steps,
        cfg_scale=7.5,
        shape=(4, SIZE // vae_scale_factor(model.vae), SIZE // vae_scale_factor(model.vae)),
    )
    return latents, a1111.to_pixels(model.vae, latents)


@pytest.mark.parametrize(
    ("sampler", "steps"),
    [("DPM++ 2M Karras", 7), ("DPM++ 2M", 5), ("Euler a", 6), ("Euler", 6), ("DDIM", 8)],
)
def test_images_are_pixel_identical_to_a1111(model, sampler: str, steps: int) -> None:
    reference_name = "DPM++ 2M Karras" if sampler == "DPM++ 2M" else sampler  # Automatic
    ref_latents, ref_images = _reference(model, reference_name, steps)
    latents, images = _engine(model, sampler, steps)
    torch.testing.assert_close(latents, ref_latents, rtol=1e-5, atol=1e-5)
    assert len(images) == len(ref_images) == len(SEEDS)
    for image, expected in zip(images, ref_images, strict=True):
        assert image.shape == expected.shape == (SIZE, SIZE, 3)
        assert np.array_equal(image, expected)


def test_images_differ_from_one_sampler_to_the_next(model) -> None:
    # Guards the parity test against a reference that ignores its sampler.
    _, euler = _reference(model, "Euler", 6)
    _, ancestral = _reference(model, "Euler a", 6)
    _, dpm = _reference(model, "DPM++ 2M Karras", 6)
    assert not np.array_equal(euler[0], ancestral[0])
    assert not np.array_equal(euler[0], dpm[0])


def test_ddim_makes_one_unet_call_fewer_than_its_timesteps(model) -> None:
    seen: list[tuple[int, int]] = []
    _engine(model, "DDIM", 10, seen)
    # range(0, 1000, 100) + 1: ten timesteps, nine UNet calls, as A1111's progress shows.
    assert seen == [(step, 9) for step in range(1, 10)]


def test_pixels_are_truncated_as_a1111_saves_them() -> None:
    x = torch.tensor([0.0, 0.5, 0.999, 1.0, 1.5, -0.2, 127.9 / 255])
    assert to_uint8(x).tolist() == [0, 127, 254, 255, 255, 0, 127]


WORDS = " ".join(["a"] * 70)  # 70 one-token words


def test_embedding_after_comma_backtrack_keeps_a1111s_positions() -> None:
    # The chunk fills at 75 tokens, 5 after the comma: A1111 carries "mychar a a a" into the
    # next chunk, but the embedding's vectors stay where they were in the first chunk.
    result = count_prompt_tokens(WORDS + ", mychar a a a", embeddings={"mychar": 2})
    assert [len(c) for c in result.chunks] == [71, 5]
    assert result.chunks[1][:2] == [0, 0]  # the placeholders moved with the words
    assert result.embeddings == [EmbeddingSlot(chunk=0, offset=71, name="mychar", n_vectors=2)]


def test_backtracked_embedding_vectors_land_in_the_first_chunk(model) -> None:
    prompt = WORDS + ", mychar a a a"
    width = model.text_encoder.config.hidden_size
    gen = torch.Generator().manual_seed(0)
    one = {"mychar": torch.randn(2, width, generator=gen)}
    two = {"mychar": torch.randn(2, width, generator=gen)}
    with torch.no_grad():
        a = encode_prompt(prompt, text_encoder=model.text_encoder, embeddings=one)
        b = encode_prompt(prompt, text_encoder=model.text_encoder, embeddings=two)
    assert a.shape[1] == 154
    # Changing the vectors changes the first chunk (positions 72-73 of its padding) only.
    assert not torch.equal(a[:, :77], b[:, :77])
    assert torch.equal(a[:, 77:], b[:, 77:])


def test_html_entity_stays_escaped_next_to_a_less_than_sign() -> None:
    tok = get_clip_tokenizer()
    # ftfy (A1111's only normalisation) unescapes entities unless the text holds "<".
    assert tok.normalize("fish &amp; chips <3") == "fish &amp; chips <3"
    assert tok.encode("fish &amp; chips <3") != tok.encode("fish & chips <3")
    assert tok.normalize("fish &amp; chips") == "fish & chips"
    assert tok.encode("fish &amp; chips") == tok.encode("fish & chips")


def test_schedule_types_follow_a1111() -> None:
    from charstudio.engine.kdiffusion_samplers import model_schedule, sigmas_for

    schedule = model_schedule()
    inner = a1111.CompVisDenoiser(None, a1111.compvis_alphas_cumprod())
    assert torch.equal(schedule.sigmas, inner.sigmas)
    assert torch.equal(sigmas_for("Automatic", 9, schedule), inner.get_sigmas(9))
    karras = a1111.get_sigmas_karras(9, inner.sigmas[0].item(), inner.sigmas[-1].item())
    assert torch.equal(sigmas_for("Karras", 9, schedule), karras)
    for name in ("Uniform", "Karras", "Exponential", "SGM Uniform", "Beta"):
        sigmas = sigmas_for(name, 9, schedule)
        assert sigmas.dtype == torch.float32 and len(sigmas) == 10 and sigmas[-1] == 0
        assert torch.all(sigmas[:-1] > sigmas[1:]), name
        assert sigmas[0] == pytest.approx(inner.sigmas[-1].item(), rel=1e-5)
    assert torch.equal(sigmas_for("Uniform", 9, schedule), inner.get_sigmas(9))


@pytest.mark.parametrize("schedule", ["Exponential", "SGM Uniform", "Beta"])
def test_every_schedule_type_samples(model, schedule: str) -> None:
    encoder = PromptEncoder(model.text_encoder)
    settings = {
        "unet": model.unet,
        "vae": model.vae,
        "encoder": encoder,
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE,
        "seeds": [3],
        "steps": 3,
        "cfg_scale": 7.0,
        "width": SIZE,
        "height": SIZE,
        "sampler": "DPM++ 2M",
        "rng": "CPU",
    }
    latents = sample_latents(**settings, schedule_type=schedule)
    karras = sample_latents(**settings, schedule_type="Karras")
    assert torch.isfinite(latents).all()
    assert not torch.equal(latents, karras)


def test_v_prediction_models_keep_their_diffusers_scheduler(model) -> None:
    from charstudio.engine.kdiffusion_samplers import supports
    from charstudio.engine.samplers import SD15_SCHEDULER_CONFIG

    assert supports(None) and supports(SD15_SCHEDULER_CONFIG)
    v_config = {**SD15_SCHEDULER_CONFIG, "prediction_type": "v_prediction"}
    assert not supports(v_config)
    latents = sample_latents(
        unet=model.unet,
        vae=model.vae,
        encoder=PromptEncoder(model.text_encoder),
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        seeds=[3],
        steps=3,
        cfg_scale=7.0,
        width=SIZE,
        height=SIZE,
        sampler="Euler a",
        schedule_type=None,
        scheduler_config=v_config,
    )
    assert torch.isfinite(latents).all()
