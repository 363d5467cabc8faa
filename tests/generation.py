"""Generating on the tiny model in tests: the settings most tests start from, and running a
generate job to the end on the project's queue."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from charstudio.catalog import Project
from charstudio.engine.requests import GenerateRequest
from charstudio.engine.sweeps import GenerationSettings
from charstudio.jobs import run_job
from charstudio.jobs.queue import JobQueue


def tiny_settings(model_dir: Path, /, **changes: Any) -> GenerationSettings:
    """A quick txt2img on the tiny model: 3 Euler a steps at 32x32."""
    base = GenerationSettings(
        prompt="a closeup photo of a woman",
        negative_prompt="blurry",
        seed=1234,
        steps=3,
        sampler="Euler a",
        schedule_type=None,
        cfg_scale=6.5,
        width=32,
        height=32,
        model=str(model_dir),
    )
    return base.replace(**changes)


def generate_images(project: Project, request: GenerateRequest) -> list[int]:
    """Run ``request`` as a generate job; the ids of the images it made (it must succeed)."""
    queue = JobQueue(project)
    job_id = queue.submit("generate", request.to_params())
    ended = run_job(queue.run_next(None, job_id=job_id))
    job = project.catalog.job(job_id)
    assert ended.status == "done", job["error"]
    return json.loads(job["result"])["image_ids"]
