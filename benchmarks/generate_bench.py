"""Generation speed: SD 1.5 with random weights, charstudio against a plain diffusers pipeline.

    python benchmarks/generate_bench.py [--device cuda] [--batches 1,4,8] [--steps 30]
        [--size 512] [--runs 3] [--compile] [--tiny] [--json]

Builds the full-size SD 1.5 architecture (UNet, VAE, CLIP text encoder) from the configs in
resources/sd15 with random weights (nothing is downloaded), then, in the same process and on
copies of the same weights, times one batch of one prompt for each batch size:

  - the baseline: diffusers' StableDiffusionPipeline as its documentation sets it up, fp16 on
    CUDA (fp32 on the CPU), default attention, DPM++ 2M Karras (DPMSolverMultistepScheduler
    with Karras sigmas), CFG 7, ``output_type="pil"``; only its progress bar is switched off;
  - charstudio: ``ModelRunner.batch``, the path every generation takes (A1111 prompt encoding,
    sampling, VAE decode to PIL, infotext), with the default engine options (fp16 on CUDA,
    SDPA attention, channels-last);
  - with ``--compile``, charstudio with torch.compile on the UNet as well.

Each (variant, batch) gets one warm-up call, then ``--runs`` timed calls. Reported: seconds
per batch and images/s end to end (text encoding and decoding to PIL included), it/s in
A1111's sense (sampling steps per second of the sampling loop, from the first UNet call to
the end of the last step), peak GPU memory and charstudio's images/s over the baseline's at
the same batch size. ``--tiny`` uses the tiny test configs (tests/tiny_sd.py) for a quick
check on the CPU. Target (issue: generation speed): ≥ 1.3× the baseline's images/s at batch 8.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from diffusers import (
    AutoencoderKL,
    DPMSolverMultistepScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from charstudio.catalog import Project
from charstudio.engine.model_loading import ModelCache, SD15Components, sd15_config
from charstudio.engine.runner import ModelRunner
from charstudio.engine.runtime import EngineOptions
from charstudio.engine.sweeps import GenerationSettings
from charstudio.prompts.clip_tokenizer import get_clip_tokenizer, read_merges

PROMPT = (
    "an extreme closeup front shot photo of a 25yo French woman, chin length straight black "
    "hair in a bob cut with bangs, neutral gray background, neutral face expression"
)
SEED = 1234
CFG_SCALE = 7.0
TARGET = 1.3
TARGET_BATCH = 8
BASELINE = "diffusers pipeline"


@dataclass
class Result:
    variant: str
    batch: int
    steps: int
    unet_calls: int
    warmup_s: float
    batch_s: float  # median seconds per batch, end to end
    sampling_s: float  # median seconds of the sampling loop
    it_per_s: float
    images_per_s: float
    peak_gib: float | None
    ratio: float | None = None  # images/s over the baseline's at the same batch
    runs_s: list[float] = field(default_factory=list)


# -- the model -------------------------------------------------------------------------------


@dataclass
class Weights:
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    scheduler_config: dict[str, Any]


def _constructor_args(config: dict[str, Any]) -> dict[str, Any]:
    skip = {"architectures", "model_type", "torch_dtype", "dtype", "transformers_version"}
    return {k: v for k, v in config.items() if not k.startswith("_") and k not in skip}


def random_weights(tiny: bool, seed: int) -> Weights:
    """SD 1.5's networks (or the tiny test ones) with random weights, float32 on the CPU."""
    overrides = None
    if tiny:
        from tests.tiny_sd import TINY_CONFIGS

        overrides = TINY_CONFIGS
    configs = {c: sd15_config(c, overrides=overrides) for c in ("unet", "vae", "text_encoder")}
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(_constructor_args(configs["unet"]))
    vae = AutoencoderKL.from_config(_constructor_args(configs["vae"]))
    text_encoder = CLIPTextModel(CLIPTextConfig(**_constructor_args(configs["text_encoder"])))
    for model in (unet, vae, text_encoder):
        model.eval().requires_grad_(False)
    return Weights(unet, vae, text_encoder, sd15_config("scheduler"))


