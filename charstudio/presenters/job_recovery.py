"""Unfinished jobs: what to ask when a project opens with interrupted work, and when the
artist quits while a job runs.

A job left behind by a crash, a kill or a quit can mean minutes of GPU work; it starts only
when the artist says so. When a project opens with such jobs the artist chooses: resume them
now, later (they are held: nothing starts until Jobs ▸ Resume Interrupted Jobs), or discard
them (canceled; saved checkpoints and images stay). Quitting while a job runs says what will
survive (the last saved checkpoint, the images made so far) and offers to keep working.

Facts are read from the catalog once (:func:`job_facts`); the wording and the choices'
effects are plain functions of them, so the GUI's dialogs only show text and return a choice.
"""

from __future__ import annotations

import contextlib
import enum
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

from charstudio.catalog import Project
from charstudio.jobs.queue import JobQueue, QueuedJob

__all__ = [
    "INTERRUPTED",
    "JobFacts",
    "Option",
    "QuitChoice",
    "QuitQuestion",
    "RecoveryChoice",
    "RecoveryQuestion",
    "apply_recovery_choice",
    "held_jobs",
    "held_message",
    "held_question",
    "interrupted_jobs",
    "interrupted_question",
    "job_facts",
    "job_line",
    "quit_question",
]

# Jobs that would start on their own when the worker starts: left running by a crash, stopped
# by a quit (put back in the queue) or queued and never started. Held jobs wait for the artist.
INTERRUPTED = ("running", "queued")
KIND_NAMES = {
    "train-ti": "Train TI",
    "train-lora": "Train LoRA",
    "generate": "Generate",
    "grid": "Checkpoint grid",
    "import": "Import",
    "export": "Export",
    "analyze": "Analyze faces",
}
NAME_CHARS = 40  # a prompt is shown up to this many characters
RESUME_MENU = "Jobs ▸ Resume Interrupted Jobs"


@dataclass(frozen=True)
class JobFacts:
    """What the catalog knows about one unfinished job, for wording and deciding."""

    job_id: int
    kind: str
    status: str  # queued, running or paused (held)
    name: str = ""  # the embedding's name, the prompt's start …
    created_at: str = ""
    started_at: str | None = None
    progress: float | None = None  # 0..1, as far as it got
    run_id: int | None = None  # training: the run it trains
    run_status: str | None = None
    run_job_id: int | None = None  # the job the run belongs to now
    saved_step: int | None = None  # training: the newest saved step (what resume restores)
    total_steps: int | None = None
    images_kept: int | None = None  # generate: images recorded so far
    images_total: int | None = None
    sweep: bool = False  # generate: has X/Y/Z axes

    @property
    def training(self) -> bool:
        return self.kind.startswith("train-")

    @property
    def started(self) -> bool:
        return bool(
            self.started_at
            or self.progress
            or self.saved_step
            or self.images_kept
            or self.run_id is not None
        )


# -- reading the catalog -----------------------------------------------------------------------


