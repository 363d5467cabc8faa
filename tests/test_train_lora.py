"""LoRA training end to end on a tiny random-weight model (CPU, 16×16 images): kohya files with
their metadata and catalog rows per epoch, samples, only the LoRA learning, the files loading in
charstudio's ``<lora:>`` path and in diffusers, pause/resume bit-exact against an uninterrupted
run, a NaN stopping the run with nothing NaN written."""

from __future__ import annotations

import csv
import hashlib
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from charstudio.catalog import Project  # noqa: E402
from charstudio.engine.loras import apply_loras, load_lora  # noqa: E402
from charstudio.engine.model_hash import addnet_hash  # noqa: E402
from charstudio.jobs import CancelToken, Progress, run_job  # noqa: E402
from charstudio.metadata.imagefile import read_infotext  # noqa: E402
from charstudio.metadata.infotext import parse_infotext  # noqa: E402
from charstudio.training import records  # noqa: E402
from charstudio.training.dataset import gather_images  # noqa: E402
from charstudio.training.lora import (  # noqa: E402
    LoraTrainResult,
    check_lora_params,
    train_lora_job,
)
from charstudio.training.lora_network import LoraNetwork  # noqa: E402
from charstudio.training.lora_settings import TrainLoraSettings  # noqa: E402
from charstudio.training.lora_trainer import LoraTrainer  # noqa: E402
from charstudio.training.pause import request_pause  # noqa: E402
from charstudio.training.ti import TrainingError  # noqa: E402

from .test_train_ti import SIZE, TOKEN, make_project, responsive_tiny_model  # noqa: E402
from .tiny_sd import diffusers_pipeline, write_diffusers_folder  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)

EPOCHS = 3
STEPS_PER_EPOCH = 4  # 4 images × 2 repeats in batches of 2


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models train many times faster on one thread than on threads fighting for busy
    cores; the results are the same."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lora_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models") / "tiny-sd"
    return write_diffusers_folder(folder, responsive_tiny_model())


def settings(**changes: Any) -> dict[str, Any]:
    """Small settings that use every random stream: shuffled tags with dropout, caption dropout,
    a new latent draw per sample, noise offset, warmup then cosine."""
    base = {
        "resolution": SIZE,
        "buckets": False,
        "epochs": EPOCHS,
        "repeats": 2,
        "batch_size": 2,
        "dim": 4,
        "alpha": 2.0,
        "unet_lr": 1e-3,
        "te_lr": 5e-4,
        "scheduler": "cosine_with_warmup",
        "warmup_steps": 2,
        "tag_dropout": 0.2,
        "caption_dropout": 0.1,
        "noise_offset": 0.05,
        "cache_latents": False,
        "sample_steps": 2,
        "max_samples": 1,
        "seed": 4321,
    }
    base.update(changes)
    return base


def params(model_dir: Path, **changes: Any) -> dict[str, Any]:
    return {"settings": settings(**changes), "model": str(model_dir), "images": "picks"}


def train(
    project: Project,
    job_params: dict[str, Any],
    *,
    on_event: Callable[[Progress], None] | None = None,
    loader: Callable[..., Any] | None = None,
) -> tuple[LoraTrainResult, list[Progress]]:
    events: list[Progress] = []

    def collect(event: Progress) -> None:
        events.append(event)
        if on_event is not None:
            on_event(event)

    job = train_lora_job(project, job_params, CancelToken(), 0, loader=loader)
    return run_job(job, collect), events


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, lora_model_dir: Path) -> dict[str, Any]:
    """An uninterrupted 3-epoch run: what pausing and resuming must reproduce."""
    root = tmp_path_factory.mktemp("reference")
    with make_project(root / "proj") as project:
        result, events = train(project, params(lora_model_dir))
        folder = project.root / result.folder
        return {
            "result": result,
            "events": events,
            "root": project.root,
            "tensors": {e: load_file(folder / f"{TOKEN}-{e:06d}.safetensors") for e in (1, 2, 3)},
            "losses": (folder / "loss.csv").read_text(encoding="utf-8"),
        }


def _metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata())


# -- a whole run ---------------------------------------------------------------------------


