"""The textual-inversion training loop, one optimizer step at a time, and its resume state.

What one step does (A1111's ``train_embedding`` with LDM's loss, in diffusers terms):

* for each of ``gradient_accumulation`` micro-batches: the next ``batch_size`` images of the
  epoch's seeded shuffle, their cached latents (:mod:`~charstudio.training.latents`), one
  template text each, a uniform timestep in [0, 1000) and Gaussian noise per image; the DDPM
  forward process with SD 1.5's betas (scaled linear 0.00085–0.012) noises the latents; the
  frozen UNet predicts the noise from the text conditioning (epsilon prediction) and the loss
  is the mean squared error, divided by the accumulation count, backpropagated into the
  embedding's vectors only;
* optional gradient clipping by value or norm (after unscaling fp16 gradients; A1111 clips the
  scaled ones), then AdamW with weight decay 0 (A1111's optimizer for embeddings) at the rate
  the schedule gives for this step.

The UNet, VAE and text encoder never change: their weights have ``requires_grad`` off and the
vectors reach the text encoder through the engine's injection hook. The vectors are float32 on
the training device; on CUDA the networks run under autocast in their own precision (fp16 with
a gradient scaler, or bf16), on the CPU in float32. Attention uses PyTorch's scaled-dot-product
kernels. Gradient checkpointing on the UNet trades time for memory (A1111 always uses it).

Every random draw comes from the trainer's own seeded streams (Python's for the data order,
template lines and tags, a CPU torch generator for latents, timesteps and noise), so a run is
repeatable on a device and :meth:`state_dict` / :meth:`load_state_dict` continue it exactly.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from charstudio.jobs.protocol import CancelToken, JobError
from charstudio.training.dataset import TrainingImage, alpha_weight, load_training_pixels
from charstudio.training.embedding_init import initial_vectors
from charstudio.training.frozen_model import (
    autocast,
    autocast_dtype,
    freeze,
    noise_scheduler,
    nonfinite_cause,
    optimizer_step,
    restore_random_streams,
    slow_down,
    speed_up,
    thaw,
)
from charstudio.training.latents import LatentCache, encode_latents, pixels_to_tensor
from charstudio.training.prompt_conditioning import TrainingPromptEncoder
from charstudio.training.settings import TrainTISettings
from charstudio.training.templates import fixed_texts, render_template, sample_text

if TYPE_CHECKING:
    import torch

__all__ = ["STATE_FORMAT", "NonFiniteTraining", "StepStats", "TextualInversionTrainer"]

STATE_FORMAT = 1


class NonFiniteTraining(JobError):
    """A step whose loss, gradient or update was NaN or infinite; the step was not applied, so
    the vectors are still the last finite ones. ``cause`` is the likely reason, in words."""

    def __init__(self, step: int, what: str, cause: str) -> None:
        self.step = step
        self.what = what
        self.cause = cause
        super().__init__(f"Training stopped at step {step}: the {what} became NaN. {cause}")


@dataclass(frozen=True)
class StepStats:
    step: int  # optimizer steps done, this one included
    loss: float  # mean over the step's micro-batches
    learning_rate: float
    seconds: float
    images: int  # images this step trained on

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


class _BatchOrder:
    """A1111's epochs: shuffle the images, cut ``n // batch`` batches (the rest waits for the next
    epoch) and use only whole groups of ``accumulation`` batches, so a step never sees an image
    twice."""

    def __init__(self, n_images: int, batch: int, accumulation: int, rng: random.Random) -> None:
        self.n_images = n_images
        self.batch = batch
        self.per_epoch = (n_images // batch) // accumulation * accumulation
        if self.per_epoch < 1:
            raise ValueError(f"batch {batch} × accumulation {accumulation} > {n_images} images")
        self.rng = rng
        self.epoch = 0
        self.position = 0
        self.batches: list[list[int]] = []

    def next(self) -> list[int]:
        if self.position >= len(self.batches):
            order = list(range(self.n_images))
            self.rng.shuffle(order)
            self.batches = [
                order[i * self.batch : (i + 1) * self.batch] for i in range(self.per_epoch)
            ]
            self.position = 0
            self.epoch += 1
        batch = self.batches[self.position]
        self.position += 1
        return batch

    def state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "batches": self.batches}

    def load(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.batches = [[int(i) for i in batch] for batch in state["batches"]]


def _derived_seed(seed: int, purpose: str) -> int:
    """An independent stream per purpose, so no two draws share a seed."""
    return random.Random(f"{seed}:{purpose}").getrandbits(63)


class TextualInversionTrainer:
    """Trains one embedding on a loaded SD 1.x model (``unet``, ``vae``, ``text_encoder``).

    ``settings`` must be resolved (a name, a seed other than -1); ``batch_size`` and
    ``gradient_accumulation`` come from :meth:`TrainTISettings.batch_plan`. Call
    :meth:`prepare` (a generator: loads and encodes the images) before :meth:`train_step`, and
    :meth:`close` at the end to give the model back as it was.
    """

    def __init__(
        self,
        components: Any,
        settings: TrainTISettings,
        images: Sequence[TrainingImage],
        *,
        batch_size: int,
        gradient_accumulation: int,
        device: Any,
        scheduler_config: dict[str, Any] | None = None,
    ) -> None:
        import torch

        if not settings.name or settings.seed < 0:
            raise ValueError("resolve the settings' name and seed before training")
        self.settings = settings
        self.name = settings.name
        self.images = list(images)
        self.batch_size = batch_size
        self.gradient_accumulation = gradient_accumulation
        self.device = torch.device(device)
        self.unet = components.unet
        self.vae = components.vae
        self.text_encoder = components.text_encoder

        self._grad_flags = freeze(self.unet, self.vae, self.text_encoder)
        self._checkpointing = bool(settings.gradient_checkpointing)
        self._cudnn_benchmark = speed_up(
            self.unet, self.vae, self.device, checkpointing=self._checkpointing
        )

        self.schedule = settings.schedule()
        self.clip_schedule = settings.clip_schedule()
        self.end_step = self.schedule.end_step(settings.max_steps)
        self.lines = settings.lines

        self.noise_scheduler = noise_scheduler(scheduler_config)

        self.vectors = initial_vectors(self.text_encoder, settings.init_text, settings.vectors).to(
            self.device
        )
        self.vectors.requires_grad_(True)
        self.initial = self.vectors.detach().cpu().clone()
        self.optimizer = torch.optim.AdamW(
            [self.vectors], lr=self.schedule.rate_at(0), weight_decay=0.0
        )
        self.autocast_dtype = autocast_dtype(self.unet, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.autocast_dtype == torch.float16 else None
        self.encoder = TrainingPromptEncoder(
            self.text_encoder, name=self.name, vectors=self.vectors, clip_skip=settings.clip_skip
        )
        self.rng = random.Random(settings.seed)
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.order = _BatchOrder(len(self.images), batch_size, gradient_accumulation, self.rng)
        self.step = 0
        self.loss_history: list[tuple[int, float, float]] = []
        self.latents: LatentCache | None = None
        self.weights: torch.Tensor | None = None
        self._fixed_texts: list[str] | None = None

    # -- setup ---------------------------------------------------------------------------

    def _autocast(self) -> Any:
        return autocast(self.device, self.autocast_dtype)

    def prepare(self) -> Generator[tuple[int, int], None, None]:
        """Load the images at the training size and encode them with the VAE, once; yields
        ``(done, total)`` after each image."""
        import numpy as np
        import torch

        settings = self.settings
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        latent_size = (settings.width // factor, settings.height // factor)
        pixels, weights = [], []
        for image in self.images:
            rgb, alpha = load_training_pixels(
                image.path, settings.width, settings.height, with_alpha=settings.use_alpha_weight
            )
            pixels.append(pixels_to_tensor(rgb))
            if settings.use_alpha_weight:
                weights.append(alpha_weight(alpha, latent_size))
        once = torch.Generator().manual_seed(_derived_seed(settings.seed, "latents"))
        self.latents = yield from encode_latents(
            self.vae,
            pixels,
            method=settings.latent_sampling,
            device=self.device,
            once_generator=once,
        )
        if weights:
            self.weights = torch.from_numpy(np.stack(weights)).unsqueeze(1).to(self.device)
        if not (settings.shuffle_tags or settings.tag_dropout):
            self._fixed_texts = fixed_texts(
                self.lines,
                name=self.name,
                captions=[image.caption for image in self.images],
                seed=settings.seed,
            )

    # -- training ------------------------------------------------------------------------

    def _texts(self, indices: Sequence[int]) -> list[str]:
        if self._fixed_texts is not None:
            return [self._fixed_texts[i] for i in indices]
        settings = self.settings
        return [
            sample_text(
                self.lines,
                name=self.name,
                caption=self.images[i].caption,
                rng=self.rng,
                shuffle_tags=settings.shuffle_tags,
                tag_dropout=settings.tag_dropout,
            )
            for i in indices
        ]

    def _loss(
        self, indices: Sequence[int], generator: torch.Generator, *, texts: Sequence[str]
    ) -> torch.Tensor:
        """The diffusion loss of one micro-batch (the random draws come from ``generator``)."""
        import torch
        import torch.nn.functional as F

        assert self.latents is not None, "call prepare() first"
        latents = self.latents.batch(indices, generator)
        count = len(indices)
        steps = int(self.noise_scheduler.config.num_train_timesteps)
        timesteps = torch.randint(0, steps, (count,), generator=generator).to(self.device)
        noise = torch.randn(latents.shape, generator=generator).to(self.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        with self._autocast():
            cond = self.encoder.encode(texts)
            predicted = self.unet(noisy, timesteps, encoder_hidden_states=cond).sample
        predicted = predicted.float()
        if self.weights is None:
            return F.mse_loss(predicted, noise)
        index = torch.tensor(list(indices), device=self.device)
        weight = self.weights.index_select(0, index)
        return ((predicted - noise) ** 2 * weight).mean()

    def train_step(self, cancel: CancelToken | None = None) -> StepStats:
        """One optimizer step; ``cancel`` is checked before each micro-batch (raises
        :class:`~charstudio.jobs.protocol.JobCanceled`, leaving the step undone)."""
        import torch

        if self.step >= self.end_step:
            raise RuntimeError(f"training is finished ({self.step} of {self.end_step} steps)")
        started = time.perf_counter()
        rate = self.schedule.rate_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = rate
        total = torch.zeros((), device=self.device)
        images = 0
        for _ in range(self.gradient_accumulation):
            if cancel is not None:
                cancel.raise_if_canceled()
            indices = self.order.next()
            loss = self._loss(indices, self.generator, texts=self._texts(indices))
            loss = loss / self.gradient_accumulation
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            total += loss.detach()
            images += len(indices)
        loss_value = float(total)
        if not math.isfinite(loss_value):
            self._stop_nonfinite("loss", rate)
        # Under fp16 the gradient scaler skips steps with inf gradients by design; otherwise a
        # non-finite gradient would poison the vectors.
        grad = self.vectors.grad
        if self.scaler is None and grad is not None and not bool(torch.isfinite(grad).all()):
            self._stop_nonfinite("gradient", rate)
        before = self.vectors.detach().clone()
        if self.clip_schedule is not None:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            limit = self.clip_schedule.rate_at(self.step)
            if self.settings.clip_grad_mode == "value":
                torch.nn.utils.clip_grad_value_([self.vectors], limit)
            else:
                torch.nn.utils.clip_grad_norm_([self.vectors], limit)
        optimizer_step(self.optimizer, self.scaler)
        if not bool(torch.isfinite(self.vectors).all()):
            with torch.no_grad():
                self.vectors.copy_(before)
            self._stop_nonfinite("embedding", rate)
        self.step += 1
        self.loss_history.append((self.step, loss_value, rate))
        return StepStats(self.step, loss_value, rate, time.perf_counter() - started, images)

    def _stop_nonfinite(self, what: str, rate: float) -> None:
        """Leave the step undone and raise :class:`NonFiniteTraining` with the likely cause."""
        self.optimizer.zero_grad(set_to_none=True)
        raise NonFiniteTraining(self.step + 1, what, self.nonfinite_cause(rate))

    def nonfinite_cause(self, rate: float) -> str:
        """Why a step is likely to have gone NaN: broken weights, half precision or the rate."""
        return nonfinite_cause(self.unet, self.text_encoder, self.vae, self.autocast_dtype, rate)

    def evaluate(self, *, seed: int = 0, rounds: int = 4) -> float:
        """The mean loss over every image with fixed timesteps and noise (from ``seed``): a
        noise-free measure of progress, for tests and diagnostics. Changes no training state."""
        import torch

        generator = torch.Generator().manual_seed(seed)
        indices = list(range(len(self.images)))
        texts = self._fixed_texts or [
            render_template(self.lines[0], name=self.name, caption=image.caption)
            for image in self.images
        ]
        losses = []
        with torch.no_grad():
            for _ in range(rounds):
                for start in range(0, len(indices), self.batch_size):
                    chunk = indices[start : start + self.batch_size]
                    sub_texts = texts[start : start + self.batch_size]
                    losses.append(float(self._loss(chunk, generator, texts=sub_texts)))
        return sum(losses) / len(losses)

    # -- vectors and resume state -------------------------------------------------------

    def current_vectors(self) -> torch.Tensor:
        """A float32 CPU copy of the vectors now."""
        return self.vectors.detach().to("cpu").clone()

    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`load_state_dict` needs to continue exactly from this step."""
        return {
            "format": STATE_FORMAT,
            "step": self.step,
            "name": self.name,
            "images": len(self.images),
            "batch_size": self.batch_size,
            "gradient_accumulation": self.gradient_accumulation,
            "vectors": self.current_vectors(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "torch_generator": self.generator.get_state(),
            "python_rng": self.rng.getstate(),
            "order": self.order.state(),
            "loss_history": [list(entry) for entry in self.loss_history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        import torch

        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"unknown training state format {state.get('format')!r}")
        expected = (self.name, len(self.images), self.batch_size, self.gradient_accumulation)
        found = (
            state["name"],
            state["images"],
            state["batch_size"],
            state["gradient_accumulation"],
        )
        if found != expected:
            raise ValueError(
                "the saved training state belongs to other settings (name, image count, batch, "
                f"accumulation {found} instead of {expected}); it cannot be resumed here"
            )
        with torch.no_grad():
            self.vectors.copy_(state["vectors"].to(self.vectors.device, torch.float32))
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        restore_random_streams(state, self.generator, self.rng)
        self.order.load(state["order"])
        self.step = int(state["step"])
        self.loss_history = [(int(s), float(v), float(r)) for s, v, r in state["loss_history"]]

    def close(self) -> None:
        """Give the networks back as they were (gradient flags, checkpointing, cuDNN's
        autotuner; the UNet keeps its memory layout)."""
        slow_down(self.unet, None, self._cudnn_benchmark, checkpointing=self._checkpointing)
        self._checkpointing = False
        thaw(self._grad_flags)
        self._grad_flags = []