def _short(text: str, limit: int = NAME_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip(" ,") + "…"


def _train_facts(project: Project, job: QueuedJob) -> dict[str, Any]:
    from charstudio.training import records
    from charstudio.training.run_files import newest_state_step
    from charstudio.training.settings import TrainTISettings

    params = job.params
    facts: dict[str, Any] = {}
    run = records.run_for_job(project.catalog, job.id)
    if run is None and params.get("resume_run_id") is not None:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            run = records.get_run(project.catalog, int(params["resume_run_id"]))
    settings: Any = params.get("settings") or {}
    if run is not None:
        facts.update(run_id=run.id, run_status=run.status, run_job_id=run.job_id)
        facts["name"] = run.name
        settings = run.params.get("settings") or settings
        step = newest_state_step(project.root / run.folder)
        if not step:
            steps = [c.step for c in records.run_checkpoints(project.catalog, run.id)]
            step = max(steps, default=0)
        facts["saved_step"] = step
    if job.kind == "train-ti" and isinstance(settings, dict):
        with contextlib.suppress(Exception):  # a damaged setting only loses the total
            ti = TrainTISettings.from_json(settings)
            if params.get("max_steps") is not None:
                ti = ti.replace(max_steps=int(params["max_steps"]))
            facts["total_steps"] = ti.end_step()
            facts.setdefault("name", ti.name)
    if not facts.get("name"):
        facts["name"] = str(settings.get("name") or "") if isinstance(settings, dict) else ""
        facts["name"] = facts["name"] or project.token
    return facts


def _generate_facts(project: Project, job: QueuedJob) -> dict[str, Any]:
    from charstudio.engine.requests import GenerateRequest

    facts: dict[str, Any] = {}
    settings = job.params.get("settings") or {}
    if isinstance(settings, dict):
        facts["name"] = _short(str(settings.get("prompt") or ""))
    with contextlib.suppress(Exception):  # unreadable params: no total, the job says why
        request = GenerateRequest.from_params(job.params)
        facts["images_total"] = request.plan().image_count
        facts["sweep"] = request.has_axes
    with project.catalog.transaction() as conn:
        row = conn.execute("SELECT COUNT(*) FROM images WHERE job_id = ?", (job.id,)).fetchone()
    facts["images_kept"] = int(row[0])
    return facts


def _other_name(job: QueuedJob) -> str:
    params = job.params
    if job.kind == "import":
        paths = [str(p) for p in params.get("paths") or []]
        if not paths:
            return ""
        first = paths[0].replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
        return first if len(paths) == 1 else f"{first} and {len(paths) - 1} more"
    if job.kind == "export":
        count = len(params.get("image_ids") or [])
        return f"{count:,} image{'s' * (count != 1)}"
    return ""


def job_facts(project: Project, job: QueuedJob) -> JobFacts:
    """Gather what the wording needs about ``job`` from the catalog and the run folders."""
    extra: dict[str, Any] = {}
    if job.kind.startswith("train-"):
        extra = _train_facts(project, job)
    elif job.kind == "generate":
        extra = _generate_facts(project, job)
    else:
        extra = {"name": _other_name(job)}
    return JobFacts(
        job_id=job.id,
        kind=job.kind,
        status=job.status,
        created_at=job.created_at,
        started_at=job.started_at,
        progress=job.progress,
        **extra,
    )


def interrupted_jobs(project: Project) -> list[JobFacts]:
    """The jobs that would start on their own if the worker started now."""
    return [job_facts(project, job) for job in JobQueue(project).jobs(INTERRUPTED)]


def held_jobs(project: Project) -> list[JobFacts]:
    return [job_facts(project, job) for job in JobQueue(project).held()]


# -- wording ----------------------------------------------------------------------------------


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'s' * (count != 1)}"


def job_title(facts: JobFacts) -> str:
    """``Train TI 'anna'``, ``Generate sweep 'portrait of anna, …'``, ``Analyze faces``."""
    kind = KIND_NAMES.get(facts.kind, facts.kind)
    if facts.kind == "generate" and facts.sweep:
        kind += " sweep"
    return f"{kind} '{facts.name}'" if facts.name else kind


def progress_text(facts: JobFacts) -> str:
    """How far the job got, as resuming it would see it."""
    if facts.training:
        total = f" of {facts.total_steps:,}" if facts.total_steps else ""
        if facts.saved_step:
            return f"stopped at step {facts.saved_step:,}{total}"
        return "stopped before its first checkpoint" if facts.started else "not started"
    if facts.kind == "generate" and facts.images_kept is not None:
        if not facts.images_kept and not facts.started:
            return "not started"
        total = f" of {facts.images_total:,}" if facts.images_total else ""
        kept = f"{facts.images_kept:,}{total} image{'s' * (facts.images_kept != 1)}"
        return f"{kept} made"
    if facts.progress:
        return f"stopped at {facts.progress:.0%}"
    return "stopped" if facts.started else "not started"


def when_text(stamp: str | None, now: datetime | None = None, tz: tzinfo | None = None) -> str:
    """``today 14:05``, ``yesterday 09:12`` or ``3 Dec 14:05``, in local time (``tz``)."""
    if not stamp:
        return ""
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(tz)
    today = (now or datetime.now(UTC)).astimezone(tz).date()
    clock = moment.strftime("%H:%M")
    days = (today - moment.date()).days
    if days == 0:
        return f"today {clock}"
    if days == 1:
        return f"yesterday {clock}"
    day = f"{moment.day} {moment.strftime('%b')}"
    return f"{day} {moment.year} {clock}" if moment.year != today.year else f"{day} {clock}"