def test_epochs_are_kohya_files_with_catalog_rows(reference) -> None:
    result: LoraTrainResult = reference["result"]
    assert (result.status, result.step, result.end_step) == ("done", 12, 12)
    assert result.folder == f"runs/lora-001-{TOKEN}" and result.epoch == EPOCHS
    with Project.open(reference["root"]) as project:
        folder = project.root / result.folder
        files = sorted(p.name for p in folder.glob("*.safetensors"))
        assert files == [f"{TOKEN}-{e:06d}.safetensors" for e in (1, 2, 3)]
        assert not [p for p in folder.rglob(".*")]  # no temporary files left behind
        run = records.get_run(project.catalog, result.run_id)
        assert (run.kind, run.name, run.status) == ("lora", TOKEN, "done")
        assert run.params["steps_per_epoch"] == STEPS_PER_EPOCH
        assert (run.params["epochs"], run.params["dim"], run.params["alpha"]) == (EPOCHS, 4, 2.0)
        assert run.params["token"] == TOKEN and run.params["model_name"] == "tiny-sd"
        assert run.params["clip_skip"] == 1 and run.params["resolution"] == SIZE
        assert len(run.params["sample_prompts"]) == len(run.params["seeds"]) == 1
        assert records.run_image_ids(project.catalog, run.id) == [
            r.id for r in project.catalog.images()
        ]
        rows = records.run_checkpoints(project.catalog, run.id)
        assert [r.step for r in rows] == [4, 8, 12]
        for row in rows:
            data = (project.root / row.path).read_bytes()
            assert row.sha256 == hashlib.sha256(data).hexdigest() and row.loss > 0
        with open(folder / "loss.csv", newline="", encoding="utf-8") as fh:
            assert [int(r["step"]) for r in csv.DictReader(fh)] == list(range(1, 13))


def test_file_keys_dtype_and_metadata_are_kohya(reference) -> None:
    result: LoraTrainResult = reference["result"]
    path = Path(reference["root"]) / result.folder / f"{TOKEN}-000002.safetensors"
    tensors = load_file(path)
    stems = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in tensors}
    assert any(s.startswith("lora_unet_down_blocks_0_attentions_0_") for s in stems)
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj" in stems
    for stem in stems:
        assert stem.startswith(("lora_unet_", "lora_te_text_model_encoder_layers_"))
        assert {f"{stem}.lora_down.weight", f"{stem}.lora_up.weight", f"{stem}.alpha"} <= set(
            tensors
        )
    assert {t.dtype for t in tensors.values()} == {torch.float16}
    meta = _metadata(path)
    assert meta["ss_output_name"] == TOKEN and meta["ss_network_module"] == "networks.lora"
    assert (meta["ss_network_dim"], meta["ss_network_alpha"]) == ("4", "2.0")
    assert (meta["ss_epoch"], meta["ss_steps"], meta["ss_num_epochs"]) == ("2", "8", "3")
    assert meta["ss_base_model_version"] == "sd_v1" and meta["ss_v2"] == "False"
    assert meta["ss_sd_model_name"] == "tiny-sd" and meta["ss_seed"] == "4321"
    assert meta["ss_lr_scheduler"] == "cosine_with_warmup" and meta["ss_keep_tokens"] == "1"
    assert meta["ss_optimizer"].startswith("torch.optim.adamw.AdamW")
    assert meta["ss_min_snr_gamma"] == "5.0" and meta["ss_noise_offset"] == "0.05"
    assert json.loads(meta["ss_dataset_dirs"]) == {f"2_{TOKEN}": {"n_repeats": 2, "img_count": 4}}
    assert json.loads(meta["ss_tag_frequency"])[f"2_{TOKEN}"][TOKEN] == 4
    assert meta["sshs_model_hash"] == addnet_hash(path.read_bytes())
    assert len(meta["sshs_legacy_hash"]) == 8
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert meta["modelspec.title"] == TOKEN
    assert float(meta["ss_training_finished_at"]) >= float(meta["ss_training_started_at"])


def test_progress_and_samples(reference) -> None:
    events: list[Progress] = reference["events"]
    steps = [e for e in events if "loss" in e.detail]
    assert [e.done for e in steps] == list(range(1, 13))
    for event in steps:
        assert event.total == 12 and event.detail["it_per_s"] > 0
        assert ("checkpoint_path" in event.detail) == (event.done % STEPS_PER_EPOCH == 0)
    sampled = [e.detail["epoch"] for e in events if "samples" in e.detail]
    assert sampled == [0, 1, 2, 3]  # the step-0 sample, then every epoch
    result: LoraTrainResult = reference["result"]
    sample = Path(reference["root"]) / result.folder / "previews" / f"{TOKEN}-000003-0.png"
    info = parse_infotext(read_infotext(sample))
    assert info.prompt.startswith(TOKEN) and info.prompt.endswith(f"<lora:{TOKEN}-000003:1>")
    assert info.seed == 0 and info.steps == 2  # the first image's own seed
    assert info.settings["Lora hashes"].startswith(f"{TOKEN}-000003: ")
    start = parse_infotext(read_infotext(sample.with_name(f"{TOKEN}-000000-0.png")))
    assert "<lora:" not in start.prompt


