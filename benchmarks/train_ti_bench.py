"""Textual-inversion training speed: charstudio's loop against a plain reference loop.

    python benchmarks/train_ti_bench.py [--device cuda] [--steps 20] [--images 8] [--batch 8]
        [--size 512] [--vectors 2] [--precision auto] [--gradient-checkpointing] [--tiny]
        [--json] [--skip-reference]

Builds the full-size SD 1.5 architecture (UNet, VAE, CLIP text encoder) from the configs in
resources/sd15 with random weights (nothing is downloaded) and writes ``--images`` noise PNGs
of ``--size`` pixels: the seed workflow (8 images at 512×512, batch 8, 2 vectors). Then, in the
same process and on copies of the same weights, it times:

  - charstudio: :class:`~charstudio.training.ti_trainer.TextualInversionTrainer`, the loop the
    training job runs (VAE encode once, latents cached, fp16 weights under autocast on CUDA,
    SDPA attention, channels-last UNet, only the vectors trainable, the engine's A1111 prompt
    conditioning, AdamW);
  - the reference: a loop written the way diffusers' ``textual_inversion.py`` example trains:
    placeholder tokens added to a transformers tokenizer, the *whole* token-embedding matrix of
    an fp32 text encoder trainable (AdamW, weight decay 1e-2) with every other row restored
    after each step, the VAE in fp32 encoding the batch at every step, the UNet in the
    training precision under autocast with a gradient scaler, the networks' default attention
    processors. Images are decoded once up front for both (the example's data-loader workers
    overlap that work with training anyway).

For each: the one-time setup (image loading and, for charstudio, the VAE encode), seconds per
optimizer step (median over ``--steps`` timed steps after 2 warm-up steps, device synchronised),
the projected time of the workflow's 150 steps (setup + 150 × step) and the peak GPU memory.
Target (issue: textual inversion training): charstudio's 150 steps ≤ 0.5 × the reference's.
``--tiny`` uses the tiny test configs (tests/tiny_sd.py) at 32×32 for a CPU smoke run.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from PIL import Image
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from charstudio.engine.model_loading import sd15_config
from charstudio.prompts.clip_tokenizer import get_clip_tokenizer, read_merges
from charstudio.training.dataset import TrainingImage, load_training_pixels
from charstudio.training.latents import pixels_to_tensor
from charstudio.training.settings import TrainTISettings
from charstudio.training.ti_trainer import TextualInversionTrainer

TEMPLATE = "a closeup photo of {}, neutral gray background"
NAME = "fr3nchl4dy"
WORKFLOW_STEPS = 150
TARGET = 0.5
SEED = 1234


@dataclass
class Result:
    variant: str
    setup_s: float
    step_s: float  # median seconds per optimizer step
    projected_150_s: float
    peak_gib: float | None
    images_per_s: float
    ratio: float | None = None  # projected 150-step time over the reference's


# -- the model and the data ------------------------------------------------------------------


def _constructor_args(config: dict[str, Any]) -> dict[str, Any]:
    skip = {"architectures", "model_type", "torch_dtype", "dtype", "transformers_version"}
    return {k: v for k, v in config.items() if not k.startswith("_") and k not in skip}


def random_weights(tiny: bool) -> SimpleNamespace:
    """SD 1.5's networks (or the tiny test ones) with random weights, float32 on the CPU."""
    overrides = None
    if tiny:
        from tests.tiny_sd import TINY_CONFIGS

        overrides = TINY_CONFIGS
    configs = {c: sd15_config(c, overrides=overrides) for c in ("unet", "vae", "text_encoder")}
    torch.manual_seed(SEED)
    unet = UNet2DConditionModel.from_config(_constructor_args(configs["unet"]))
    vae = AutoencoderKL.from_config(_constructor_args(configs["vae"]))
    text_encoder = CLIPTextModel(CLIPTextConfig(**_constructor_args(configs["text_encoder"])))
    for model in (unet, vae, text_encoder):
        model.eval()
    return SimpleNamespace(unet=unet, vae=vae, text_encoder=text_encoder)


def copy_to(model: torch.nn.Module, device: str, dtype: torch.dtype) -> Any:
    from diffusers.utils import logging as diffusers_logging

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # no "keep in float32" notices for plain casts
    try:
        return copy.deepcopy(model).to(device=device, dtype=dtype)
    finally:
        diffusers_logging.set_verbosity(verbosity)


