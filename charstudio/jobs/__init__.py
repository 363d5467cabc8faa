"""Long work as generators that report progress and honour cancellation."""

from charstudio.jobs.protocol import (
    CancelToken,
    Job,
    JobCanceled,
    Progress,
    ProgressClock,
    format_eta,
    run_job,
)

__all__ = [
    "CancelToken",
    "Job",
    "JobCanceled",
    "Progress",
    "ProgressClock",
    "format_eta",
    "run_job",
]
