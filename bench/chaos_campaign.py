"""The long chaos campaign: the CI campaign of ``tests/chaos/`` with ≥ 100 faults, as numbers.

A script, not a test: it prints convergence p50/p99/max (seconds from a fault's end until every
watcher holds the store's state), lost terminal states, missed ``scope: mine`` jobs and every
broken per-connection guarantee, and never passes or fails. The campaign itself (servers, fault
proxy, faults, watchers, verdicts) is ``tests/chaos/campaign.py``; see ``docs/reliability.md``.

    .venv/bin/python bench/chaos_campaign.py --faults 105 --seed 7
    .venv/bin/python bench/chaos_campaign.py --faults 20 --resync-s 1 --probe-s 1 --keep /tmp/c

By default the gateways run with the product's defaults for resync and probe, so the figures
are the ones a deployment gets; ``--resync-s``/``--probe-s`` change them. Drain is 1 s (not 10)
so that a SIGTERM fault does not hold the campaign for the whole drain. Each run starts
its own redis-server (AOF, ``appendfsync always``) and gateways on free ports in a temporary
directory, never the machine's own services.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faults", type=int, default=105, help="how many faults (105)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the fault order (1)")
    parser.add_argument("--resync-s", type=float, help="GATEWAY_RESYNC_S (product default)")
    parser.add_argument("--probe-s", type=float, help="GATEWAY_PROBE_S (product default)")
    parser.add_argument("--drain-s", type=float, default=1.0, help="GATEWAY_DRAIN_S (1)")
    parser.add_argument("--jobs", type=int, default=6, help="jobs running at once (6)")
    parser.add_argument(
        "--converge-limit-s", type=float, default=60.0, help="stop waiting after (60 s)"
    )
    parser.add_argument("--keep", type=Path, help="directory for logs and the AOF (kept)")
    parser.add_argument("--json", type=Path, help="also write the full report here")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every fault")
    return parser.parse_args(argv)


async def campaign(args: argparse.Namespace, directory: Path) -> int:
    from tests.chaos.campaign import Campaign, CampaignConfig

    config = CampaignConfig(
        faults=args.faults,
        seed=args.seed,
        concurrent_jobs=args.jobs,
        converge_limit_s=args.converge_limit_s,
        final_window_s=max(30.0, args.converge_limit_s),
        resync_s=args.resync_s,
        probe_s=args.probe_s,
        drain_s=args.drain_s,
        stop_when_stuck=False,
    )
    print(f"chaos campaign: {config}", flush=True)
    report = await Campaign(config, directory).run()
    print(report.summary())
    problems = report.problems()
    print(problems)
    if args.json is not None:
        body = {
            "config": asdict(config),
            "faults": [asdict(f) for f in report.faults],
            "convergence_s": {
                "p50": report.percentile(0.5),
                "p99": report.percentile(0.99),
                "max": max(report.convergence(), default=None),
            },
            "lost_terminals": report.lost_terminals,
            "mine_missed": report.mine_missed,
            "unfinished_jobs": report.unfinished_jobs,
            "violations": report.violations.items(),
            "http_statuses": dict(report.http_statuses),
            "jobs": report.jobs,
            "sessions": report.sessions,
            "duration_s": report.duration_s,
        }
        args.json.write_text(json.dumps(body, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    # SIGTERM as Ctrl-C: the campaign's cleanup stops the servers it started.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.verbose:
        logging.getLogger("tests.chaos").setLevel(logging.INFO)
    sys.path.insert(0, str(ROOT))
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        return asyncio.run(campaign(args, args.keep))
    with tempfile.TemporaryDirectory(prefix="chaos-") as directory:
        return asyncio.run(campaign(args, Path(directory)))


if __name__ == "__main__":
    sys.exit(main())
