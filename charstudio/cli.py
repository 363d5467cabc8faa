"""The ``charstudio`` command: one verb per job over the Qt-free core, ``--json`` everywhere.

With no verb (or a project folder as the only argument) it opens the GUI.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from charstudio import __version__
from charstudio.atomic_files import FileInUseError
from charstudio.catalog import COLORS, FLAGS, REJECT_REASONS, CatalogError, Project
from charstudio.finite_json import json_ready
from charstudio.jobs import Progress, format_eta, run_job
from charstudio.portable_paths import PathTooLongError
from charstudio.prompts.attention import EMPHASIS_MODES

Handler = Callable[[argparse.Namespace], int]


def _text_output_for_every_name(json_output: bool) -> None:
    """Let output name any file. Windows writes a redirected or piped stdout in its ANSI code
    page (cp1252 …), which cannot encode most names (``山田``, ``Łukasz``) and would stop the
    command with UnicodeEncodeError: ``--json`` output is UTF-8 (as JSON is), other text
    escapes what the code page lacks. A console, or a UTF-8 stdout, is left alone."""
    stream = sys.stdout
    encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "").replace("_", "")
    if encoding == "utf8" or not isinstance(stream, io.TextIOWrapper):
        return
    if json_output:
        stream.reconfigure(encoding="utf-8")
    else:
        stream.reconfigure(errors="backslashreplace")


def _print_json(value: Any) -> None:
    # Strict JSON: NaN/inf become null (named under "nonfinite_error"), never bare NaN.
    json.dump(json_ready(value), sys.stdout, ensure_ascii=False, indent=2, allow_nan=False)
    sys.stdout.write("\n")


def _stderr_progress(event: Progress) -> None:
    if event.total and sys.stderr.isatty():
        rate = f"{event.rate:.0f}/s" if event.rate else ""
        sys.stderr.write(f"\r{event.done}/{event.total} {rate} ETA {format_eta(event.eta_s)}   ")
        if event.done == event.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def cmd_new(args: argparse.Namespace) -> int:
    with Project.create(Path(args.project), args.name, args.token) as project:
        result = {"project": str(project.root), "name": project.name, "token": project.token}
    if args.json:
        _print_json(result)
    else:
        print(
            f"Created project {result['name']!r} (token {result['token']}) in {result['project']}"
        )
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from charstudio.catalog.importer import import_images

    with Project.open(Path(args.project)) as project:
        params = {"paths": [str(p) for p in args.paths], "copy": args.copy}
        job_id = project.catalog.create_job("import", params, status="running")
        report = run_job(
            import_images(project, args.paths, copy=args.copy, job_id=job_id),
            None if args.json else _stderr_progress,
        )
        project.catalog.update_job(job_id, status="done", progress=1.0, result=report.to_json())
    if args.json:
        _print_json(report.to_json())
    else:
        print(
            f"added {report.added}, duplicates {report.duplicates}, "
            f"relinked {report.relinked}, failed {len(report.failed)}"
        )
        for failure in report.failed:
            print(f"  {failure['path']}: {failure['error']}")
        for warning in report.warnings:
            print(f"  {warning['path']}: warning: {warning['warning']}")
    return 1 if report.failed and not (report.added or report.duplicates) else 0


def _info_for(path: Path) -> dict[str, Any]:
    from charstudio.metadata.imagefile import ImageFileError, probe_image
    from charstudio.metadata.infotext import parse_infotext

    try:
        probe = probe_image(path)
    except (ImageFileError, OSError) as exc:
        return {"file": str(path), "error": str(exc)}
    info: dict[str, Any] = {
        "file": str(path),
        "format": probe.format,
        "image_width": probe.width,
        "image_height": probe.height,
        "has_parameters": probe.infotext is not None,
    }
    if probe.warnings:
        info["warnings"] = list(probe.warnings)
    info.update(parse_infotext(probe.infotext or "").to_dict())
    return info


def _print_info(info: dict[str, Any]) -> None:
    print(info["file"])
    if "error" in info:
        print(f"  error: {info['error']}")
        return
    print(f"  {info['format']} {info['image_width']}×{info['image_height']}")
    for warning in info.get("warnings", ()):
        print(f"  warning: {warning}")
    if not info["has_parameters"]:
        print("  no generation parameters")
        return
    labels = {
        "prompt": "Prompt",
        "negative_prompt": "Negative prompt",
        "steps": "Steps",
        "sampler": "Sampler",
        "schedule_type": "Schedule type",
        "cfg_scale": "CFG scale",
        "seed": "Seed",
        "model": "Model",
        "model_hash": "Model hash",
        "clip_skip": "Clip skip",
    }
    for key, label in labels.items():
        if info.get(key) not in (None, ""):
            print(f"  {label}: {info[key]}")
    if info.get("width"):
        print(f"  Size: {info['width']}x{info['height']}")
    for key, value in info.get("extras", {}).items():
        print(f"  {key}: {value}")


def cmd_info(args: argparse.Namespace) -> int:
    infos = [_info_for(Path(p)) for p in args.files]
    if args.json:
        _print_json(infos)
    else:
        for info in infos:
            _print_info(info)
    return 1 if any("error" in info for info in infos) else 0


def cmd_prompt(args: argparse.Namespace) -> int:
    from charstudio.prompts import format_prompt_report, prompt_report

    report = prompt_report(args.text, steps=args.steps, emphasis=args.emphasis)
    if args.json:
        _print_json(report)
    else:
        print(format_prompt_report(report))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with Project.open(Path(args.project)) as project:
        missing = set(project.missing_image_ids())
        rows = []
        for record in project.catalog.images():
            decision = project.catalog.decision(record.id or 0)
            rows.append(
                {
                    "id": record.id,
                    "path": record.path,
                    "missing": record.id in missing,
                    "width": record.width,
                    "height": record.height,
                    "seed": record.seed,
                    "prompt": record.prompt,
                    **decision.as_dict(),
                }
            )
    if args.json:
        _print_json(rows)
    else:
        for row in rows:
            state = "MISSING " if row["missing"] else ""
            print(f"{row['id']:>6}  {row['flag']:<6} {'*' * row['stars']:<5} {state}{row['path']}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    with Project.open(Path(args.project)) as project:
        stats = project.catalog.stats()
    if args.json:
        _print_json(stats)
    else:
        print(
            f"picked {stats['picked']} · rejected {stats['rejected']} · "
            f"unreviewed {stats['unreviewed']} · of {stats['total']}"
        )
        for reason, count in stats["rejected_by_reason"].items():
            if count:
                print(f"  rejected as {reason}: {count}")
    return 0


def _resolve_image(project: Project, ref: str) -> int:
    """An image by id, or by path (as stored, relative to the project, or on disk)."""
    if ref.isdigit():
        image_id = int(ref)
        project.catalog.image(image_id)  # KeyError when unknown
        return image_id
    candidates = [ref, project.catalog_path_for(Path(ref))]
    if not Path(ref).is_absolute():
        candidates.append(project.catalog_path_for(project.root / ref))
    for candidate in candidates:
        record = project.catalog.image_by_path(candidate)
        if record is not None and record.id is not None:
            return record.id
    raise KeyError(f"no image {ref!r} in {project.root}")


def cmd_decide(args: argparse.Namespace) -> int:
    fields: dict[str, Any] = {}
    if args.flag is not None:
        fields["flag"] = args.flag
    if args.stars is not None:
        fields["stars"] = args.stars
    if args.color is not None:
        fields["color"] = None if args.color == "none" else args.color
    if args.reason is not None:
        fields["reject_reason"] = args.reason
    if not fields:
        raise CatalogError("nothing to decide: give --flag, --stars, --color or --reason")
    with Project.open(Path(args.project)) as project:
        try:
            ids = [_resolve_image(project, ref) for ref in args.images]
            project.catalog.decide(ids, "decide (command line)", **fields)
        except (KeyError, ValueError) as exc:
            raise CatalogError(str(exc).strip("'\"")) from exc
        result = [{"id": i, **project.catalog.decision(i).as_dict()} for i in ids]
    if args.json:
        _print_json(result)
    else:
        for row in result:
            print(f"{row['id']}: {row['flag']} {row['stars']}★ {row['reject_reason'] or ''}")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from charstudio.jobs.queue import JobQueue

    with Project.open(Path(args.project)) as project:
        queue = JobQueue(project)
        if args.run:
            queue.recover()
            while job := run_job(queue.run_next(), None if args.json else _stderr_progress):
                if not args.json:
                    print(f"job {job.id} ({job.kind}): {job.status} {job.error or ''}".rstrip())
        rows = [
            {
                "id": j.id,
                "kind": j.kind,
                "status": j.status,
                "created_at": j.created_at,
                "error": j.error,
            }
            for j in queue.jobs()
        ]
    if args.json:
        _print_json(rows)
    elif not args.run:
        for row in rows:
            print(f"{row['id']:>5}  {row['kind']:<10} {row['status']:<9} {row['created_at']}")
    return 0


def _generate_request(args: argparse.Namespace) -> Any:
    from charstudio.engine.requests import GenerateRequest
    from charstudio.engine.sweeps import GenerationSettings

    settings = GenerationSettings(
        prompt=args.prompt,
        negative_prompt=args.negative,
        seed=args.seed,
        steps=args.steps,
        sampler=args.sampler,
        schedule_type=args.schedule_type or None,
        cfg_scale=args.cfg,
        width=args.width,
        height=args.height,
        model=args.model,
        vae=args.vae,
        clip_skip=args.clip_skip,
        batch_size=args.batch_size,
        batch_count=args.batch_count,
        rng=args.rng,
        subseed=args.subseed,
        subseed_strength=args.subseed_strength,
    )
    return GenerateRequest(
        settings,
        x=args.x,
        y=args.y,
        z=args.z,
        keep_random_seeds=args.keep_random_seeds,
        save_grid=not args.no_grid,
    )


def _run_queued(project: Project, job_id: int, quiet: bool) -> Any:
    """Run one queued job here; Ctrl+C cancels it cleanly (finished images stay)."""
    from charstudio.jobs import CancelToken
    from charstudio.jobs.queue import JobQueue

    token = CancelToken()
    job = JobQueue(project).run_next(token, job_id=job_id)
    progress = None if quiet else _stderr_progress
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            return stop.value
        except KeyboardInterrupt:
            token.cancel()  # the job sees it at its next step and stops
            continue
        if progress is not None:
            progress(event)


def cmd_generate(args: argparse.Namespace) -> int:
    from charstudio.engine.generate import check_request
    from charstudio.jobs.queue import JobQueue

    try:
        request = _generate_request(args)
    except ValueError as exc:
        raise CatalogError(str(exc)) from exc
    with Project.open(Path(args.project)) as project:
        problems = check_request(project, request)
        if problems:
            raise CatalogError("\n  ".join(["cannot generate:", *problems]))
        job_id = JobQueue(project).submit("generate", request.to_params())
        ended = _run_queued(project, job_id, args.json)
        job = project.catalog.job(job_id)
        result = json.loads(job["result"]) if job.get("result") else {}
        images = [
            {"id": i, "path": p, "file": str(project.file_path(p))}
            for i, p in zip(result.get("image_ids", []), result.get("paths", []), strict=False)
        ]
        grid = result.get("grid_path")
        out = {
            "job_id": job_id,
            "status": ended.status if ended else job["status"],
            "error": job.get("error"),
            "images": images,
            "grid": str(project.root / grid) if grid else None,
            "skipped": result.get("skipped", 0),
            "failed": result.get("failed", []),  # images that came out NaN: no file, no row
            "notes": result.get("notes", []),
        }
    if args.json:
        _print_json(out)
    else:
        for image in images:
            print(f"{image['id']:>6}  {image['file']}")
        for failed in out["failed"]:
            print(f"failed  image {failed['index']} (seed {failed['seed']}): {failed['error']}")
        for note in out["notes"]:
            print(f"note: {note}")
        if out["grid"]:
            print(f"grid: {out['grid']}")
        print(
            f"job {job_id}: {out['status']}, {len(images)} images"
            + (f" ({out['error']})" if out["error"] else "")
        )
    return 0 if out["status"] == "done" else 1


def cmd_regenerate(args: argparse.Namespace) -> int:
    from charstudio.engine.regenerate import regenerate_image
    from charstudio.engine.runner import GenerationError
    from charstudio.metadata.imagefile import write_png

    with Project.open(Path(args.project)) as project:
        try:
            image_id = _resolve_image(project, args.image)
            result = run_job(
                regenerate_image(project, image_id, model=args.model),
                None if args.json else _stderr_progress,
            )
        except (KeyError, GenerationError) as exc:
            raise CatalogError(str(exc).strip("'\"")) from exc
        record = project.catalog.image(image_id)
        out_path = Path(args.out) if args.out else Path(f"{Path(record.path).stem}-regenerated.png")
        write_png(result.image, out_path, result.infotext)
    out = {
        "id": image_id,
        "original": str(project.file_path(record.path)),
        "output": str(out_path),
        "identical": result.identical,
        "batch_seeds": result.seeds,
    }
    if args.json:
        _print_json(out)
    else:
        same = {True: "identical to", False: "DIFFERENT from", None: "(original missing)"}
        print(f"{out_path}: {same[result.identical]} {out['original']}")
    return 0 if result.identical is not False else 1


def cmd_analyze(args: argparse.Namespace) -> int:
    from charstudio.analysis.project import project_report
    from charstudio.jobs.queue import JobQueue

    with Project.open(Path(args.project)) as project:
        job_id = JobQueue(project).submit("analyze", {})
        ended = _run_queued(project, job_id, args.json)
        job = project.catalog.job(job_id)
        summary = json.loads(job["result"]) if job.get("result") else {}
        rows = [row.to_json() for row in project_report(project.catalog)]
        for row in rows:
            row["file"] = str(project.file_path(row["path"]))
    if args.json:
        _print_json(rows)
    else:
        for row in rows:
            flags = ", ".join(row["flags"]) or "-"
            group = f"  stack {row['duplicate_group']}" if row["duplicate_group"] else ""
            print(f"{row['id']:>6}  faces {row['faces']}  {flags}{group}  {row['path']}")
        if summary.get("recognizer_message"):
            print(f"note: {summary['recognizer_message']}", file=sys.stderr)
        for failure in summary.get("failed", []):
            print(f"failed: {failure['path']}: {failure['error']}", file=sys.stderr)
    status = ended.status if ended else job["status"]
    if status == "failed":
        print(f"charstudio: error: {job.get('error')}", file=sys.stderr)
    return 0 if status == "done" else 1


def cmd_similar(args: argparse.Namespace) -> int:
    from charstudio.analysis.project import rank_similar

    with Project.open(Path(args.project)) as project:
        try:
            refs = [_resolve_image(project, ref) for ref in args.to]
            ranked = rank_similar(project.catalog, refs)
        except (KeyError, ValueError) as exc:
            raise CatalogError(
                f"{str(exc).strip(chr(39))} (run `charstudio analyze` first; similarity "
                "needs the face recognizer's weights)"
            ) from exc
        paths = {r.id: r.path for r in project.catalog.images()}
        rows = [{"id": i, "path": paths[i], "similarity": round(score, 4)} for i, score in ranked]
    if args.json:
        _print_json(rows)
    else:
        for row in rows:
            print(f"{row['similarity']:>7.3f}  {row['id']:>6}  {row['path']}")
    return 0


def cmd_train_ti(args: argparse.Namespace) -> int:
    from charstudio.training.cli_args import train_ti_params_from_args
    from charstudio.training.ti import check_train_params

    def line(checkpoint: dict[str, Any]) -> str:
        return f"step {checkpoint['step']:>5}  {checkpoint['file']}"

    return _run_training(args, "train-ti", train_ti_params_from_args, check_train_params, line)


def cmd_train_lora(args: argparse.Namespace) -> int:
    from charstudio.training.lora import check_lora_params
    from charstudio.training.lora_cli_args import train_lora_params_from_args

    def line(checkpoint: dict[str, Any]) -> str:
        epoch = checkpoint.get("epoch", "?")
        return f"epoch {epoch:>4}  step {checkpoint['step']:>6}  {checkpoint['file']}"

    return _run_training(args, "train-lora", train_lora_params_from_args, check_lora_params, line)


def _run_training(
    args: argparse.Namespace,
    kind: str,
    params_from_args: Callable[[Project, argparse.Namespace], dict[str, Any]],
    check: Callable[[Project, dict[str, Any]], tuple[list[str], list[str]]],
    checkpoint_line: Callable[[dict[str, Any]], str],
) -> int:
    """Check, queue and run a training job of ``kind``; prints its checkpoints (one
    ``checkpoint_line`` each) and how the run ended, or the JSON of both."""
    from charstudio.jobs.queue import JobQueue

    with Project.open(Path(args.project)) as project:
        try:
            params = params_from_args(project, args)
        except ValueError as exc:
            raise CatalogError(str(exc)) from exc
        problems, warnings = check(project, params)
        if problems:
            raise CatalogError("\n  ".join(["cannot train:", *problems]))
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        job_id = JobQueue(project).submit(kind, params)
        ended = _run_queued(project, job_id, args.json)
        job = project.catalog.job(job_id)
        result = json.loads(job["result"]) if job.get("result") else {}
        if not result:  # failed: say which run, and which checkpoints it kept
            result = _failed_run_result(project, job_id)
        for checkpoint in result.get("checkpoints", []):
            checkpoint["file"] = str(project.root / checkpoint["path"])
        out = {
            "job_id": job_id,
            "status": result.get("status") or (ended.status if ended else job["status"]),
            "error": job.get("error"),
            **{k: v for k, v in result.items() if k != "status"},
        }
    if args.json:
        _print_json(out)
    else:
        for checkpoint in out.get("checkpoints", []):
            print(checkpoint_line(checkpoint))
        tail = f" ({out['error']})" if out["error"] else ""
        print(f"run {out.get('run_id')}: {out['status']} at step {out.get('step')}{tail}")
    return 0 if out["status"] in ("done", "paused") else 1


def cmd_captions(args: argparse.Namespace) -> int:
    from charstudio.training.captions import project_captions, write_caption_files
    from charstudio.training.cli_common import images_param
    from charstudio.training.dataset import ImageSelectionError, gather_images

    with Project.open(Path(args.project)) as project:
        try:
            images = gather_images(project, images_param(args.images))
        except (ImageSelectionError, ValueError) as exc:
            raise CatalogError(str(exc)) from exc
        ids = [image.image_id for image in images if image.image_id is not None]
        captions = project_captions(project, ids)
        written: list[Path] = []
        skipped: list[tuple[Path, str]] = []
        if args.write:
            written, skipped = write_caption_files(project, captions)
        rows = [c.to_json() for c in captions]
        for row in rows:
            row["file"] = str(project.file_path(row["path"]))
    out = {
        "captions": rows,
        "written": [str(p) for p in written],
        "skipped": [{"file": str(p), "reason": why} for p, why in skipped],
    }
    if args.json:
        _print_json(out)
    else:
        for row in rows:
            print(f"{row['image_id']:>6}  [{row['source']}]  {row['caption']}")
        if args.write:
            print(f"wrote {len(written)} caption file(s)")
        for item in out["skipped"]:
            print(f"skipped {item['file']}: {item['reason']}", file=sys.stderr)
    return 0


def _failed_run_result(project: Project, job_id: int) -> dict[str, Any]:
    from charstudio.training import records

    run = records.run_for_job(project.catalog, job_id)
    if run is None:
        return {}
    kept = records.run_checkpoints(project.catalog, run.id)
    return {
        "run_id": run.id,
        "folder": run.folder,
        "step": kept[-1].step if kept else 0,
        "checkpoints": [{"step": c.step, "path": c.path, "loss": c.loss} for c in kept],
    }


def _find_run(project: Project, ref: str) -> Any:
    from charstudio.training.records import find_run

    try:
        return find_run(project.catalog, ref)
    except KeyError as exc:
        raise CatalogError(str(exc).strip("'\"")) from exc


def _grid_steps(project: Project, run: Any, args: argparse.Namespace) -> tuple[int, ...]:
    """The grid's columns: a TI run's ``--steps``; a LoRA run's ``--epochs`` (default all),
    its averages with ``--averaged``, and a new average of ``--average-top K`` epochs."""
    from charstudio.training.checkpoint_grid import lora_grid_steps, parse_steps

    if run.kind != "lora":
        if args.epochs or args.weights or args.averaged or args.average_top:
            raise ValueError(
                f"run {run.id} ({run.name}) is a Textual Inversion run: --epochs, --weights, "
                "--averaged and --average-top are for LoRA runs"
            )
        if not args.steps:
            raise ValueError("say which steps to compare: --steps 20:140:20 (or 20,40,60)")
        return tuple(parse_steps(args.steps))
    if args.steps:
        raise ValueError(
            f"run {run.id} ({run.name}) is a LoRA run: choose its columns with --epochs "
            "(e.g. 2:20:2 or 4,6,8), not --steps"
        )
    try:
        epochs = parse_steps(args.epochs) if args.epochs else None
    except ValueError as exc:
        raise ValueError(str(exc).replace("steps", "epochs", 1)) from None
    steps = lora_grid_steps(project, run.id, epochs, averaged=args.averaged)
    if args.average_top:
        from charstudio.training.lora_average import average_top_epochs

        average = average_top_epochs(project, run.id, k=args.average_top)
        if average.step not in steps:
            steps = (*steps, average.step)
    return steps


def cmd_grid(args: argparse.Namespace) -> int:
    from charstudio.jobs.queue import JobQueue
    from charstudio.training.checkpoint_grid import DEFAULT_GRID_PROMPT, GridSpec

    with Project.open(Path(args.project)) as project:
        run = _find_run(project, args.run)
        try:
            spec = GridSpec(
                run_id=run.id,
                steps=_grid_steps(project, run, args),
                seed=args.seed,
                batch=args.batch,
                prompt=args.prompt or DEFAULT_GRID_PROMPT,
                negative_prompt=args.negative,
                sampling_steps=args.sampling_steps,
                width=args.width,
                height=args.height,
                models=tuple(args.models or ()),
                weights=tuple(args.weights or ()),
            )
        except ValueError as exc:
            raise CatalogError(str(exc)) from exc
        epochs = _epochs_by_step(project, run)
        slices = spec.z_slices(str(run.params.get("model") or ""))
        job_id = JobQueue(project).submit("grid", spec.to_json())
        ended = _run_queued(project, job_id, args.json)
        job = project.catalog.job(job_id)
        result = json.loads(job["result"]) if job.get("result") else {}
        root = project.root
        out = {
            "job_id": job_id,
            "status": ended.status if ended else job["status"],
            "error": job.get("error"),
            "grid_id": result.get("grid_id"),
            "grid": str(root / result["grid_path"]) if result.get("grid_path") else None,
            "cells": [
                {
                    "step": c["step"],
                    **({"epoch": epochs.get(c["step"])} if epochs else {}),
                    "seed": c["seed"],
                    "model": c["z"],
                    **({"weight": slices[c["z"]][1]} if spec.weights else {}),
                    "image": str(root / c["path"]),
                    "identity": c["score"],
                    "faces": c["faces"],
                }
                for c in result.get("cells", [])
            ],
            "scores": result.get("scores", []),
            "suggestion": result.get("suggestion", {}),
        }
    if args.json:
        _print_json(out)
    else:
        for score in out["scores"]:
            mean = "-" if score["mean"] is None else f"{score['mean']:.3f}"
            low = "-" if score["minimum"] is None else f"{score['minimum']:.3f}"
            column = f"step {score['step']:>5}"
            if "label" in score:  # a LoRA run: epoch N, or an average of epochs
                epoch = score.get("epoch")
                column = f"epoch {epoch:>5}" if epoch is not None else score["label"]
            print(f"{column}  identity mean {mean}  min {low}  faces {score['detection_rate']:.0%}")
        suggestion = out["suggestion"]
        if suggestion:
            chosen = suggestion.get("epoch", suggestion.get("step"))
            print(f"suggested: {chosen} ({suggestion['reason']})")
        print(f"grid: {out['grid']}" if out["grid"] else f"job {job_id}: {out['status']}")
        if out["error"]:
            print(f"charstudio: error: {out['error']}", file=sys.stderr)
    return 0 if out["status"] == "done" else 1


def cmd_export_picks(args: argparse.Namespace) -> int:
    from charstudio.catalog.queries import ImageFilter
    from charstudio.jobs.queue import JobQueue

    with Project.open(Path(args.project)) as project:
        ids = project.catalog.filtered_ids(ImageFilter(view="picked"))
        dest = Path(args.dest).expanduser().resolve()
        job_id = JobQueue(project).submit("export", {"image_ids": ids, "dest": str(dest)})
        ended = _run_queued(project, job_id, args.json)
        job = project.catalog.job(job_id)
        report = json.loads(job["result"]) if job.get("result") else {}
        status = ended.status if ended else job["status"]
    out = {"job_id": job_id, "status": status, "error": job.get("error"), "dest": str(dest)}
    out.update(report)
    if args.json:
        _print_json(out)
    else:
        print(f"copied {out.get('copied', 0)} picks ({out.get('captions', 0)} captions) to {dest}")
        for failure in out.get("failed", []):
            print(f"  {failure['path']}: {failure['error']}")
        if out["error"]:
            print(f"charstudio: error: {out['error']}", file=sys.stderr)
    return 0 if status == "done" and not out.get("failed") else 1


def _epochs_by_step(project: Project, run: Any) -> dict[int, int | None]:
    """A LoRA run's checkpoint step -> epoch (None for an average); empty for a TI run."""
    if run.kind != "lora":
        return {}
    from charstudio.training.lora_average import lora_checkpoints

    return {c.step: c.epoch for c in lora_checkpoints(project.catalog, run)}