def copy_to(weights: Weights, device: str, dtype: torch.dtype) -> tuple[Any, Any, Any]:
    """Fresh module instances, so one variant's layout or compilation never reaches another."""
    from diffusers.utils import logging as diffusers_logging

    # diffusers warns about casting with to() even when no module needs to stay in float32.
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        return tuple(
            copy.deepcopy(model).to(device=device, dtype=dtype)
            for model in (weights.unet, weights.vae, weights.text_encoder)
        )  # type: ignore[return-value]
    finally:
        diffusers_logging.set_verbosity(verbosity)


def write_hf_tokenizer(folder: Path) -> CLIPTokenizer:
    """transformers' CLIPTokenizer from the CLIP BPE file shipped in resources/clip."""
    ours = get_clip_tokenizer()
    vocab = {ours.id_to_token(i): i for i in range(ours.vocab_size)}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges = "".join(f"{first} {second}\n" for first, second in read_merges())
    (folder / "merges.txt").write_text("#version: 0.2\n" + merges, encoding="utf-8")
    tokenizer = CLIPTokenizer.from_pretrained(str(folder), model_max_length=77)
    expected = [ours.bos_id, *ours.encode(PROMPT), ours.eos_id]
    if tokenizer(PROMPT).input_ids != expected:
        raise RuntimeError("the transformers tokenizer disagrees with charstudio's on the prompt")
    return tokenizer


# -- timing ----------------------------------------------------------------------------------


class Clock:
    """End-to-end and sampling-loop times of one call.

    A pre-hook on the UNet marks the start of sampling at its first call; the caller marks the
    end after the last step. The device is synchronised at every mark.
    """

    def __init__(self, device: str) -> None:
        self.cuda = torch.device(device).type == "cuda"
        self.device = device
        self.calls = 0
        self.sampling_start = 0.0
        self.sampling_end = 0.0

    def sync(self) -> float:
        if self.cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def unet_pre_hook(self, _module: Any, _args: Any) -> None:
        if self.calls == 0:
            self.sampling_start = self.sync()
        self.calls += 1

    def end_of_sampling(self) -> None:
        self.sampling_end = self.sync()

    def time(self, call: Callable[[], list[Any]], batch: int) -> tuple[float, float, int]:
        """Seconds for ``call`` (which must return ``batch`` images), sampling seconds, calls."""
        self.calls = 0
        start = self.sync()
        images = call()
        total = self.sync() - start
        if len(images) != batch:
            raise RuntimeError(f"expected {batch} images, got {len(images)}")
        return total, self.sampling_end - self.sampling_start, self.calls


# -- the contenders --------------------------------------------------------------------------


class Variant:
    name: str
    clock: Clock

    def generate(self, batch: int) -> list[Any]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class PlainPipeline(Variant):
    name = BASELINE

    def __init__(self, weights: Weights, tokenizer: CLIPTokenizer, args: argparse.Namespace):
        self.args = args
        self.clock = Clock(args.device)
        unet, vae, text_encoder = copy_to(weights, args.device, args.dtype)
        scheduler = DPMSolverMultistepScheduler.from_config(
            weights.scheduler_config, use_karras_sigmas=True
        )
        self.pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        ).to(args.device)
        self.pipe.set_progress_bar_config(disable=True)
        self.unet = self.pipe.unet
        self.hook = self.unet.register_forward_pre_hook(self.clock.unet_pre_hook)

    def _on_step_end(self, pipe: Any, index: int, _t: Any, kwargs: dict[str, Any]) -> Any:
        if index == pipe.num_timesteps - 1:
            self.clock.end_of_sampling()
        return kwargs

    def generate(self, batch: int) -> list[Any]:
        with warnings.catch_warnings():
            # Random weights may give NaN pixels in fp16; numpy warns when casting them.
            warnings.filterwarnings("ignore", message="invalid value encountered in cast")
            return self.pipe(
                PROMPT,
                height=self.args.size,
                width=self.args.size,
                num_inference_steps=self.args.steps,
                guidance_scale=CFG_SCALE,
                num_images_per_prompt=batch,
                generator=torch.Generator("cpu").manual_seed(SEED),
                output_type="pil",
                callback_on_step_end=self._on_step_end,
            ).images

    def close(self) -> None:
        self.hook.remove()
        del self.pipe, self.unet


