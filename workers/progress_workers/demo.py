"""The ``demo`` job kind: real work with real progress, never a timer pretending.

Each step generates a chunk of data, compresses it and feeds it to a SHA-256, then reports what
it did. ``step_s`` paces the steps for a watchable demo: the remainder of each step after the real
work is a wait that stands in for the I/O a real export would do (uploads, downloads).
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


class DemoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: JsonInt = Field(default=20, ge=1, le=1000)
    step_s: JsonFloat = Field(default=0.25, ge=0, le=10)
    fail_at_step: Annotated[int, Field(ge=1), BeforeValidator(json_number)] | None = None


class DemoFailure(RuntimeError):
    """The failure ``fail_at_step`` asks for, so the error path can be watched too."""


def run_demo(reporter: Reporter, params: DemoParams) -> dict[str, object] | None:
    digest = hashlib.sha256()
    generator = random.Random(reporter.job_id)
    bytes_in = bytes_out = 0
    for step in range(1, params.steps + 1):
        if reporter.cancel_requested:
            reporter.cancel(f"cancelled at step {step} of {params.steps}")
            return None
        began = time.monotonic()
        # Random 16 KiB blocks repeated: data that compresses, like real media sidecars.
        chunk = generator.randbytes(16 * 1024) * (CHUNK_BYTES // (16 * 1024))
        compressed = zlib.compress(chunk, 6)
        digest.update(compressed)
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
        remaining = params.step_s - (time.monotonic() - began)
        if remaining > 0:
            time.sleep(remaining)
    return {
        "steps": params.steps,
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "sha256": digest.hexdigest(),
    }


__all__ = ["DemoFailure", "DemoParams", "run_demo"]
