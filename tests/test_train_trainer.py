"""The training loop itself on a tiny model in memory: the loss falls, only the vectors change,
initialization from the init text, gradients through the engine's conditioning path, and the
saved files loading in charstudio and in diffusers' ``load_textual_inversion``."""

from __future__ import annotations

import random
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from charstudio.engine.conditioning import PromptEncoder  # noqa: E402
from charstudio.engine.embeddings import load_embedding  # noqa: E402
from charstudio.prompts import get_clip_tokenizer  # noqa: E402
from charstudio.training.dataset import TrainingImage  # noqa: E402
from charstudio.training.embedding_init import initial_vectors  # noqa: E402
from charstudio.training.prompt_conditioning import TrainingPromptEncoder  # noqa: E402
from charstudio.training.run_files import save_checkpoint  # noqa: E402
from charstudio.training.settings import TrainTISettings  # noqa: E402
from charstudio.training.ti_trainer import TextualInversionTrainer  # noqa: E402

from .test_train_ti import SIZE, TOKEN, responsive_tiny_model  # noqa: E402
from .tiny_sd import diffusers_pipeline  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)


def components(seed: int = 3) -> Any:
    model = responsive_tiny_model(seed)
    return SimpleNamespace(
        unet=model.unet,
        vae=model.vae,
        text_encoder=model.text_encoder,
        scheduler_config={},
        model_hash="0123456789",
        name="tiny-sd",
    )


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[TrainingImage]:
    """Four flat-colour images: a dataset the embedding can describe."""
    folder = tmp_path_factory.mktemp("images")
    out = []
    for i in range(4):
        rng = random.Random(i)
        path = folder / f"{i}.png"
        Image.new("RGB", (SIZE, SIZE), tuple(rng.randrange(256) for _ in range(3))).save(path)
        out.append(TrainingImage(path, None, "a woman, red hair"))
    return out


def trainer_for(model: Any, images: list[TrainingImage], **changes: Any) -> Any:
    base = {"learning_rate": "0.05", "latent_sampling": "deterministic", "seed": 7}
    settings = TrainTISettings(name=TOKEN, width=SIZE, height=SIZE, **{**base, **changes})
    batch, accumulation, _ = settings.batch_plan(len(images))
    trainer = TextualInversionTrainer(
        model,
        settings,
        images,
        batch_size=batch,
        gradient_accumulation=accumulation,
        device="cpu",
    )
    for _ in trainer.prepare():
        pass
    return trainer


def test_the_loss_falls_on_a_fixed_dataset(images) -> None:
    trainer = trainer_for(components(), images, max_steps=30, seed=9)
    before = trainer.evaluate(seed=0, rounds=8)  # fixed timesteps and noise: no luck involved
    losses = [trainer.train_step().loss for _ in range(30)]
    after = trainer.evaluate(seed=0, rounds=8)
    assert after < 0.98 * before, (before, after)
    assert sum(losses[-10:]) < sum(losses[:10])
    assert trainer.step == 30 and len(trainer.loss_history) == 30


def test_only_the_vectors_change(images) -> None:
    model = components()
    nets = {"unet": model.unet, "vae": model.vae, "text_encoder": model.text_encoder}
    before = {
        (net, key): value.clone()
        for net, module in nets.items()
        for key, value in module.state_dict().items()
    }
    flags = {(net, n): p.requires_grad for net, m in nets.items() for n, p in m.named_parameters()}
    trainer = trainer_for(model, images, max_steps=3, gradient_checkpointing=True)
    assert all(not p.requires_grad for m in nets.values() for p in m.parameters())
    for _ in range(3):
        trainer.train_step()
    assert not torch.equal(trainer.current_vectors(), trainer.initial)
    trainer.close()
    after = {
        (net, key): value
        for net, module in nets.items()
        for key, value in module.state_dict().items()
    }
    assert after.keys() == before.keys()
    changed = [key for key, value in before.items() if not torch.equal(value, after[key])]
    assert changed == []  # the token-embedding table included: every other row is untouched
    assert {
        (net, n): p.requires_grad for net, m in nets.items() for n, p in m.named_parameters()
    } == flags
    assert not any(getattr(m, "gradient_checkpointing", False) for m in model.unet.modules())


