"""The short chaos campaign in CI: every fault kind twice, then the guarantees checked.

Faults (tests/chaos/campaign.py): Redis SIGKILL + restart on its AOF, Redis SIGSTOP/SIGCONT,
gateway SIGKILL + restart, gateway SIGTERM + restart, proxy cut, proxy stall, silent pub/sub
subscriber. Per-job and ``scope: mine`` watchers on both gateways reconnect and resume.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.chaos.campaign import FAULT_KINDS, Campaign, CampaignConfig

# The docs' bound: a watcher has the store's state within 10 s of a fault's end; the campaign
# waits twice that before it counts a fault as not converged (a loaded 2-core CI machine).
CONVERGENCE_BOUND_S = 10.0


@pytest.mark.timeout(240)
async def test_short_campaign_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tests.chaos")  # each fault, shown on failure
    config = CampaignConfig(
        faults=2 * len(FAULT_KINDS), seed=11, converge_limit_s=2 * CONVERGENCE_BOUND_S
    )
    report = await Campaign(config, tmp_path).run()
    print(report.summary())  # shown with -s
    problems = report.problems()
    assert report.jobs > 0
    assert not report.not_converged(), problems
    assert len(report.faults) == config.faults
    assert max(report.convergence()) <= 2 * CONVERGENCE_BOUND_S, problems
    assert report.final_convergence_s is not None, problems
    assert not report.lost_terminals, problems
    assert not report.mine_missed, problems
    assert not report.unfinished_jobs, problems
    for name, lines in report.violations.items().items():
        assert not lines, f"{name}: {problems}"