def write_images(folder: Path, count: int, size: int) -> list[TrainingImage]:
    images = []
    for i in range(count):
        rng = random.Random(i)
        path = folder / f"{i:02d}.png"
        Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3)).save(path)
        images.append(TrainingImage(path, None, ""))
    return images


def hf_tokenizer(folder: Path) -> CLIPTokenizer:
    """transformers' CLIPTokenizer from the CLIP BPE file shipped in resources/clip."""
    ours = get_clip_tokenizer()
    vocab = {ours.id_to_token(i): i for i in range(ours.vocab_size)}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges = "".join(f"{first} {second}\n" for first, second in read_merges())
    (folder / "merges.txt").write_text("#version: 0.2\n" + merges, encoding="utf-8")
    return CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77
    )


# -- timing ----------------------------------------------------------------------------------


def sync(device: str) -> float:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def free_memory(device: str) -> None:
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: str) -> float | None:
    if torch.device(device).type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def time_steps(step: Callable[[], None], device: str, steps: int) -> float:
    for _ in range(2):  # warm-up: kernels chosen, memory pools filled
        step()
    times = []
    for _ in range(steps):
        start = sync(device)
        step()
        times.append(sync(device) - start)
    return statistics.median(times)


def result(variant: str, setup_s: float, step_s: float, device: str, batch: int) -> Result:
    return Result(
        variant=variant,
        setup_s=setup_s,
        step_s=step_s,
        projected_150_s=setup_s + WORKFLOW_STEPS * step_s,
        peak_gib=peak_gib(device),
        images_per_s=batch / step_s,
    )


# -- the contenders --------------------------------------------------------------------------


def weight_dtype(args: argparse.Namespace) -> torch.dtype:
    if torch.device(args.device).type != "cuda" or args.precision == "fp32":
        return torch.float32
    return torch.bfloat16 if args.precision == "bf16" else torch.float16


def run_charstudio(
    weights: SimpleNamespace, images: list[TrainingImage], args: argparse.Namespace
) -> Result:
    dtype = weight_dtype(args)
    components = SimpleNamespace(
        unet=copy_to(weights.unet, args.device, dtype),
        vae=copy_to(weights.vae, args.device, dtype),
        text_encoder=copy_to(weights.text_encoder, args.device, dtype),
    )
    settings = TrainTISettings(
        name=NAME,
        vectors=args.vectors,
        width=args.size,
        height=args.size,
        max_steps=10_000,
        template=TEMPLATE.format("[name]"),
        gradient_checkpointing=args.gradient_checkpointing,
        seed=SEED,
    )
    free_memory(args.device)
    start = sync(args.device)
    trainer = TextualInversionTrainer(
        components,
        settings,
        images,
        batch_size=args.batch,
        gradient_accumulation=1,
        device=args.device,
    )
    for _ in trainer.prepare():
        pass
    setup_s = sync(args.device) - start
    step_s = time_steps(trainer.train_step, args.device, args.steps)
    out = result("charstudio", setup_s, step_s, args.device, args.batch)
    trainer.close()
    del trainer, components
    free_memory(args.device)
    return out