class Charstudio(Variant):
    def __init__(self, weights: Weights, args: argparse.Namespace, *, compile: bool) -> None:
        self.name = "charstudio + torch.compile" if compile else "charstudio"
        self.args = args
        self.clock = Clock(args.device)
        unet, vae, text_encoder = copy_to(weights, args.device, args.dtype)
        components = SD15Components(
            unet=unet,
            vae=vae,
            text_encoder=text_encoder,
            model_hash=None,
            name="sd15-random",
            source="sd15-random",
            kind="safetensors",
            scheduler_config=dict(weights.scheduler_config),
        )
        del unet, vae, text_encoder
        self.folder = Path(tempfile.mkdtemp(prefix="charstudio-gen-bench-"))
        self.project = Project.create(self.folder / "project", "Bench")
        placeholder = self.project.root / "models" / "sd15-random.safetensors"
        placeholder.touch()  # what the settings name; the loader below hands out the copies
        self.cache = ModelCache(loader=lambda _path, **_kwargs: components)
        options = EngineOptions(device=args.device, compile=compile)
        self.runner = ModelRunner(self.project, options=options, cache=self.cache)
        self.settings = GenerationSettings(
            prompt=PROMPT,
            negative_prompt="",
            steps=args.steps,
            sampler="DPM++ 2M",
            schedule_type="Karras",
            cfg_scale=CFG_SCALE,
            width=args.size,
            height=args.size,
            model=str(placeholder),
        )
        # What a job does before its first batch: load (here: hand out) and prepare the model.
        self.unet = self.runner.load(self.settings).unet
        self.hook = self.unet.register_forward_pre_hook(self.clock.unet_pre_hook)

    def generate(self, batch: int) -> list[Any]:
        seeds = [SEED + n for n in range(batch)]
        loop = self.runner.batch(self.settings, seeds)
        while True:
            try:
                event = next(loop)
            except StopIteration as done:
                return [image for image, _params in done.value]
            if event.step == event.total:
                self.clock.end_of_sampling()

    def close(self) -> None:
        self.hook.remove()
        self.cache.clear()
        del self.runner, self.cache, self.unet
        self.project.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def free_memory(device: str) -> None:
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        left = torch.cuda.memory_allocated(device) / 2**30
        if left > 0.05:  # the next variant's peak would include it
            print(f"warning: {left:.2f} GiB still allocated after freeing a variant")


def measure(variant: Variant, batches: list[int], args: argparse.Namespace) -> list[Result]:
    clock = variant.clock
    results = []
    for batch in batches:
        warmup, _, _ = clock.time(lambda b=batch: variant.generate(b), batch)
        if clock.cuda:
            torch.cuda.reset_peak_memory_stats(args.device)
        totals, samplings, calls = [], [], 0
        for _ in range(args.runs):
            total, sampling, calls = clock.time(lambda b=batch: variant.generate(b), batch)
            totals.append(total)
            samplings.append(sampling)
        peak = torch.cuda.max_memory_allocated(args.device) / 2**30 if clock.cuda else None
        batch_s, sampling_s = statistics.median(totals), statistics.median(samplings)
        results.append(
            Result(
                variant=variant.name,
                batch=batch,
                steps=args.steps,
                unet_calls=calls,
                warmup_s=warmup,
                batch_s=batch_s,
                sampling_s=sampling_s,
                it_per_s=calls / sampling_s,
                images_per_s=batch / batch_s,
                peak_gib=peak,
                runs_s=totals,
            )
        )
        print(f"  {variant.name}, batch {batch}: {batch / batch_s:.3f} images/s", flush=True)
    return results


# -- report ----------------------------------------------------------------------------------


