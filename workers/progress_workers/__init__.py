"""The worker side of progress-gateway: report real progress into the store.

from progress_workers import ProgressClient
pc = ProgressClient.from_url("redis://127.0.0.1:6379/0")   # or "sqlite:///jobs.db", or from_env()
job = pc.create_job(owner="alice", kind="demo", params={})
with pc.reporter(job.id) as r:
    r.update(progress=50, stage="encoding")
    r.succeed(result={"url": "…"})
"""

from progress_core.errors import (
    BadRequest,
    GatewayError,
    JobExists,
    JobFinished,
    JobNotFound,
    PayloadTooLarge,
    StoreUnavailable,
)
from progress_core.models import Job, JobStatus
from progress_workers.client import AsyncProgressClient
from progress_workers.reporter import AsyncReporter
from progress_workers.sync import ProgressClient, Reporter
from progress_workers.tracked import tracked

__all__ = [
    "AsyncProgressClient",
    "AsyncReporter",
    "BadRequest",
    "GatewayError",
    "Job",
    "JobExists",
    "JobFinished",
    "JobNotFound",
    "JobStatus",
    "PayloadTooLarge",
    "ProgressClient",
    "Reporter",
    "StoreUnavailable",
    "tracked",
]
