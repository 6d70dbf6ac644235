"""The slots directory of local jobs is removed by its last user, gateway or job process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from progress_gateway.auth import issue_token
from progress_workers.slots import join, leave, take_slot
from tests.support.gateway_server import SECRET, GatewayServer
from tests.support.redis_server import wait_until

HOLDER = """
import sys
from pathlib import Path
from progress_workers.slots import join, leave, take_slot
directory = Path(sys.argv[1])
users = join(directory)
slot = take_slot(directory, 2)
print("holding", flush=True)
sys.stdin.readline()
slot.close()
print("removed" if leave(users, directory) else "kept", flush=True)
"""


def test_the_last_of_two_users_removes_the_directory(tmp_path: Path) -> None:
    directory = tmp_path / "slots"
    first, second = join(directory), join(directory)
    slot = take_slot(directory, 1)
    slot.close()
    assert (directory / "slot-0.lock").exists()
    assert leave(first, directory) is False
    assert directory.is_dir()
    assert leave(second, directory) is True
    assert not directory.exists()
    # A later gateway starts from nothing.
    again = join(directory)
    assert directory.is_dir()
    assert leave(again, directory) is True


def test_a_job_process_holding_a_slot_keeps_the_directory_past_the_gateway(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "slots"
    gateway = join(directory)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "holding"
        assert leave(gateway, directory) is False
        assert (directory / "users.lock").exists()
        # Another process cannot take the held slot: the bound still holds.
        other = join(directory)
        second = take_slot(directory, 2)
        assert Path(second.name).name == "slot-1.lock"
        second.close()
        assert leave(other, directory) is False
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "removed"
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
        holder.stdout.close()
    assert not directory.exists()


def test_a_directory_holding_other_files_is_left_in_place(tmp_path: Path) -> None:
    directory = tmp_path / "configured"
    directory.mkdir()
    (directory / "notes.txt").write_text("not ours")
    users = join(directory)
    take_slot(directory, 1).close()
    assert leave(users, directory) is False
    assert sorted(entry.name for entry in directory.iterdir()) == ["notes.txt"]


def test_a_stopped_gateway_removes_its_slots_directory_once_its_last_job_ends(
    tmp_path: Path,
) -> None:
    slots_dir = tmp_path / "slots"
    gateway = GatewayServer(
        f"sqlite:///{tmp_path / 'jobs.db'}",
        tmp_path / "gateway.log",
        local_slots_dir=str(slots_dir),
        drain_s="0",
    )
    headers = {"Authorization": f"Bearer {issue_token(SECRET, 'alice', 600)}"}
    gateway.start()
    try:
        created = httpx.post(
            f"{gateway.url}/exports",
            json={"kind": "demo", "params": {"steps": 40, "step_s": 0.05}},
            headers=headers,
            timeout=10,
        )
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]

        def running() -> bool:
            job = httpx.get(f"{gateway.url}/exports/{job_id}", headers=headers, timeout=5)
            return bool(job.json()["status"] == "running")

        wait_until(running, 30, "the job to run")
        gateway.terminate()  # SIGTERM: a graceful stop, the lifespan's shutdown runs
        # The job process outlives the gateway and still uses the directory.
        assert slots_dir.is_dir()
        wait_until(lambda: not slots_dir.exists(), 30, "the job's end to remove the directory")
        gateway.start()
        job = httpx.get(f"{gateway.url}/exports/{job_id}", headers=headers, timeout=5).json()
        assert job["status"] == "succeeded"
        assert slots_dir.is_dir()  # the running gateway uses it again
        gateway.terminate()  # SIGTERM: a graceful stop, the lifespan's shutdown runs
        assert not slots_dir.exists()
    finally:
        gateway.stop()