def job_line(facts: JobFacts, now: datetime | None = None, tz: tzinfo | None = None) -> str:
    """``Train TI 'anna' — stopped at step 1,200 of 3,000 (started today 14:05)``."""
    line = f"{job_title(facts)} — {progress_text(facts)}"
    stamp, verb = (
        (facts.started_at, "started") if facts.started_at else (facts.created_at, "queued")
    )
    when = when_text(stamp, now, tz)
    return f"{line} ({verb} {when})" if when else line


class RecoveryChoice(enum.Enum):
    RESUME = "resume"  # back in the queue, starting now
    LATER = "later"  # held: nothing starts until the artist resumes them
    DISCARD = "discard"  # canceled; what they made stays


@dataclass(frozen=True)
class Option:
    choice: Any  # RecoveryChoice or QuitChoice
    label: str  # the button
    explanation: str  # what it does, in a sentence


@dataclass(frozen=True)
class RecoveryQuestion:
    title: str
    text: str
    jobs: tuple[str, ...]  # one line per job
    options: tuple[Option, ...]
    job_ids: tuple[int, ...]
    default: RecoveryChoice = RecoveryChoice.RESUME
    escape: RecoveryChoice = RecoveryChoice.LATER  # closing the dialog decides nothing now


def _resume_explanation(facts: list[JobFacts]) -> str:
    parts = ["Start them now, one after another."]
    if any(f.training for f in facts):
        parts.append("Training continues from its last saved checkpoint.")
    if any(f.kind == "generate" for f in facts):
        parts.append("A generation makes only the images still missing.")
    if any(f.kind == "import" for f in facts):
        parts.append("An import skips what it already added.")
    return " ".join(parts)


def _discard_explanation(facts: list[JobFacts]) -> str:
    text = "Cancel them. Nothing is deleted: the images made and checkpoints saved so far stay."
    if any(f.training and f.run_id is not None for f in facts):
        text += " A stopped training run can still be resumed from the Train panel."
    return text


def _question(
    facts: list[JobFacts], title: str, text: str, later: Option, now: datetime | None, tz: Any
) -> RecoveryQuestion | None:
    if not facts:
        return None
    resume = Option(RecoveryChoice.RESUME, "Resume Now", _resume_explanation(facts))
    discard = Option(RecoveryChoice.DISCARD, "Discard", _discard_explanation(facts))
    return RecoveryQuestion(
        title=title,
        text=text,
        jobs=tuple(job_line(f, now, tz) for f in facts),
        options=(resume, later, discard),
        job_ids=tuple(f.job_id for f in facts),
    )


def interrupted_question(
    facts: list[JobFacts], now: datetime | None = None, tz: tzinfo | None = None
) -> RecoveryQuestion | None:
    """The question when a project opens with unfinished jobs; None when there are none."""
    stopped = sum(f.started for f in facts)
    if stopped == len(facts):
        text = f"{_plural(len(facts), 'job')} did not finish the last time this project was open."
    elif stopped:
        text = (
            f"{_plural(len(facts), 'job')} did not finish the last time this project was open "
            f"({stopped:,} stopped, {len(facts) - stopped:,} not started)."
        )
    else:
        count = _plural(len(facts), "job")
        text = f"{count} queued the last time this project was open did not start."
    later = Option(
        RecoveryChoice.LATER,
        "Later",
        f"Keep them waiting: nothing starts until you choose {RESUME_MENU}.",
    )
    return _question(facts, "Interrupted jobs", text, later, now, tz)


def held_question(
    facts: list[JobFacts], now: datetime | None = None, tz: tzinfo | None = None
) -> RecoveryQuestion | None:
    """The same choices for held jobs (the Jobs menu)."""
    text = f"{_plural(len(facts), 'job')} {'is' if len(facts) == 1 else 'are'} waiting for you."
    later = Option(RecoveryChoice.LATER, "Keep Waiting", "Leave them held; nothing starts.")
    return _question(facts, "Held jobs", text, later, now, tz)


def held_message(count: int) -> str:
    return f"{_plural(count, 'job')} held; {RESUME_MENU} starts them"