def device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def print_table(results: list[Result]) -> None:
    print(
        f"{'':28}{'batch':>6}{'s/batch':>9}{'sampling':>10}{'it/s':>8}{'images/s':>10}"
        f"{'peak GPU':>10}{'vs pipeline':>13}{'first call':>12}"
    )
    for r in results:
        peak = f"{r.peak_gib:6.2f} GiB" if r.peak_gib is not None else "       n/a"
        ratio = f"{r.ratio:11.2f}×" if r.ratio is not None else f"{'':12}"
        print(
            f"{r.variant:28}{r.batch:>6}{r.batch_s:>9.3f}{r.sampling_s:>8.3f} s{r.it_per_s:>8.2f}"
            f"{r.images_per_s:>10.3f}{peak:>10}{ratio:>13}{r.warmup_s:>10.2f} s"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", default="1,4,8", help="comma-separated batch sizes")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--size", type=int, default=512, help="width and height in pixels")
    parser.add_argument("--runs", type=int, default=3, help="timed calls after one warm-up")
    parser.add_argument("--tiny", action="store_true", help="tiny test networks (CPU smoke run)")
    parser.add_argument("--compile", action="store_true", help="also charstudio + torch.compile")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args()
    args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    if not args.batches or min(args.batches) < 1 or args.runs < 1 or args.steps < 1:
        parser.error("batches, runs and steps must be positive")
    if args.size % 8:
        parser.error("--size must be a multiple of 8")
    # The dtype each contender uses: diffusers' usual fp16 on CUDA, and charstudio's default.
    args.dtype = EngineOptions(device=args.device).resolved_dtype(args.device)
    return args


def main() -> int:
    args = parse_args()
    import diffusers
    import transformers

    print(
        f"device: {device_name(args.device)}; torch {torch.__version__}, diffusers "
        f"{diffusers.__version__}, transformers {transformers.__version__}"
    )
    print(
        f"{'tiny test' if args.tiny else 'full-size SD 1.5'} networks, random weights, "
        f"{str(args.dtype).removeprefix('torch.')}; {args.size}×{args.size}, {args.steps} steps "
        f"DPM++ 2M Karras, CFG {CFG_SCALE:g}; batches {args.batches}; "
        f"1 warm-up + {args.runs} timed runs each (median reported)"
    )
    started = time.perf_counter()
    weights = random_weights(args.tiny, SEED)
    print(f"built random weights in {time.perf_counter() - started:.1f} s", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="charstudio-gen-bench-tok-"))
    results: list[Result] = []
    try:
        tokenizer = write_hf_tokenizer(tmp)
        makers: list[Callable[[], Variant]] = [
            lambda: PlainPipeline(weights, tokenizer, args),
            lambda: Charstudio(weights, args, compile=False),
        ]
        if args.compile:
            makers.append(lambda: Charstudio(weights, args, compile=True))
        for make in makers:
            variant = make()
            try:
                results.extend(measure(variant, args.batches, args))
            finally:
                variant.close()
                del variant
                free_memory(args.device)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.compile:
        torch._dynamo.reset()

    base = {r.batch: r.images_per_s for r in results if r.variant == BASELINE}
    for r in results:
        if r.variant != BASELINE and r.batch in base:
            r.ratio = r.images_per_s / base[r.batch]
    print()
    print_table(results)
    print("it/s: sampling steps per second (each step runs the UNet once on the CFG pair)")
    for r in results:
        if r.unet_calls != r.steps:
            print(f"warning: {r.variant} ran the UNet {r.unet_calls} times for {r.steps} steps")
    for r in results:
        if r.variant != BASELINE and r.batch == TARGET_BATCH and r.ratio is not None:
            verdict = "met" if r.ratio >= TARGET else "not met"
            print(f"target ≥ {TARGET}× at batch {TARGET_BATCH} ({r.variant}): {verdict}")
    if TARGET_BATCH not in args.batches:
        print(f"target ≥ {TARGET}× at batch {TARGET_BATCH}: not measured")
    print(f"total time {time.perf_counter() - started:.0f} s")
    if args.json:
        report = {
            "device": device_name(args.device),
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
            "dtype": str(args.dtype).removeprefix("torch."),
            "tiny": args.tiny,
            "size": args.size,
            "steps": args.steps,
            "runs": args.runs,
            "results": [asdict(r) for r in results],
        }
        print(json.dumps(report, indent=2))
    if "PySide6" in sys.modules:  # the engine must stay Qt-free
        print("warning: PySide6 was imported")
    return 0


if __name__ == "__main__":
    sys.exit(main())
