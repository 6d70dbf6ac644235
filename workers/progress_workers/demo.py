"""The ``demo`` job kind: real work with real progress, never a timer pretending.

Each step generates a chunk of data, compresses it and feeds it to a SHA-256, then reports what
it did. ``step_s`` paces the steps for a watchable demo: the remainder of each step after the real
work is a wait that stands in for the I/O a real export would do (uploads, downloads).

Every ``CHECKPOINT_EVERY`` steps it stores a checkpoint (the step and the running totals), so an
attempt that replaces a preempted or killed one resumes after the last checkpointed step instead
of starting over. Each step's data depends only on the job and the step, and the digest is a chain
(``sha256(previous digest + step data)``), so a resumed run returns the same result as an
uninterrupted one.
"""

from __future__ import annotations

import hashlib
import random
import time
import zlib
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from progress_workers.params import JsonFloat, JsonInt, json_number
from progress_workers.sync import Reporter

CHUNK_BYTES = 256 * 1024
CHECKPOINT_EVERY = 5


class DemoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: JsonInt = Field(default=20, ge=1, le=1000)
    step_s: JsonFloat = Field(default=0.25, ge=0, le=10)
    fail_at_step: Annotated[int, Field(ge=1), BeforeValidator(json_number)] | None = None


class DemoFailure(RuntimeError):
    """The failure ``fail_at_step`` asks for, so the error path can be watched too."""


class DemoCheckpoint(BaseModel):
    """Where a demo run stands after ``step``: enough to go on from there."""

    step: int = Field(ge=0)
    bytes_in: int = Field(ge=0)
    bytes_out: int = Field(ge=0)
    chain: str


def run_demo(reporter: Reporter, params: DemoParams) -> dict[str, object] | None:
    if reporter.last_checkpoint is None:
        done = DemoCheckpoint(step=0, bytes_in=0, bytes_out=0, chain=hashlib.sha256().hexdigest())
    else:
        done = DemoCheckpoint.model_validate(reporter.last_checkpoint)
        reporter.update(
            stage="resuming",
            message=f"attempt {reporter.job.attempt if reporter.job else '?'} resumes "
            f"after step {done.step} of {params.steps}",
        )
    chain, bytes_in, bytes_out = done.chain, done.bytes_in, done.bytes_out
    for step in range(done.step + 1, params.steps + 1):
        if reporter.cancel_requested:
            reporter.cancel(f"cancelled at step {step} of {params.steps}")
            return None
        began = time.monotonic()
        # Random 16 KiB blocks repeated: data that compresses, like real media sidecars.
        generator = random.Random(f"{reporter.job_id}:{step}")
        chunk = generator.randbytes(16 * 1024) * (CHUNK_BYTES // (16 * 1024))
        compressed = zlib.compress(chunk, 6)
        chain = hashlib.sha256(bytes.fromhex(chain) + compressed).hexdigest()
        bytes_in += len(chunk)
        bytes_out += len(compressed)
        if params.fail_at_step == step:
            raise DemoFailure(f"failed at step {step} as asked (fail_at_step={step})")
        reporter.update(
            progress=100 * step / params.steps,
            stage="compressing",
            message=f"step {step} of {params.steps}: {bytes_in // 1024} KiB in, "
            f"{bytes_out // 1024} KiB out",
        )
        if step % CHECKPOINT_EVERY == 0 and step < params.steps:
            reporter.checkpoint(
                DemoCheckpoint(
                    step=step, bytes_in=bytes_in, bytes_out=bytes_out, chain=chain
                ).model_dump()
            )
        remaining = params.step_s - (time.monotonic() - began)
        if remaining > 0:
            time.sleep(remaining)
    return {
        "steps": params.steps,
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "sha256": chain,
    }


__all__ = ["DemoCheckpoint", "DemoFailure", "DemoParams", "run_demo"]
