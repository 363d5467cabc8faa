"""The LoRA training loop, one optimizer step at a time, and its resume state.

What a step does (kohya's ``train_network`` in diffusers terms):

* an epoch is every image ``repeats`` times, grouped by aspect bucket, each bucket shuffled and
  cut into batches of ``batch_size`` (a bucket's last batch may be smaller), the batches
  shuffled; a step is ``gradient_accumulation`` consecutive batches (the epoch's last step may
  have fewer), so steps per epoch are known before training starts;
* per batch: the images' cached latents (one draw of each image's latent distribution when
  the run starts, or a new draw per sample with ``cache_latents`` off), their captions with
  kohya's caption options (caption dropout, the first ``keep_tokens`` tags fixed and the rest
  shuffled and dropped per tag), a uniform timestep in [0, 1000), Gaussian noise plus
  ``noise_offset`` × per-channel noise; the UNet with its LoRA predicts the noise (epsilon) from
  the text encoder's (LoRA'd) conditioning, through the engine's own A1111 prompt encoder;
* the loss per image is the mean squared error, weighted by min-SNR-γ (``min(SNR, γ) / SNR``)
  when γ > 0; gradients reach only the LoRA weights; then gradient-norm clipping and AdamW
  (or AdamW 8-bit, or Prodigy) at the scheduler's rate: constant or cosine, with linear warmup.

Every random draw comes from the trainer's own seeded streams (Python's for the data order and
captions, a CPU torch generator for latents, timesteps and noise), so a run is repeatable on a
device and :meth:`state_dict` / :meth:`load_state_dict` continue it exactly.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from charstudio.jobs.protocol import CancelToken, JobError
from charstudio.training.captions import join_tags, split_tags
from charstudio.training.dataset import TrainingImage, load_training_pixels
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
from charstudio.training.lora_settings import TrainLoraSettings
from charstudio.training.ti_trainer import NonFiniteTraining, StepStats

if TYPE_CHECKING:
    import torch

__all__ = [
    "STATE_FORMAT",
    "LoraTrainer",
    "OptimizerUnavailable",
    "bucket_for",
    "bucket_sizes",
    "epoch_plan",
    "rate_factor",
]

STATE_FORMAT = 1


class OptimizerUnavailable(JobError):
    """The chosen optimizer's package is missing or does not work here."""


# -- buckets and the epoch plan (no torch) ----------------------------------------------------