def _export_run(project: Project, run: Any, args: argparse.Namespace, folders: list) -> Any:
    if run.kind == "lora":
        from charstudio.training.lora_export import export_lora

        chosen = [args.step is not None, args.epoch is not None, args.averaged]
        if sum(chosen) != 1:
            raise ValueError("say which file to export: --epoch N, --step N or --averaged")
        return export_lora(
            project,
            run.id,
            epoch=args.epoch,
            step=args.step,
            averaged=args.averaged,
            folders=folders,
            name=args.name,
            weight=args.weight,
            negative=args.negative_text,
        )
    from charstudio.training.export import export_embedding

    if args.epoch is not None or args.averaged:
        raise ValueError(
            f"run {run.id} ({run.name}) is a Textual Inversion run: export a step (--step N)"
        )
    if args.step is None:
        raise ValueError("say which step to export: --step N")
    return export_embedding(project, run.id, args.step, folders=folders, name=args.name)


def cmd_export(args: argparse.Namespace) -> int:
    from charstudio.training.export import EXPORT_FOLDERS_SETTING
    from charstudio.training.lora_export import LORA_EXPORT_FOLDERS_SETTING

    with Project.open(Path(args.project)) as project:
        run = _find_run(project, args.run)
        # TI and LoRA files go to different folders of the same programs: each is remembered.
        setting = LORA_EXPORT_FOLDERS_SETTING if run.kind == "lora" else EXPORT_FOLDERS_SETTING
        folders = list(args.to or project.catalog.get_setting(setting, []) or [])
        try:
            result = _export_run(project, run, args, folders)
        except ValueError as exc:
            raise CatalogError(str(exc)) from exc
        if args.to and args.remember:
            project.catalog.set_setting(setting, [str(f) for f in args.to])
    if args.json:
        _print_json(result.to_json())
    else:
        for file in result.files:
            print(file)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="charstudio",
        description="Build a consistent Stable Diffusion 1.5 character: generate, cull, train, "
        "compare, export. Without a command, opens the app.",
    )
    parser.add_argument("--version", action="version", version=f"charstudio {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND")

    def verb(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--json", action="store_true", help="print machine-readable JSON")
        sub.set_defaults(handler=handler)
        return sub

    sub = verb("new", cmd_new, "create a character project folder")
    sub.add_argument("project", help="folder to create")
    sub.add_argument("--name", required=True, help="the character's name")
    sub.add_argument("--token", help="trigger token used in prompts (default: from the name)")

    sub = verb("import", cmd_import, "add PNG/JPEG/WebP files and folders to a project")
    sub.add_argument("project")
    sub.add_argument("paths", nargs="+", type=Path, help="files or folders (searched recursively)")
    sub.add_argument(
        "--copy", action="store_true", help="copy files into the project instead of in place"
    )

    sub = verb("info", cmd_info, "print the generation parameters stored in image files")
    sub.add_argument("files", nargs="+")

    sub = verb(
        "prompt", cmd_prompt, "show A1111's schedule, attention parse and token count of a prompt"
    )
    sub.add_argument("text")
    sub.add_argument("--steps", type=int, default=30, help="sampling steps for [a:b:when] (30)")
    sub.add_argument(
        "--emphasis",
        choices=EMPHASIS_MODES,
        default="Original",
        help='A1111\'s emphasis mode; "None" reads brackets as text',
    )

    sub = verb("list", cmd_list, "list a project's images with their decisions")
    sub.add_argument("project")

    sub = verb("stats", cmd_stats, "count picked, rejected and unreviewed images")
    sub.add_argument("project")

    sub = verb("decide", cmd_decide, "flag, rate or label images (undoable in the app)")
    sub.add_argument("project")
    sub.add_argument("images", nargs="+", metavar="IMAGE_ID_OR_PATH")
    sub.add_argument("--flag", choices=FLAGS)
    sub.add_argument("--stars", type=int, choices=range(6))
    sub.add_argument("--color", choices=(*COLORS, "none"))
    sub.add_argument("--reason", choices=REJECT_REASONS, help="reject reason (implies reject)")

    sub = verb("jobs", cmd_jobs, "list the project's jobs; --run works through the queue")
    sub.add_argument("project")
    sub.add_argument("--run", action="store_true", help="run queued (and interrupted) jobs")

    sub = verb("generate", cmd_generate, "generate images (optionally an X/Y/Z sweep)")
    sub.add_argument("project")
    sub.add_argument("--model", required=True, help="checkpoint file, diffusers folder or name")
    sub.add_argument("--vae", help="separate VAE file")
    sub.add_argument("--prompt", required=True)
    sub.add_argument("--negative", default="", help="negative prompt")
    for letter in "xyz":
        sub.add_argument(
            f"--{letter}", metavar="AXIS", help='e.g. "Prompt S/R:a closeup, a medium closeup"'
        )
    sub.add_argument("--sampler", default="DPM++ 2M", help='A1111 name, e.g. "DPM++ 2M Karras"')
    sub.add_argument("--schedule-type", default="Karras", help="Automatic/Karras/Exponential…")
    sub.add_argument("--steps", type=int, default=30)
    sub.add_argument("--cfg", type=float, default=7.0)
    sub.add_argument("--seed", type=int, default=-1, help="-1 for random")
    sub.add_argument(
        "--rng",
        type=str.upper,
        choices=("NV", "CPU", "GPU"),
        default="NV",
        help="random number generator source, as A1111's (infotext RNG); NV is CUDA's noise",
    )
    sub.add_argument("--subseed", type=int, default=-1, help="variation seed (-1 for random)")
    sub.add_argument(
        "--subseed-strength", type=float, default=0.0, help="variation strength, 0 for none"
    )
    sub.add_argument("--width", type=int, default=512)
    sub.add_argument("--height", type=int, default=512)
    sub.add_argument("--clip-skip", type=int, default=1)
    sub.add_argument("--batch-size", type=int, default=1)
    sub.add_argument("--batch-count", type=int, default=1)
    sub.add_argument(
        "--keep-random-seeds", action="store_true", help="each cell draws its own random seed"
    )
    sub.add_argument("--no-grid", action="store_true", help="do not save the sweep's grid image")

    sub = verb("regenerate", cmd_regenerate, "make an image again from its stored parameters")
    sub.add_argument("project")
    sub.add_argument("image", metavar="IMAGE_ID_OR_PATH")
    sub.add_argument("--model", help="checkpoint to use instead of the recorded one")
    sub.add_argument("--out", help="where to write the PNG (default: NAME-regenerated.png)")

    sub = verb("train-ti", cmd_train_ti, "train a Textual Inversion embedding on the picks")
    from charstudio.training.cli_args import train_ti_arguments

    train_ti_arguments(sub)

    sub = verb("train-lora", cmd_train_lora, "train a LoRA (kohya format) on the picks")
    from charstudio.training.lora_cli_args import train_lora_arguments

    train_lora_arguments(sub)

    sub = verb("captions", cmd_captions, "show (and write) the training captions of the picks")
    sub.add_argument("project")
    sub.add_argument(
        "--images",
        nargs="+",
        default=None,
        metavar="picks|all|ID",
        help="whose captions: picks (default), all, or image ids and files",
    )
    sub.add_argument(
        "--write",
        action="store_true",
        help="write each caption to the .txt beside its image (one holding other text is kept)",
    )

    sub = verb("grid", cmd_grid, "compare a training run's checkpoints in a grid")
    sub.add_argument("project")
    sub.add_argument("--run", required=True, help="run id or folder")
    sub.add_argument("--steps", help="TI: START:END:EVERY (e.g. 20:140:20) or 20,40")
    sub.add_argument("--epochs", help="LoRA: START:END:EVERY or 4,6,8 (default: every epoch)")
    sub.add_argument(
        "--weights", nargs="+", type=float, metavar="W", help="LoRA weights (Z axis), e.g. 0.6 1"
    )
    sub.add_argument("--averaged", action="store_true", help="LoRA: add the run's averages")
    sub.add_argument(
        "--average-top",
        type=int,
        metavar="K",
        help="LoRA: average the K best-scored epochs of the newest grid and add that column",
    )
    sub.add_argument("--seed", type=int, default=12345678)
    sub.add_argument("--batch", type=int, default=4, help="images per step (seed, seed+1 …)")
    sub.add_argument(
        "--prompt",
        default=None,
        help="[name] is replaced by NAME-STEP (TI) or the activation token (LoRA)",
    )
    sub.add_argument("--negative", default="")
    sub.add_argument("--sampling-steps", type=int, default=30)
    sub.add_argument("--width", type=int, default=512)
    sub.add_argument("--height", type=int, default=512)
    sub.add_argument("--models", nargs="+", metavar="MODEL", help="base checkpoints (Z axis)")

    sub = verb(
        "export",
        cmd_export,
        "export a run's chosen step (TI: NAME.pt and .safetensors) or epoch (LoRA: "
        "NAME.safetensors with A1111's NAME.json and NAME.preview.png)",
    )
    sub.add_argument("project")
    sub.add_argument("--run", required=True, help="run id or folder")
    sub.add_argument("--step", type=int, help="the checkpoint's step (TI)")
    sub.add_argument("--epoch", type=int, help="the epoch (LoRA)")
    sub.add_argument("--averaged", action="store_true", help="the run's newest average (LoRA)")
    sub.add_argument("--name", help="file and token name (default: the run's name)")
    sub.add_argument(
        "--weight", type=float, default=0.8, help="LoRA: preferred weight in NAME.json"
    )
    sub.add_argument("--negative-text", default="", help="LoRA: negative text in NAME.json")
    sub.add_argument(
        "--to",
        nargs="+",
        metavar="DIR",
        help="also into these folders (A1111 or ComfyUI: the install or its models folder "
        "is enough for a LoRA)",
    )
    sub.add_argument(
        "--remember", action="store_true", help="use the --to folders for later exports too"
    )

    sub = verb("export-picks", cmd_export_picks, "copy the picked images (and captions) out")
    sub.add_argument("project")
    sub.add_argument("dest", help="folder to copy them to (existing files are never replaced)")

    sub = verb("analyze", cmd_analyze, "find faces, culling flags and near-duplicate stacks")
    sub.add_argument("project")

    sub = verb("similar", cmd_similar, "rank images by face similarity to some images")
    sub.add_argument("project")
    sub.add_argument("--to", nargs="+", required=True, metavar="IMAGE_ID_OR_PATH")

    sub = verbs.add_parser("gui", help="open the app (the default)")
    sub.add_argument("project", nargs="?")
    sub.set_defaults(handler=None)
    return parser


GuiLauncher = Callable[[Path | None], int]


def main(argv: Sequence[str] | None = None, launch_gui: GuiLauncher | None = None) -> int:
    """Run a command. With no command (or only a project folder) the GUI opens through
    ``launch_gui``, which the launcher passes in: the core never imports the GUI."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    verbs = set(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    gui_project: str | None = None
    if not argv or (argv[0] not in verbs and not argv[0].startswith("-")):
        if len(argv) > 1:
            parser.error(f"unknown command {argv[0]!r}")
        gui_project = argv[0] if argv else None
    else:
        args = parser.parse_args(argv)
        if args.handler is not None:
            _text_output_for_every_name(bool(getattr(args, "json", False)))
            try:
                return int(args.handler(args))
            except (CatalogError, FileInUseError, PathTooLongError) as exc:
                print(f"charstudio: error: {exc}", file=sys.stderr)
                return 2
        gui_project = args.project
    if launch_gui is None:
        parser.error("the app cannot be opened from here; use main.py or the charstudio command")
    return launch_gui(Path(gui_project) if gui_project else None)