def apply_recovery_choice(
    project: Project, facts: list[JobFacts], choice: RecoveryChoice
) -> tuple[list[int], str]:
    """Carry out the artist's answer; returns the ids changed and a status-bar message. After
    RESUME the caller starts the worker; the other choices start nothing."""
    from charstudio.training import records

    queue = JobQueue(project)
    ids = [f.job_id for f in facts]
    if choice is RecoveryChoice.RESUME:
        changed = queue.resume(ids)
        return changed, f"Resuming {_plural(len(changed), 'job')}"
    if choice is RecoveryChoice.LATER:
        changed = queue.hold(ids)
        run_status = "paused"
        message = held_message(len(changed))
    else:
        changed = queue.discard(ids)
        run_status = "canceled"
        message = f"Discarded {_plural(len(changed), 'job')}; what they made is kept"
    # A run a crash left "running" says what it is now (the Train panel offers Resume for
    # both); a run another job has taken over since is left alone.
    for f in facts:
        ours = f.run_id is not None and f.run_job_id == f.job_id
        if f.job_id in changed and ours and f.run_status == "running":
            assert f.run_id is not None
            records.set_run_status(project.catalog, f.run_id, run_status)
    return changed, message


# -- quitting while a job runs ----------------------------------------------------------------


class QuitChoice(enum.Enum):
    QUIT = "quit"  # stop the job; it is offered again the next time the project opens
    KEEP = "keep"  # do not quit
    CANCEL = "cancel"  # cancel the job (what it made stays), then quit


@dataclass(frozen=True)
class QuitQuestion:
    title: str
    text: str  # which job runs
    consequence: str  # what happens to it if the artist quits
    options: tuple[Option, ...]
    default: QuitChoice = QuitChoice.KEEP
    escape: QuitChoice = QuitChoice.KEEP


def _running_progress(facts: JobFacts) -> str:
    if facts.training and facts.total_steps and facts.progress is not None:
        return f"step {round(facts.progress * facts.total_steps):,} of {facts.total_steps:,}"
    if facts.kind == "generate" and facts.images_kept is not None:
        total = f" of {facts.images_total:,}" if facts.images_total else ""
        return f"{facts.images_kept:,}{total} images made"
    if facts.progress:
        return f"{facts.progress:.0%}"
    return ""


def _quit_consequence(facts: JobFacts) -> str:
    if facts.training:
        if facts.saved_step:
            current = (
                round(facts.progress * facts.total_steps)
                if facts.total_steps and facts.progress is not None
                else None
            )
            lost = (
                f" (the {_plural(current - facts.saved_step, 'step')} after it are trained again)"
                if current is not None and current > facts.saved_step
                else ""
            )
            return (
                "Training stops now. It can be resumed from its last saved checkpoint, "
                f"step {facts.saved_step:,}{lost}."
            )
        return "Training stops now. No checkpoint has been saved yet: resuming starts it again."
    if facts.kind == "generate":
        kept = facts.images_kept or 0
        return (
            f"Generating stops now. The {_plural(kept, 'image')} made so far stay; "
            "resuming makes the rest."
        )
    if facts.kind == "import":
        return "The import stops now. Resuming it skips what it already added."
    return "The job stops now. What it finished stays; resuming runs it again."


def quit_question(facts: JobFacts, waiting: int = 0) -> QuitQuestion:
    """The question when the artist quits while ``facts``' job runs (``waiting`` more queued)."""
    progress = _running_progress(facts)
    text = f"{job_title(facts)} is running" + (f" ({progress})." if progress else ".")
    if waiting:
        text += f" {_plural(waiting, 'more job')} {'is' if waiting == 1 else 'are'} waiting."
    consequence = (
        _quit_consequence(facts)
        + " The next time you open this project, charstudio asks whether to resume it."
    )
    options = (
        Option(
            QuitChoice.QUIT, "Quit, Resume Later", "Stop the job and quit; what it saved stays."
        ),
        Option(QuitChoice.KEEP, "Keep Working", "Do not quit; the job goes on."),
        Option(
            QuitChoice.CANCEL,
            "Cancel Job and Quit",
            "Cancel the job (what it made so far stays) and quit; it is not offered again.",
        ),
    )
    return QuitQuestion("Quit charstudio?", text, consequence, options)