def bucket_sizes(resolution: int, step: int = 64) -> list[tuple[int, int]]:
    """kohya's buckets: sides multiples of ``step`` from half to twice the resolution, the area
    at most ``resolution²``, each width with the tallest height that fits."""
    area = resolution * resolution
    low, high = max(step, resolution // 2 // step * step), resolution * 2
    sizes = set()
    for width in range(low, high + 1, step):
        height = min(high, area // width // step * step)
        if height >= low:
            sizes.add((width, height))
            sizes.add((height, width))
    sizes.add((resolution // step * step or resolution, resolution // step * step or resolution))
    return sorted(sizes)


def bucket_for(width: int, height: int, sizes: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is nearest the image's (ties: the larger area)."""
    aspect = math.log(width / height)
    return min(sizes, key=lambda s: (abs(math.log(s[0] / s[1]) - aspect), -s[0] * s[1]))


def epoch_plan(
    buckets: Sequence[tuple[int, int]], repeats: int, batch_size: int, accumulation: int
) -> tuple[int, int]:
    """``(batches per epoch, optimizer steps per epoch)`` for images in ``buckets``."""
    counts: dict[tuple[int, int], int] = {}
    for bucket in buckets:
        counts[bucket] = counts.get(bucket, 0) + repeats
    batches = sum(math.ceil(n / batch_size) for n in counts.values())
    return batches, math.ceil(batches / accumulation)


def rate_factor(scheduler: str, step: int, total: int, warmup: int) -> float:
    """The multiplier of the base rates for the update made after ``step`` steps (0-based)."""
    if warmup and step < warmup:
        return (step + 1) / (warmup + 1)  # never zero: the first step already learns a little
    if scheduler.startswith("cosine"):
        span = max(1, total - warmup)
        progress = min(1.0, (step - warmup) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def _derived_seed(seed: int, purpose: str) -> int:
    return random.Random(f"{seed}:{purpose}").getrandbits(63)


def _caption_sample(caption: str, settings: TrainLoraSettings, rng: random.Random) -> str:
    """One training text from a caption with kohya's options (see the module docstring)."""
    if settings.caption_dropout and rng.random() < settings.caption_dropout:
        return ""
    if not (settings.shuffle_tags or settings.tag_dropout):
        return caption
    tags = split_tags(caption)
    fixed, rest = tags[: settings.keep_tokens], tags[settings.keep_tokens :]
    if settings.tag_dropout:
        rest = [tag for tag in rest if rng.random() >= settings.tag_dropout]
    if settings.shuffle_tags:
        rng.shuffle(rest)
    return join_tags([*fixed, *rest])


@dataclass(frozen=True)
class LoraStepStats(StepStats):
    epoch: int = 0  # epochs finished after this step


class _EpochOrder:
    """The batches of each epoch, drawn from ``rng`` when the epoch starts."""

    def __init__(
        self,
        buckets: Sequence[tuple[int, int]],
        repeats: int,
        batch: int,
        accumulation: int,
        rng: random.Random,
    ) -> None:
        self.buckets = list(buckets)
        self.repeats = repeats
        self.batch = batch
        self.accumulation = accumulation
        self.rng = rng
        self.epoch = 0  # epochs started
        self.position = 0  # batches used of the current epoch
        self.batches: list[list[int]] = []

    def _new_epoch(self) -> None:
        groups: dict[tuple[int, int], list[int]] = {}
        for index, bucket in enumerate(self.buckets):
            groups.setdefault(bucket, []).extend([index] * self.repeats)
        batches: list[list[int]] = []
        for bucket in sorted(groups):
            members = groups[bucket]
            self.rng.shuffle(members)
            batches += [members[i : i + self.batch] for i in range(0, len(members), self.batch)]
        self.rng.shuffle(batches)
        self.batches = batches
        self.position = 0
        self.epoch += 1

    def next_step(self) -> tuple[list[list[int]], bool]:
        """The batches of the next optimizer step, and whether it ends its epoch."""
        if self.position >= len(self.batches):
            self._new_epoch()
        step = self.batches[self.position : self.position + self.accumulation]
        self.position += len(step)
        return step, self.position >= len(self.batches)

    def state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "batches": self.batches}

    def load(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.batches = [[int(i) for i in batch] for batch in state["batches"]]


class LoraTrainer:
    """Trains a LoRA on a loaded SD 1.x model (``unet``, ``vae``, ``text_encoder``).

    ``settings`` must be resolved (a name, a token, a seed other than -1); ``images`` carry the
    captions to train on. Call :meth:`prepare` (a generator: loads and encodes the images) before
    :meth:`train_step`, and :meth:`close` at the end to take the LoRA layers off the model.
    """

    def __init__(
        self,
        components: Any,
        settings: TrainLoraSettings,
        images: Sequence[TrainingImage],
        *,
        buckets: Sequence[tuple[int, int]],
        repeats: int,
        epochs: int,
        device: Any,
        scheduler_config: dict[str, Any] | None = None,
    ) -> None:
        import torch

        from charstudio.training.lora_network import LoraNetwork

        if not settings.name or settings.seed < 0:
            raise ValueError("resolve the settings' name and seed before training")
        self.settings = settings
        self.name = settings.name
        self.images = list(images)
        self.buckets = list(buckets)
        self.repeats = repeats
        self.epochs = epochs
        self.device = torch.device(device)
        self.unet = components.unet
        self.vae = components.vae
        self.text_encoder = components.text_encoder
        self.batches_per_epoch, self.steps_per_epoch = epoch_plan(
            self.buckets, repeats, settings.batch_size, settings.gradient_accumulation
        )
        self.end_step = self.steps_per_epoch * epochs
        self.warmup = settings.warmup_for(self.end_step)

        self._grad_flags = freeze(self.unet, self.vae, self.text_encoder)
        self.network = LoraNetwork(
            self.unet,
            self.text_encoder if settings.train_text_encoder else None,
            dim=settings.dim,
            alpha=settings.alpha,
            conv_dim=settings.conv_dim,
            conv_alpha=settings.conv_alpha,
            seed=_derived_seed(settings.seed, "network"),
        )
        self.network_params = self.network.parameters()
        self._prepare_networks()

        self.noise_scheduler = noise_scheduler(scheduler_config)
        alphas = self.noise_scheduler.alphas_cumprod.to(torch.float32)
        self.snr = alphas / (1.0 - alphas)

        self.optimizer = self._make_optimizer()
        self.autocast_dtype = autocast_dtype(self.unet, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.autocast_dtype == torch.float16 else None
        self.rng = random.Random(settings.seed)
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.order = _EpochOrder(
            self.buckets, repeats, settings.batch_size, settings.gradient_accumulation, self.rng
        )
        self.step = 0
        self.loss_history: list[tuple[int, float, float]] = []
        self.latents: dict[tuple[int, int], tuple[LatentCache, dict[int, int]]] = {}
        self._empty: torch.Tensor | None = None

    # -- setup ---------------------------------------------------------------------------

    def _param_groups(self) -> list[dict[str, Any]]:
        settings = self.settings
        groups = [{"params": self.network.parameters("unet"), "lr": settings.unet_lr}]
        te = self.network.parameters("text_encoder")
        if te:
            groups.append({"params": te, "lr": settings.te_lr})
        return groups

    def _make_optimizer(self) -> Any:
        import torch

        settings = self.settings
        groups = self._param_groups()
        self.base_rates = [g["lr"] for g in groups]
        if settings.optimizer == "AdamW":
            return torch.optim.AdamW(groups, weight_decay=settings.weight_decay)
        if settings.optimizer == "AdamW8bit":
            try:
                import bitsandbytes  # type: ignore[import-not-found]

                return bitsandbytes.optim.AdamW8bit(groups, weight_decay=settings.weight_decay)
            except Exception as error:  # missing, or built without this GPU's support
                raise OptimizerUnavailable(
                    "AdamW 8-bit needs the bitsandbytes package working on this GPU, and it is "
                    f"not ({type(error).__name__}: {error}); choose the AdamW optimizer"
                ) from None
        try:
            from prodigyopt import Prodigy  # type: ignore[import-not-found]
        except ImportError:
            raise OptimizerUnavailable(
                "the Prodigy optimizer needs the prodigyopt package, which is not installed; "
                "choose the AdamW optimizer"
            ) from None
        return Prodigy(groups, weight_decay=settings.weight_decay)

    def _prepare_networks(self) -> None:
        self._checkpointing = bool(self.settings.gradient_checkpointing)
        self._cudnn_benchmark = speed_up(
            self.unet, self.vae, self.device, checkpointing=self._checkpointing
        )
        if self._checkpointing:
            if self.settings.train_text_encoder and hasattr(
                self.text_encoder, "gradient_checkpointing_enable"
            ):
                self.text_encoder.gradient_checkpointing_enable()
            self.unet.train()  # diffusers checkpoints only in training mode

    def _autocast(self) -> Any:
        return autocast(self.device, self.autocast_dtype)

    def prepare(self) -> Generator[tuple[int, int], None, None]:
        """Load each image at its bucket's size and encode it with the VAE, once; yields
        ``(done, total)`` after each image."""
        import torch

        by_bucket: dict[tuple[int, int], list[int]] = {}
        for index, bucket in enumerate(self.buckets):
            by_bucket.setdefault(bucket, []).append(index)
        method = "once" if self.settings.cache_latents else "random"
        once = torch.Generator().manual_seed(_derived_seed(self.settings.seed, "latents"))
        done, total = 0, len(self.images)
        for bucket in sorted(by_bucket):
            indices = by_bucket[bucket]
            pixels = []
            for index in indices:
                rgb, _alpha = load_training_pixels(self.images[index].path, *bucket)
                pixels.append(pixels_to_tensor(rgb))
            encoding = encode_latents(
                self.vae, pixels, method=method, device=self.device, once_generator=once
            )
            while True:
                try:
                    next(encoding)
                except StopIteration as finished:
                    cache = finished.value
                    break
                done += 1
                yield done, total
            self.latents[bucket] = (cache, {index: row for row, index in enumerate(indices)})

    # -- training ------------------------------------------------------------------------

    def _encode(self, texts: Sequence[str]) -> torch.Tensor:
        import torch

        from charstudio.engine.conditioning import encode_prompt, pad_to_same_length

        grad = self.settings.train_text_encoder
        clip_skip = self.settings.clip_skip
        if self._empty is None:
            with torch.no_grad():
                self._empty = encode_prompt("", text_encoder=self.text_encoder, clip_skip=clip_skip)
        distinct = list(dict.fromkeys(texts))
        encoded = {
            text: encode_prompt(
                text, text_encoder=self.text_encoder, clip_skip=clip_skip, requires_grad=grad
            )
            for text in distinct
        }
        longest = max(e.shape[1] for e in encoded.values())
        for text, cond in encoded.items():
            if cond.shape[1] < longest:
                reference = cond.new_zeros((1, longest, cond.shape[2]))
                encoded[text], _ = pad_to_same_length(cond, reference, self._empty)
        return torch.cat([encoded[text] for text in texts])

    def _latents(self, indices: Sequence[int], generator: torch.Generator) -> torch.Tensor:
        bucket = self.buckets[indices[0]]
        cache, rows = self.latents[bucket]
        return cache.batch([rows[i] for i in indices], generator)

    def _loss(
        self, indices: Sequence[int], generator: torch.Generator, texts: Sequence[str]
    ) -> torch.Tensor:
        """The weighted diffusion loss of one batch (its random draws from ``generator``)."""
        import torch

        assert self.latents, "call prepare() first"
        latents = self._latents(indices, generator)
        count = len(indices)
        steps = int(self.noise_scheduler.config.num_train_timesteps)
        timesteps = torch.randint(0, steps, (count,), generator=generator)
        noise = torch.randn(latents.shape, generator=generator)
        if self.settings.noise_offset:
            offset = torch.randn((count, latents.shape[1], 1, 1), generator=generator)
            noise = noise + self.settings.noise_offset * offset
        noise = noise.to(self.device)
        timesteps_dev = timesteps.to(self.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps_dev)
        with self._autocast():
            cond = self._encode(texts)
            predicted = self.unet(noisy, timesteps_dev, encoder_hidden_states=cond).sample
        per_image = ((predicted.float() - noise) ** 2).mean(dim=(1, 2, 3))
        gamma = self.settings.min_snr_gamma
        if gamma:
            snr = self.snr[timesteps]
            weight = torch.clamp(snr, max=gamma) / snr
            per_image = per_image * weight.to(self.device)
        return per_image.mean()

    def _set_rates(self) -> float:
        factor = rate_factor(self.settings.scheduler, self.step, self.end_step, self.warmup)
        for group, base in zip(self.optimizer.param_groups, self.base_rates, strict=True):
            group["lr"] = base * factor
        return self.base_rates[0] * factor

    def train_step(self, cancel: CancelToken | None = None) -> LoraStepStats:
        """One optimizer step; ``cancel`` is checked before each batch (raises
        :class:`~charstudio.jobs.protocol.JobCanceled`, leaving the step undone)."""
        import torch

        if self.step >= self.end_step:
            raise RuntimeError(f"training is finished ({self.step} of {self.end_step} steps)")
        started = time.perf_counter()
        rate = self._set_rates()
        step_batches, ends_epoch = self.order.next_step()
        total = torch.zeros((), device=self.device)
        images = 0
        for indices in step_batches:
            if cancel is not None:
                cancel.raise_if_canceled()
            texts = [
                _caption_sample(self.images[i].caption, self.settings, self.rng) for i in indices
            ]
            loss = self._loss(indices, self.generator, texts) / len(step_batches)
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            total += loss.detach()
            images += len(indices)
        loss_value = float(total)
        if not math.isfinite(loss_value):
            self._stop_nonfinite("loss", rate)
        params = self.network_params
        if self.scaler is None and any(
            p.grad is not None and not bool(torch.isfinite(p.grad).all()) for p in params
        ):
            self._stop_nonfinite("gradient", rate)
        before = [p.detach().clone() for p in params]
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.settings.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, self.settings.max_grad_norm)
        optimizer_step(self.optimizer, self.scaler)
        if not self.network.all_finite():
            with torch.no_grad():
                for param, old in zip(params, before, strict=True):
                    param.copy_(old)
            self._stop_nonfinite("LoRA weights", rate)
        self.step += 1
        self.loss_history.append((self.step, loss_value, rate))
        del ends_epoch  # the epoch count follows from the step: steps per epoch are fixed
        return LoraStepStats(
            self.step, loss_value, rate, time.perf_counter() - started, images, self.epochs_done
        )

    @property
    def epochs_done(self) -> int:
        return self.step // self.steps_per_epoch if self.steps_per_epoch else 0

    def _stop_nonfinite(self, what: str, rate: float) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        raise NonFiniteTraining(self.step + 1, what, self.nonfinite_cause(rate))

    def nonfinite_cause(self, rate: float) -> str:
        """Why a step is likely to have gone NaN: broken weights, half precision or the rate."""
        return nonfinite_cause(self.unet, self.text_encoder, self.vae, self.autocast_dtype, rate)

    def evaluate(self, *, seed: int = 0, rounds: int = 4) -> float:
        """The mean loss over every image with fixed timesteps and noise and the captions as
        written: a noise-free measure of progress. Changes no training state."""
        import torch

        generator = torch.Generator().manual_seed(seed)
        losses = []
        with torch.no_grad():
            for _ in range(rounds):
                for index in range(len(self.images)):
                    losses.append(
                        float(self._loss([index], generator, [self.images[index].caption]))
                    )
        return sum(losses) / len(losses)

    # -- weights and resume state -------------------------------------------------------

    def lora_tensors(self) -> dict[str, torch.Tensor]:
        """kohya-keyed float32 CPU copies of the LoRA now."""
        return self.network.state_dict()

    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`load_state_dict` needs to continue exactly from this step."""
        return {
            "format": STATE_FORMAT,
            "kind": "lora",
            "step": self.step,
            "name": self.name,
            "images": len(self.images),
            "steps_per_epoch": self.steps_per_epoch,
            "network": self.lora_tensors(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "torch_generator": self.generator.get_state(),
            "python_rng": self.rng.getstate(),
            "order": self.order.state(),
            "loss_history": [list(entry) for entry in self.loss_history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT or state.get("kind") != "lora":
            raise ValueError("the saved training state is not a LoRA run's; it cannot be resumed")
        expected = (self.name, len(self.images), self.steps_per_epoch)
        found = (state["name"], state["images"], state["steps_per_epoch"])
        if found != expected:
            raise ValueError(
                "the saved training state belongs to other settings (name, image count, steps "
                f"per epoch {found} instead of {expected}); it cannot be resumed here"
            )
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        restore_random_streams(state, self.generator, self.rng)
        self.order.load(state["order"])
        self.step = int(state["step"])
        self.loss_history = [(int(s), float(v), float(r)) for s, v, r in state["loss_history"]]

    def close(self) -> None:
        """Take the LoRA layers off and give the networks back as they were."""
        slow_down(
            self.unet, self.text_encoder, self._cudnn_benchmark, checkpointing=self._checkpointing
        )
        self._checkpointing = False
        self.unet.eval()
        self.network.remove()
        thaw(self._grad_flags)
        self._grad_flags = []
