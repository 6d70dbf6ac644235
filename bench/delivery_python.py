"""Python's share of one WebSocket delivery, measured without the kernel.

The fan-out path of the real classes — ``Snapshot`` decode, ``Outbox.offer_update``,
``Connection._write_now`` and ``FrameWriterProtocol.write_frame`` — runs against a transport
whose ``write`` drops the bytes, so what is timed is the Python around the ``send()`` system call.
Compare with ``bench/fanout.py``'s gateway CPU per delivery to see how much of it is the kernel.
Numbers, not pass/fail: ``taskset -c 0 python bench/delivery_python.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import types
from collections.abc import Callable

from websockets.protocol import State
from websockets.server import ServerProtocol

from progress_gateway.hub import Snapshot
from progress_gateway.outbox import Outbox
from progress_gateway.ws import Connection
from progress_gateway.wsproto import FrameWriterProtocol, WritableFlag


class DroppingTransport:
    """Stands in for uvloop's transport: accepts every write, sends nothing."""

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False


def open_write_frame() -> Callable[[bytes], bool]:
    """``FrameWriterProtocol.write_frame`` bound to the state of an open, writable connection."""
    protocol = types.SimpleNamespace(
        handshake_complete=True,
        close_sent=False,
        disconnected=False,
        initial_response=None,
        writable=WritableFlag(),
        conn=ServerProtocol(),
        transport=DroppingTransport(),
    )
    protocol.writable.set()
    protocol.conn.state = State.OPEN
    return types.MethodType(FrameWriterProtocol.write_frame, protocol)


def eager_connection() -> Connection:
    """A ``Connection`` in its eager-writing state (no writer task), without a socket."""
    connection = Connection.__new__(Connection)
    connection._write_frame = open_write_frame()
    connection._writer = None
    connection._broken = False
    connection.outbox = Outbox()
    connection.outbox.notify = connection._start_writer
    connection.outbox.write_now = connection._write_now
    connection.outbox.track("job")
    return connection


def measure(clients: int, publishes: int) -> float:
    """Microseconds of Python per delivery, fanning ``publishes`` snapshots out to ``clients``."""
    outboxes = [eager_connection().outbox for _ in range(clients)]
    template = json.dumps(
        {
            "id": "job",
            "owner": "alice",
            "seq": 0,
            "status": "running",
            "updated_at": "2026-12-02T00:00:00.000Z",
            "progress": {"done": 1, "total": 2},
            "message": "x" * 200,
        }
    )
    head, tail = template.split('"seq": 0')
    started = time.perf_counter_ns()
    for seq in range(1, publishes + 1):
        snapshot = Snapshot(f'{head}"seq": {seq}{tail}')
        job_id = snapshot.job_id
        for outbox in outboxes:  # Hub.on_snapshot's loop
            outbox.offer_update(job_id, seq, snapshot)
    return (time.perf_counter_ns() - started) / (clients * publishes) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100, help="connections per job")
    parser.add_argument("--publishes", type=int, default=2000, help="snapshots per repetition")
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    runs = [measure(args.clients, args.publishes) for _ in range(args.repeat)]
    median = statistics.median(runs)
    print(
        f"Python per delivery ({args.clients} clients/job): median {median:.2f} µs, "
        f"min {min(runs):.2f}, max {max(runs):.2f} over {len(runs)} runs"
    )


if __name__ == "__main__":
    main()
