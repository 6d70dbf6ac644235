"""Entry point of a local executor's child process: ``python -m progress_workers.local_runner``.

The gateway passes the job through ``PGW_*`` variables and the store through the same
``GATEWAY_*`` variables it runs with. The child first joins the slots directory and takes one of
``PGW_SLOTS`` lock files there (the concurrency bound, held until it exits; see
``progress_workers.slots``), then runs the job under a reporter. SIGTERM becomes a
cancellation, so a job stopped by its executor ends ``cancelled``, not ``failed``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path
from types import FrameType

from progress_workers.runner import run_job
from progress_workers.slots import join, leave, take_slot
from progress_workers.sync import ProgressClient

logger = logging.getLogger("progress_workers.local_runner")


class StoppedByExecutor(BaseException):
    """Raised in the job's thread on SIGTERM: the reporter records a cancellation."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise StoppedByExecutor(f"stopped by the executor ({signal.Signals(signum).name})")


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    signal.signal(signal.SIGTERM, _stop)
    job_id = os.environ["PGW_JOB_ID"]
    slots_dir = Path(os.environ["PGW_SLOTS_DIR"])
    users = join(slots_dir)  # the directory stays while we run, even if every gateway stops
    slot = take_slot(slots_dir, int(os.environ["PGW_SLOTS"]))
    try:
        pid = os.getpid()
        ticks = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        with ProgressClient.from_env() as client:
            run_job(
                client,
                job_id,
                os.environ["PGW_KIND"],
                json.loads(os.environ["PGW_PARAMS"]),
                executor="local",
                call_id=f"local:{pid}:{ticks}",
                heartbeat_s=float(os.environ.get("PGW_HEARTBEAT_S", "10")),
            )
    except StoppedByExecutor:
        return 0
    except Exception:
        logger.exception("job %s failed", job_id)
        return 1
    finally:
        slot.close()
        if leave(users, slots_dir):
            logger.info("removed the slots directory %s: its last user is gone", slots_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
