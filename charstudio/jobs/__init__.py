"""Long work as generators that report progress and honour cancellation."""

from charstudio.jobs.protocol import (
    CancelToken,
    Job,
    JobCanceled,
    JobError,
    Progress,
    ProgressClock,
    format_eta,
    job_error_message,
    readable_job_error,
    run_job,
)

__all__ = [
    "CancelToken",
    "Job",
    "JobCanceled",
    "JobError",
    "Progress",
    "ProgressClock",
    "format_eta",
    "job_error_message",
    "readable_job_error",
    "run_job",
]