# -- the trainer ---------------------------------------------------------------------------


def _trainer(model: Any, project: Project, **changes: Any) -> LoraTrainer:
    lora = TrainLoraSettings.from_json(settings(**changes)).replace(name=TOKEN, token=TOKEN)
    images = gather_images(project, "picks")
    trainer = LoraTrainer(
        model,
        lora,
        images,
        buckets=[(SIZE, SIZE)] * len(images),
        repeats=lora.repeats or 1,
        epochs=lora.epochs or 1,
        device="cpu",
    )
    for _ in trainer.prepare():
        pass
    return trainer


def test_loss_falls_and_only_the_lora_changes(tmp_path: Path) -> None:
    model = responsive_tiny_model()
    before = {
        name: {k: v.clone() for k, v in part.state_dict().items()}
        for name, part in (("unet", model.unet), ("te", model.text_encoder), ("vae", model.vae))
    }
    with make_project(tmp_path / "proj") as project:
        trainer = _trainer(
            model,
            project,
            epochs=4,
            unet_lr=1e-2,
            te_lr=1e-2,
            scheduler="constant",
            tag_dropout=0.0,
            caption_dropout=0.0,
            shuffle_tags=False,
            noise_offset=0.0,
            cache_latents=True,
            min_snr_gamma=0.0,
        )
        start = trainer.evaluate(seed=1)
        while trainer.step < trainer.end_step:
            trainer.train_step()
        end = trainer.evaluate(seed=1)
        assert end < start * 0.9, (start, end)
        trained = trainer.lora_tensors()
        assert any(k.endswith("lora_up.weight") and v.abs().max() > 0 for k, v in trained.items())
        trainer.close()
    for name, part in (("unet", model.unet), ("te", model.text_encoder), ("vae", model.vae)):
        after = part.state_dict()
        assert set(after) == set(before[name])  # the LoRA layers are gone again
        assert all(torch.equal(after[k], before[name][k]) for k in after), name


def test_saved_file_gives_the_same_unet_in_charstudio_and_diffusers(reference) -> None:
    """The epoch file merged by charstudio's ``<lora:>`` path and loaded by diffusers'
    ``load_lora_weights`` give the UNet (and text encoder) the trained LoRA gave."""
    result: LoraTrainResult = reference["result"]
    path = Path(reference["root"]) / result.folder / f"{TOKEN}-000003.safetensors"
    tensors = {k: v.float() for k, v in load_file(path).items()}
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn((1, 4, 8, 8), generator=gen)
    ids = torch.tensor([[49406, 320, 1125, 539, 49407] + [49407] * 72])

    def outputs(model: Any) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            cond = model.text_encoder(ids)[0]
            return cond, model.unet(latents, 500, encoder_hidden_states=cond).sample

    trained = responsive_tiny_model()
    network = LoraNetwork(trained.unet, trained.text_encoder, dim=4, alpha=2.0)
    network.load_state_dict(tensors)
    want_cond, want = outputs(trained)

    merged = responsive_tiny_model()
    lora = load_lora(path)
    applied = apply_loras(merged.unet, merged.text_encoder, [(lora, 1.0)])
    assert not applied.unmatched
    cond, got = outputs(merged)
    assert torch.allclose(cond, want_cond, atol=1e-5) and torch.allclose(got, want, atol=1e-5)
    base = responsive_tiny_model()
    assert not torch.allclose(outputs(base)[1], want, atol=1e-4)  # the LoRA changes the output

    plain = responsive_tiny_model()
    pipe = diffusers_pipeline(plain, Path(reference["root"]).parent / "no-tokenizer")
    pipe.load_lora_weights(str(path))
    cond, got = outputs(plain)
    assert torch.allclose(cond, want_cond, atol=1e-5) and torch.allclose(got, want, atol=1e-5)


# -- pause, resume, NaN ----------------------------------------------------------------------


def test_pause_then_resume_equals_an_uninterrupted_run(
    tmp_path: Path, lora_model_dir: Path, reference
) -> None:
    with make_project(tmp_path / "proj") as project:

        def pause_at_6(event: Progress) -> None:
            if event.detail.get("step") == 6 and "loss" in event.detail:
                request_pause(project, event.detail["run_id"])

        paused, _ = train(project, params(lora_model_dir), on_event=pause_at_6)
        assert (paused.status, paused.step) == ("paused", 6)
        assert [c["epoch"] for c in paused.checkpoints] == [1]  # no file mid-epoch
        assert records.get_run(project.catalog, paused.run_id).status == "paused"

        resumed, events = train(project, {"resume_run_id": paused.run_id})
        assert (resumed.status, resumed.step, resumed.run_id) == ("done", 12, paused.run_id)
        assert min(e.done for e in events) == 6
        folder = project.root / resumed.folder
        for epoch in (1, 2, 3):
            got = load_file(folder / f"{TOKEN}-{epoch:06d}.safetensors")
            want = reference["tensors"][epoch]
            assert set(got) == set(want)
            assert all(torch.equal(got[k], want[k]) for k in want), epoch
        assert _same_losses(folder / "loss.csv", reference["losses"])


