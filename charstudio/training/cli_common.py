"""Options and translations the training commands (``train-ti``, ``train-lora``) share: which
images to train on, resuming a run, the device, an A1111 sampler name, and the params of a new
run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Mapping

    from charstudio.catalog.project import Project

__all__ = [
    "add_device_option",
    "add_images_option",
    "images_param",
    "new_run_params",
    "option_changes",
    "resume_params",
    "sampler_changes",
]


def add_images_option(add: Callable[..., Any], *, resume_help: str) -> None:
    """``--images`` and ``--resume`` (helped by ``resume_help``)."""
    add(
        "--images",
        nargs="+",
        default=None,
        metavar="picks|all|PATH",
        help="what to train on: picks (default), all, or image ids, files and folders",
    )
    add("--resume", metavar="RUN", help=resume_help)


def add_device_option(add: Callable[..., Any]) -> None:
    add("--device", help="cuda, cuda:1, cpu (default: the project's engine setting)")


def images_param(values: list[str] | None) -> str | list[int | str]:
    """The job's ``images`` param for ``--images`` values: picks, all, or ids and paths."""
    if not values:
        return "picks"
    if len(values) == 1 and values[0] in ("picks", "all"):
        return values[0]
    out: list[int | str] = []
    for value in values:
        if value in ("picks", "all"):
            raise ValueError("--images: picks and all cannot be combined with other images")
        out.append(int(value) if value.isdigit() else str(Path(value).expanduser().resolve()))
    return out


def option_changes(args: argparse.Namespace, options: Mapping[str, str]) -> dict[str, Any]:
    """``{setting: value}`` for each ``{argparse dest: setting}`` the command line gave."""
    changes: dict[str, Any] = {}
    for dest, setting in options.items():
        value = getattr(args, dest, None)
        if value is not None:
            changes[setting] = value
    return changes


def sampler_changes(args: argparse.Namespace, dest: str, setting: str) -> dict[str, Any]:
    """An A1111 sampler name (``"DPM++ 2M Karras"``) given as ``dest``, split into the
    ``setting`` (the sampler) and ``<prefix>_schedule_type`` settings."""
    if not getattr(args, dest, None):
        return {}
    from charstudio.engine.samplers import split_sampler_name

    sampler, schedule = split_sampler_name(getattr(args, dest))
    changes: dict[str, Any] = {setting: sampler}
    if schedule is not None:
        changes[setting.removesuffix("_sampler") + "_schedule_type"] = schedule
    return changes


def resume_params(
    project: Project,
    args: argparse.Namespace,
    changes: dict[str, Any],
    *,
    setting: str,
    option: str,
    param: str,
    check: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """The params that resume ``--resume``'s run (``check(run)`` may refuse it), where only
    ``setting`` (the ``option`` on the command line, the ``param`` of the job) may change."""
    from charstudio.training.records import find_run

    try:
        run = find_run(project.catalog, args.resume)
    except KeyError as error:
        raise ValueError(str(error.args[0])) from None
    if check is not None:
        check(run)
    fixed = sorted(k for k in changes if k != setting)
    if fixed or args.model or args.images:
        raise ValueError(
            "--resume continues a run with its own settings, model and images; only "
            f"{option} may change"
        )
    return {
        "resume_run_id": run.id,
        param: changes.get(setting),
        "device": getattr(args, "device", None),
    }


def new_run_params(settings_json: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The params of a new run of ``settings_json`` on ``--model``, ``--vae``, ``--images``."""
    if not args.model:
        raise ValueError("--model is required (the checkpoint to train on)")
    return {
        "settings": settings_json,
        "model": args.model,
        "vae": args.vae,
        "images": images_param(args.images),
        "resume_run_id": None,
        "device": getattr(args, "device", None),
    }
