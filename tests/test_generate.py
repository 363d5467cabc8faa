"""The generate job end to end on a tiny random-weight model: files, infotext, catalog rows,
sweeps and their grid, cancel, re-run after a crash, regeneration, out-of-memory handling."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from charstudio.catalog import Project  # noqa: E402
from charstudio.cli import main  # noqa: E402
from charstudio.engine.generate import GenerateResult, check_request, generate_job  # noqa: E402
from charstudio.engine.regenerate import regenerate_image  # noqa: E402
from charstudio.engine.requests import GenerateRequest  # noqa: E402
from charstudio.engine.runner import GenerationError, ModelRunner  # noqa: E402
from charstudio.engine.runtime import EngineOptions  # noqa: E402
from charstudio.engine.sweeps import GenerationSettings, character_sheet_preset  # noqa: E402
from charstudio.jobs import CancelToken, run_job  # noqa: E402
from charstudio.jobs.queue import JobQueue  # noqa: E402
from charstudio.metadata.imagefile import read_infotext  # noqa: E402
from charstudio.metadata.infotext import parse_infotext  # noqa: E402

from .generation import tiny_settings  # noqa: E402
from .tiny_sd import tiny_components  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)

PROMPT = "an extreme closeup front shot photo of a woman, neutral gray background"


def settings(model_dir: Path, **changes) -> GenerationSettings:
    return tiny_settings(model_dir, **{"prompt": PROMPT, **changes})


def submit_and_run(project: Project, request: GenerateRequest, cancel: CancelToken | None = None):
    queue = JobQueue(project)
    job_id = queue.submit("generate", request.to_params())
    events = []
    ended = run_job(queue.run_next(cancel, job_id=job_id), events.append)
    return ended, project.catalog.job(job_id), events


def new_job(project: Project) -> int:
    return project.catalog.create_job("generate", {}, status="running")


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_a_batch_writes_pngs_with_infotext_and_catalog_rows(project, model_dir) -> None:
    request = GenerateRequest(settings(model_dir, batch_size=2, batch_count=2))
    ended, job, events = submit_and_run(project, request)
    assert ended.status == "done", job["error"]
    result = json.loads(job["result"])
    assert len(result["image_ids"]) == 4 and result["grid_path"] is None
    seeds = []
    for image_id, path in zip(result["image_ids"], result["paths"], strict=True):
        record = project.catalog.image(image_id)
        assert record.job_id == ended.id and record.path == path
        file = project.file_path(path)
        params = parse_infotext(read_infotext(file))
        assert params.prompt == PROMPT and params.negative_prompt == "blurry"
        assert (params.steps, params.sampler, params.cfg_scale) == (3, "Euler a", 6.5)
        assert (params.width, params.height, params.model) == (32, 32, "tiny-sd")
        assert params.settings["Version"].startswith("charstudio")
        assert record.seed == params.seed and record.infotext == read_infotext(file)
        seeds.append(params.seed)
    assert seeds == [1234, 1235, 1236, 1237]  # image i of the job uses seed + i
    # Progress counted sampling steps over the whole job, with it/s and a preview.
    assert events[-1].done == events[-1].total == 2 * 3
    assert any("preview" in e.detail for e in events)
    assert all(e.detail.get("it_per_s", 1) > 0 for e in events)
    streamed = [i for e in events for i in e.detail.get("new_image_ids", [])]
    assert streamed == result["image_ids"]


def test_random_seed_is_resolved_and_written(project, model_dir) -> None:
    request = GenerateRequest(settings(model_dir, seed=-1, batch_size=2))
    _ended, job, _ = submit_and_run(project, request)
    ids = json.loads(job["result"])["image_ids"]
    first, second = (project.catalog.image(i).seed for i in ids)
    assert first >= 0 and second == first + 1


def test_sweep_records_coordinates_and_saves_a_grid(project, model_dir) -> None:
    request = GenerateRequest(
        settings(model_dir, batch_size=2),
        x="Prompt S/R:an extreme closeup, a medium closeup",
        y="Steps:2,3",
    )
    ended, job, _ = submit_and_run(project, request)
    assert ended.status == "done", job["error"]
    result = json.loads(job["result"])
    assert len(result["image_ids"]) == 2 * 2 * 2
    records = [project.catalog.image(i) for i in result["image_ids"]]
    seen = {(r.sweep["X"], r.sweep["Y"]) for r in records}
    assert seen == {(x, y) for x in ("an extreme closeup", "a medium closeup") for y in ("2", "3")}
    for record in records:
        assert record.sweep["X axis"] == "Prompt S/R" and record.sweep["Y axis"] == "Steps"
        assert record.sweep["X"] in record.prompt and record.steps == int(record.sweep["Y"])
    grid = project.root / result["grid_path"]
    with Image.open(grid) as image:
        assert image.width > 2 * 32 and image.height > 2 * 32  # two columns, two rows, legends
    with project.catalog.transaction() as conn:
        cells = conn.execute("SELECT x, y, image_id FROM grid_cells ORDER BY y, x").fetchall()
    assert [(x, y) for x, y, _ in cells] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    assert all(image_id in result["image_ids"] for *_, image_id in cells)


def test_problems_are_reported_before_anything_runs(project, model_dir, tmp_path) -> None:
    bad_sr = GenerateRequest(settings(model_dir), x="Prompt S/R:a cat, a dog")
    assert any("a cat" in p for p in check_request(project, bad_sr))
    missing_model = GenerateRequest(settings(model_dir, model=str(tmp_path / "nope.safetensors")))
    assert any("nope" in p for p in check_request(project, missing_model))
    lora = GenerateRequest(settings(model_dir, prompt=PROMPT + " <lora:fr3nch:0.8>"))
    assert any("fr3nch" in p and "LoRA" in p for p in check_request(project, lora))
    # A Schedule type axis value that one of the sweep's samplers does not offer.
    schedules = GenerateRequest(
        settings(model_dir), x="Sampler:Euler a, LCM", y="Schedule type:Karras"
    )
    assert any(
        "'Karras' is not available for sampler 'LCM'" in p
        for p in check_request(project, schedules)
    )
    ended, job, _ = submit_and_run(project, bad_sr)
    assert ended.status == "failed" and "a cat" in job["error"]
    assert project.catalog.image_count() == 0
    assert not (project.root / "images" / "generated").exists()


def test_cancel_keeps_finished_batches_and_leaves_no_partial_file(project, model_dir) -> None:
    token = CancelToken()
    request = GenerateRequest(settings(model_dir, batch_size=2, batch_count=3))
    queue = JobQueue(project)
    job_id = queue.submit("generate", request.to_params())
    batches_done = 0
    job = queue.run_next(token, job_id=job_id)
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            ended = stop.value
            break
        if event.detail.get("new_image_ids"):
            batches_done += 1
        if batches_done == 1 and event.detail.get("step") == 1:
            token.cancel()  # in the middle of the second batch
    assert ended.status == "canceled"
    files = sorted((project.root / "images" / "generated").rglob("*"))
    pngs = [f for f in files if f.is_file()]
    assert len(pngs) == 2 and all(not f.name.startswith(".") for f in pngs)
    assert project.catalog.image_count() == 2

    # Run again (as after a restart): the finished batch is skipped, the rest is made.
    queue.requeue(job_id)
    ended = run_job(queue.run_next(job_id=job_id))
    result = json.loads(project.catalog.job(job_id)["result"])
    assert ended.status == "done" and result["skipped"] == 2
    assert len(result["image_ids"]) == 6 and project.catalog.image_count() == 6


def test_regenerate_gives_identical_pixels(project, model_dir) -> None:
    request = GenerateRequest(settings(model_dir, batch_size=3, sampler="DPM++ 2M SDE"))
    _ended, job, _ = submit_and_run(project, request)
    ids = json.loads(job["result"])["image_ids"]
    result = run_job(regenerate_image(project, ids[1]))
    assert result.identical is True and result.seeds == [1234, 1235, 1236]
    original = pixels(project.file_path(project.catalog.image(ids[1]).path))
    assert np.array_equal(np.asarray(result.image), original)


def test_regenerate_an_imported_image_from_its_infotext(project, model_dir, tmp_path) -> None:
    request = GenerateRequest(settings(model_dir))
    _ended, job, _ = submit_and_run(project, request)
    path = project.file_path(project.catalog.image(json.loads(job["result"])["image_ids"][0]).path)
    with Project.create(tmp_path / "other", "Other") as other:
        from charstudio.catalog.importer import import_images

        run_job(import_images(other, [path]))
        (image_id,) = [r.id for r in other.catalog.images()]
        with pytest.raises(GenerationError, match="checkpoint not found: tiny-sd"):
            run_job(regenerate_image(other, image_id))  # the infotext names only "tiny-sd"
        result = run_job(regenerate_image(other, image_id, model=str(model_dir)))
        assert result.identical is True


def test_out_of_memory_ends_the_job_with_advice_and_the_next_job_works(
    project, model_dir, monkeypatch
) -> None:
    runner = ModelRunner(project, options=EngineOptions())
    model = runner.load(settings(model_dir))
    real_forward = model.unet.forward

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(model.unet, "forward", out_of_memory)
    request = GenerateRequest(settings(model_dir, batch_size=4))
    with pytest.raises(GenerationError, match=r"out of memory.*batch size \(e\.g\. 2\)"):
        run_job(generate_job(project, request.to_params(), runner=runner, job_id=new_job(project)))
    assert project.catalog.image_count() == 0

    monkeypatch.setattr(model.unet, "forward", real_forward)
    result = run_job(
        generate_job(project, request.to_params(), runner=runner, job_id=new_job(project))
    )
    assert len(result.image_ids) == 4


def test_vae_out_of_memory_falls_back_to_one_image_at_a_time(project, model_dir, monkeypatch):
    import charstudio.engine.sampling as sampling

    real = sampling.decode_latents
    modes = []

    def decode(vae, latents, *, mode="batch"):
        modes.append(mode)
        if mode == "batch":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real(vae, latents, mode=mode)

    monkeypatch.setattr(sampling, "decode_latents", decode)
    request = GenerateRequest(settings(model_dir, batch_size=2))
    result = run_job(generate_job(project, request.to_params(), job_id=new_job(project)))
    assert modes == ["batch", "slice"] and len(result.image_ids) == 2


def test_character_sheet_from_the_command_line(project, model_dir, capsys) -> None:
    """The 288-image job of DESIGN.md, shrunk to 32×32 and 1 step for the tiny model."""
    base, x, y = character_sheet_preset(PROMPT, "blurry")
    args = [
        "generate", str(project.root), "--model", str(model_dir), "--prompt", base.prompt,
        "--negative", base.negative_prompt, "--x", "Prompt S/R:" + ", ".join(x.values),
        "--y", "Prompt S/R:" + ", ".join(y.values), "--sampler", "DPM++ 2M Karras",
        "--steps", "1", "--width", "32", "--height", "32", "--batch-size", "4",
        "--batch-count", "8", "--keep-random-seeds", "--json",
    ]  # fmt: skip
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "done" and len(out["images"]) == 288
    assert Path(out["grid"]).is_file()
    records = project.catalog.images()
    assert len(records) == 288
    cells = {(r.sweep["X"], r.sweep["Y"]) for r in records}
    assert len(cells) == 9
    # "Keep -1 for seeds": every cell draws its own seed; within a cell seeds run on.
    first_seeds = {min(r.seed for r in records if (r.sweep["X"], r.sweep["Y"]) == c) for c in cells}
    assert len(first_seeds) == 9
    # Every image's metadata round-trips through `charstudio info`.
    sample = out["images"][100]
    assert main(["info", sample["file"], "--json"]) == 0
    (info,) = json.loads(capsys.readouterr().out)
    record = project.catalog.image(sample["id"])
    assert (info["seed"], info["prompt"], info["steps"]) == (record.seed, record.prompt, 1)
    assert (info["sampler"], info["schedule_type"]) == ("DPM++ 2M", "Karras")
    assert info["negative_prompt"] == "blurry" and info["model"] == "tiny-sd"


def test_generate_command_reports_problems_without_running(project, model_dir, capsys) -> None:
    args = ["generate", str(project.root), "--model", str(model_dir), "--prompt", "a cat"]
    assert main([*args, "--x", "Prompt S/R:a dog, a fox"]) == 2
    assert "a dog" in capsys.readouterr().err
    assert project.catalog.image_count() == 0


def write_kohya_lora(path: Path, model_dir: Path, scale: float = 0.5) -> Path:
    """A kohya-format LoRA on every attention projection of the tiny UNet."""
    from safetensors.torch import save_file

    unet = tiny_components(5).unet
    generator = torch.Generator().manual_seed(7)
    state = {}
    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in ("to_q", "to_v"):
            key = "lora_unet_" + name.replace(".", "_")
            state[f"{key}.lora_down.weight"] = torch.randn(
                2, module.in_features, generator=generator
            )
            state[f"{key}.lora_up.weight"] = scale * torch.randn(
                module.out_features, 2, generator=generator
            )
            state[f"{key}.alpha"] = torch.tensor(2.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


def test_a_lora_in_the_prompt_changes_the_image_and_is_undone_after(project, model_dir) -> None:
    write_kohya_lora(project.root / "loras" / "fr3nch.safetensors", model_dir)

    def one(prompt: str) -> tuple[np.ndarray, GenerateResult]:
        # Each job has its own runner, as from the queue; the loaded model is shared.
        request = GenerateRequest(settings(model_dir, prompt=prompt))
        result = run_job(generate_job(project, request.to_params(), job_id=new_job(project)))
        return pixels(project.file_path(result.paths[0])), result

    plain, first = one(PROMPT)
    first_path = first.paths[0]
    with_lora, result = one(PROMPT + " <lora:fr3nch:1>")
    assert not np.array_equal(plain, with_lora)
    infotext = parse_infotext(read_infotext(project.file_path(result.paths[0])))
    assert infotext.settings["Lora hashes"].startswith("fr3nch: ")
    assert "<lora:fr3nch:1>" in infotext.prompt  # A1111 keeps the tag in the prompt
    # Weight 0 is the plain model; and a later job without the tag gets the plain model back.
    zero, _ = one(PROMPT + " <lora:fr3nch:0>")
    again, repeat = one(PROMPT)
    assert np.array_equal(zero, plain) and np.array_equal(again, plain)
    # The same picture again is not a second catalog row: the job points at the first one.
    assert repeat.paths[0] == first_path
    # A LoRA weight axis sweeps the tag's weight.
    request = GenerateRequest(
        settings(model_dir, prompt=PROMPT + " <lora:fr3nch:1>"), x="LoRA weight:0, 1"
    )
    result = run_job(generate_job(project, request.to_params(), job_id=new_job(project)))
    first, second = (pixels(project.file_path(p)) for p in result.paths)
    assert np.array_equal(first, plain) and np.array_equal(second, with_lora)


def test_an_embedding_axis_needs_the_files(project, model_dir) -> None:
    from charstudio.engine.embeddings import save_safetensors

    vectors = torch.randn(2, 32)
    save_safetensors(project.root / "embeddings" / "fr3nch-40.safetensors", vectors)
    prompt = "a closeup photo of fr3nch-40"
    request = GenerateRequest(
        settings(model_dir, prompt=prompt), x="Embedding:fr3nch-40, fr3nch-80"
    )
    runner = ModelRunner(project)
    assert check_request(project, request, runner=runner) == [
        "Embedding axis: no usable embedding named 'fr3nch-80'"
    ]
    # A file made for another model is reported by name (the tiny model is 32 wide).
    save_safetensors(project.root / "embeddings" / "fr3nch-80.safetensors", torch.randn(2, 768))
    problems = check_request(project, request, runner=runner)
    assert any("fr3nch-80" in p and "768" in p for p in problems)
    save_safetensors(project.root / "embeddings" / "fr3nch-80.safetensors", vectors * 2)
    assert check_request(project, request, runner=runner) == []
    job = generate_job(project, request.to_params(), job_id=new_job(project), runner=runner)
    result = run_job(job)
    first, second = (pixels(project.file_path(p)) for p in result.paths)
    assert not np.array_equal(first, second)  # the embedding's vectors reached the model
    infotext = parse_infotext(read_infotext(project.file_path(result.paths[1])))
    assert infotext.settings["TI hashes"].startswith("fr3nch-80: ")


def test_sweep_coordinates_travel_with_the_file(project, model_dir, tmp_path) -> None:
    """Imported into another project, a sweep image keeps its coordinates (they are in a PNG
    text chunk beside A1111's parameters)."""
    from charstudio.catalog.importer import import_images

    request = GenerateRequest(settings(model_dir), x="Prompt S/R:front shot, side angle")
    _ended, job, _ = submit_and_run(project, request)
    paths = [project.file_path(p) for p in json.loads(job["result"])["paths"]]
    with Project.create(tmp_path / "other", "Other") as other:
        run_job(import_images(other, paths))
        sweeps = sorted(r.sweep["X"] for r in other.catalog.images())
        assert sweeps == ["front shot", "side angle"]
        assert other.catalog.sweep_axes()["X"] == ["front shot", "side angle"]