def _same_losses(path: Path, reference_text: str) -> bool:
    """Loss values per step match (the speed column differs between runs)."""

    def rows(text: str) -> list[tuple[str, str, str]]:
        return [
            (r["step"], r["loss"], r["learning_rate"]) for r in csv.DictReader(text.splitlines())
        ]

    return rows(path.read_text(encoding="utf-8")) == rows(reference_text)


def test_nan_stops_the_run_with_a_message_and_writes_nothing_nan(
    tmp_path: Path, lora_model_dir: Path
) -> None:
    from charstudio.engine.model_loading import load_sd15

    loaded: list[Any] = []

    def loader(*args: Any, **kwargs: Any) -> Any:
        loaded.append(load_sd15(*args, **kwargs))
        return loaded[-1]

    def poison_after_epoch_1(event: Progress) -> None:
        if event.detail.get("checkpoint_path") and event.detail.get("epoch") == 1:
            with torch.no_grad():
                loaded[0].unet.conv_in.weight.fill_(float("nan"))

    with make_project(tmp_path / "proj") as project:
        with pytest.raises(TrainingError) as caught:
            train(
                project,
                params(lora_model_dir, sample_every_epochs=0),
                on_event=poison_after_epoch_1,
                loader=loader,
            )
        message = str(caught.value)
        assert "Training stopped at step 5: the loss became NaN" in message
        assert "NaN weights (in its UNet)" in message and "epoch saved, at step 4" in message
        run = records.list_runs(project.catalog, kind="lora")[0]
        assert run.status == "failed" and "NaN" in (run.error or "")
        files = sorted((project.root / run.folder).glob("*.safetensors"))
        assert [p.name for p in files] == [f"{TOKEN}-000001.safetensors"]
        assert all(torch.isfinite(t).all() for t in load_file(files[0]).values())


def test_checks_before_loading(tmp_path: Path, lora_model_dir: Path) -> None:
    with make_project(tmp_path / "proj") as project:
        problems, _ = check_lora_params(project, params(lora_model_dir, dim=0, optimizer="SGD"))
        assert "network dim must be at least 1, not 0" in problems
        assert any(p.startswith("optimizer must be one of AdamW") for p in problems)
        problems, _ = check_lora_params(project, params(tmp_path / "missing-model"))
        assert problems and "missing-model" in problems[0]
        problems, _ = check_lora_params(project, params(lora_model_dir, optimizer="Prodigy"))
        assert problems == []  # Prodigy's absence is found when the run starts


def test_locon_adds_the_convolutions_and_loads_in_charstudio(tmp_path: Path) -> None:
    """With conv dim, the ResNet/down/upsample 3×3 convolutions get their own rank and alpha;
    the file's every key maps onto the model in charstudio's ``<lora:>`` path."""
    from charstudio.training.lora_metadata import lora_file_bytes

    model = responsive_tiny_model()
    network = LoraNetwork(model.unet, model.text_encoder, dim=4, alpha=2.0, conv_dim=2, seed=3)
    conv = {m.name: m for m in network.modules if m.name.endswith("resnets_0_conv1")}
    assert conv and all(m.rank == 2 and m.down.shape[2:] == (3, 3) for m in conv.values())
    with torch.no_grad():
        for module in network.modules:
            module.up.normal_(generator=torch.Generator().manual_seed(1))
    path = tmp_path / "locon.safetensors"
    path.write_bytes(lora_file_bytes(network.state_dict(), {"ss_output_name": "locon"}))
    plain = responsive_tiny_model()
    applied = apply_loras(plain.unet, plain.text_encoder, [(load_lora(path), 1.0)])
    assert not applied.unmatched and applied.weights_changed == len(network.modules)


def test_missing_optimizer_package_is_a_plain_message(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("prodigyopt") is not None:
        pytest.skip("prodigyopt is installed here")
    with make_project(tmp_path / "proj") as project, pytest.raises(Exception) as caught:
        _trainer(responsive_tiny_model(), project, optimizer="Prodigy", unet_lr=1.0)
    assert "needs the prodigyopt package, which is not installed" in str(caught.value)