def test_init_text_gives_the_token_embedding_rows_like_a1111() -> None:
    model = components()
    table = model.text_encoder.get_input_embeddings().weight
    tokenizer = get_clip_tokenizer()
    woman = tokenizer.encode("woman")
    assert len(woman) == 1
    vectors = initial_vectors(model.text_encoder, "woman", 2)
    assert vectors.dtype == torch.float32 and vectors.shape == (2, 32)
    assert torch.equal(vectors[0], table[woman[0]]) and torch.equal(vectors[1], table[woman[0]])
    two = tokenizer.encode("red hair")
    stretched = initial_vectors(model.text_encoder, "red hair", 4)
    expected = [table[two[0]], table[two[0]], table[two[1]], table[two[1]]]
    assert all(torch.equal(v, e) for v, e in zip(stretched, expected, strict=True))
    three = tokenizer.encode("a french woman")
    cut = initial_vectors(model.text_encoder, "a french woman", 2)
    assert torch.equal(cut[0], table[three[0]]) and torch.equal(cut[1], table[three[1]])
    assert not initial_vectors(model.text_encoder, "", 3).any()  # no init text: zeros
    trainer = TextualInversionTrainer(
        model,
        TrainTISettings(name=TOKEN, width=SIZE, height=SIZE, init_text="woman"),
        [TrainingImage(Path("x.png"), None, "")],
        batch_size=1,
        gradient_accumulation=1,
        device="cpu",
    )
    assert torch.equal(trainer.current_vectors(), vectors)
    trainer.close()


def test_training_conditioning_is_generations_and_carries_gradients() -> None:
    model = components()
    model.text_encoder.requires_grad_(False)  # frozen, as the trainer freezes it
    vectors = initial_vectors(model.text_encoder, "woman", 2).requires_grad_(True)
    texts = ["a photo of fr3nchl4dy", "a photo of fr3nchl4dy", "fr3nchl4dy BREAK " + "x " * 80]
    encoder = TrainingPromptEncoder(model.text_encoder, name=TOKEN, vectors=vectors)
    cond = encoder.encode(texts)
    generation = PromptEncoder(model.text_encoder, embeddings={TOKEN: vectors.detach()})
    assert cond.shape == (3, 77 * 3, 32)  # padded to the longest prompt's chunks
    assert torch.equal(cond[0, :77], generation.encode(texts[0])[0])
    assert torch.equal(cond[2], generation.encode(texts[2])[0])
    cond[:2].sum().backward()
    assert vectors.grad is not None and vectors.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.text_encoder.parameters())
    assert encoder.uses_vectors(texts[0]) and not encoder.uses_vectors("a photo of a woman")


def test_files_load_in_charstudio_and_in_diffusers(tmp_path: Path) -> None:
    model = components()
    vectors = torch.randn(2, 32)
    saved = save_checkpoint(
        tmp_path, TOKEN, 40, vectors, model_hash="0123456789", model_name="tiny-sd"
    )
    for path in (saved.pt, saved.safetensors):
        embedding = load_embedding(path, width=32)
        assert embedding.name == f"{TOKEN}-40" and torch.equal(embedding.vectors, vectors)
    assert load_embedding(saved.pt, width=32).step == 40
    assert load_embedding(saved.pt, width=32).sd_checkpoint == "0123456789"

    # A diffusers pipeline with a transformers tokenizer built from charstudio's CLIP BPE files.
    pipe = diffusers_pipeline(model, tmp_path / "tokenizer")
    tokenizer = pipe.tokenizer
    assert tokenizer("a photo of a woman").input_ids[1:-1] == get_clip_tokenizer().encode(
        "a photo of a woman"
    )
    pipe.load_textual_inversion(str(saved.pt))  # A1111 .pt: the token is the file's name
    pipe.load_textual_inversion(str(saved.safetensors), token="zxqvemb")  # emb_params
    table = pipe.text_encoder.get_input_embeddings().weight
    for token in (f"{TOKEN}-40", "zxqvemb"):
        ids = tokenizer.convert_tokens_to_ids([token, f"{token}_1"])
        assert torch.equal(table[ids].detach(), vectors)


def test_alpha_weights_clipping_and_once_sampling(images, tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (SIZE, SIZE), (200, 120, 90, 0))
    rgba.paste((200, 120, 90, 255), (4, 4, 12, 12))  # an opaque subject on a clear background
    rgba.save(tmp_path / "subject.png")
    with_alpha = [TrainingImage(tmp_path / "subject.png", None, ""), *images[:3]]
    for mode in ("value", "norm"):
        trainer = trainer_for(
            components(),
            with_alpha,
            use_alpha_weight=True,
            clip_grad_mode=mode,
            clip_grad_value="0.01:1, 1e-4",
            latent_sampling="once",
        )
        weights = trainer.weights
        assert weights is not None and weights.shape == (4, 1, SIZE // 2, SIZE // 2)
        assert float(weights[0].mean()) == pytest.approx(1.0, rel=1e-5)
        assert float(weights[0].min()) == 0.0 and torch.equal(
            weights[1], torch.ones_like(weights[1])
        )
        once = trainer.latents.batch([0, 1], torch.Generator().manual_seed(5))
        assert torch.equal(once, trainer.latents.batch([0, 1], torch.Generator().manual_seed(6)))
        stats = trainer.train_step()
        assert stats.step == 1 and stats.loss > 0 and stats.images == 4
        assert not torch.equal(trainer.current_vectors(), trainer.initial)
        trainer.close()