class ReferenceLoop:
    """diffusers' textual_inversion.py example's training step, condensed."""

    def __init__(
        self,
        weights: SimpleNamespace,
        images: list[TrainingImage],
        tokenizer: CLIPTokenizer,
        args: argparse.Namespace,
    ) -> None:
        self.device = args.device
        self.dtype = weight_dtype(args)
        self.batch = args.batch
        self.unet = copy_to(weights.unet, args.device, self.dtype).requires_grad_(False)
        self.vae = copy_to(weights.vae, args.device, torch.float32).requires_grad_(False)
        text_encoder = copy_to(weights.text_encoder, args.device, torch.float32)
        placeholders = [f"<{NAME}>"] + [f"<{NAME}>_{i}" for i in range(1, args.vectors)]
        tokenizer.add_tokens(placeholders)
        ids = tokenizer.convert_tokens_to_ids(placeholders)
        text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        table = text_encoder.get_input_embeddings().weight
        init = tokenizer.encode("woman", add_special_tokens=False)[0]
        with torch.no_grad():
            for token_id in ids:
                table[token_id] = table[init].clone()
        text_encoder.requires_grad_(False)
        text_encoder.get_input_embeddings().requires_grad_(True)
        text_encoder.train()
        self.text_encoder = text_encoder
        self.original = table.detach().clone()
        self.keep = torch.ones(len(tokenizer), dtype=torch.bool, device=args.device)
        self.keep[min(ids) : max(ids) + 1] = False
        self.optimizer = torch.optim.AdamW(
            text_encoder.get_input_embeddings().parameters(),
            lr=0.002,
            betas=(0.9, 0.999),
            weight_decay=1e-2,
            eps=1e-8,
        )
        self.noise_scheduler = DDPMScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
        )
        text = TEMPLATE.format(" ".join(placeholders))
        self.input_ids = tokenizer(
            [text] * args.batch,
            padding="max_length",
            truncation=True,
            max_length=tokenizer.model_max_length,
            return_tensors="pt",
        ).input_ids.to(args.device)
        pixels = [
            pixels_to_tensor(load_training_pixels(image.path, args.size, args.size)[0])
            for image in images
        ]
        self.pixels = torch.stack(pixels).to(args.device)
        self.order: list[int] = []
        self.autocast = torch.device(args.device).type == "cuda" and self.dtype != torch.float32
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None

    def step(self) -> None:
        if len(self.order) < self.batch:
            self.order = random.sample(range(len(self.pixels)), len(self.pixels))
        batch, self.order = self.order[: self.batch], self.order[self.batch :]
        pixel_values = self.pixels[batch]
        latents = self.vae.encode(pixel_values).latent_dist.sample().detach()
        latents = latents * self.vae.config.scaling_factor
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, 1000, (len(batch),), device=self.device).long()
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        with torch.autocast("cuda", dtype=self.dtype, enabled=self.autocast):
            hidden = self.text_encoder(self.input_ids[: len(batch)])[0].to(self.dtype)
            predicted = self.unet(noisy.to(self.dtype), timesteps, hidden).sample
        loss = F.mse_loss(predicted.float(), noise.float(), reduction="mean")
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.optimizer.zero_grad()
        with torch.no_grad():  # only the new tokens may change
            table = self.text_encoder.get_input_embeddings().weight
            table[self.keep] = self.original[self.keep]


def run_reference(
    weights: SimpleNamespace,
    images: list[TrainingImage],
    tokenizer: CLIPTokenizer,
    args: argparse.Namespace,
) -> Result:
    free_memory(args.device)
    start = sync(args.device)
    loop = ReferenceLoop(weights, images, tokenizer, args)
    setup_s = sync(args.device) - start
    step_s = time_steps(loop.step, args.device, args.steps)
    out = result("reference (diffusers example)", setup_s, step_s, args.device, args.batch)
    del loop
    free_memory(args.device)
    return out


# -- report ----------------------------------------------------------------------------------


def device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def print_table(results: list[Result]) -> None:
    print(
        f"{'variant':<30} {'setup s':>8} {'s/step':>8} {'img/s':>7} {'150 steps s':>12} "
        f"{'peak GiB':>9} {'ratio':>6}"
    )
    for r in results:
        peak = f"{r.peak_gib:.2f}" if r.peak_gib is not None else "-"
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else "-"
        print(
            f"{r.variant:<30} {r.setup_s:>8.2f} {r.step_s:>8.3f} {r.images_per_s:>7.2f} "
            f"{r.projected_150_s:>12.1f} {peak:>9} {ratio:>6}"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20, help="timed steps after 2 warm-ups")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=None, help="pixels (512; 32 with --tiny)")
    parser.add_argument("--vectors", type=int, default=2)
    parser.add_argument("--precision", choices=("auto", "fp16", "bf16", "fp32"), default="auto")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="tiny test networks (CPU smoke run)")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args()
    if args.size is None:
        args.size = 32 if args.tiny else 512
    if args.batch > args.images:
        parser.error("--batch must not exceed --images (a step never repeats an image)")
    return args


def main() -> int:
    args = parse_args()
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    weights = random_weights(args.tiny)
    print(
        f"SD 1.5 {'tiny test configs' if args.tiny else 'full size'}, random weights; "
        f"{args.images} images {args.size}×{args.size}, batch {args.batch}, "
        f"{args.vectors} vectors; {device_name(args.device)}; torch {torch.__version__}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        images = write_images(Path(tmp), args.images, args.size)
        results = [run_charstudio(weights, images, args)]
        if not args.skip_reference:
            reference = run_reference(weights, images, hf_tokenizer(Path(tmp)), args)
            results.insert(0, reference)
            results[1].ratio = results[1].projected_150_s / reference.projected_150_s
    print_table(results)
    if not args.skip_reference:
        ratio = results[1].ratio or 0.0
        verdict = "met" if ratio <= TARGET else "NOT met"
        print(
            f"target: charstudio's 150 steps ≤ {TARGET}× the reference's: {verdict} ({ratio:.2f}×)"
        )
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
