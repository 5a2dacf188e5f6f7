"""Export the histories of real audits (e.g. the demo's) from a server into the replay set.

    .venv/bin/python -m tests.replay.export SCENARIO WORKFLOW_ID [--address localhost:7233]
        [--version v2]

Saves the workflow and every pod child (all runs, oldest first) as
tests/replay/histories/{version}/{SCENARIO}--{workflow id}--run{n}.json, beside the scenarios.
These come from runs with the real activities (local provider, reference miner, rendering);
e.g. the demo's round loop: `... export demo-round competition --address localhost:7234
--version rounds-v1`.
"""

from __future__ import annotations

import argparse
import asyncio

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from tests.replay.record import HISTORIES_DIR, HISTORIES_ROOT, history_path


async def export(
    client: Client, scenario: str, workflow_id: str, version: str | None = None
) -> list[str]:
    """Write the histories of `workflow_id` and its pods; return the file names."""
    folder = HISTORIES_DIR if version is None else HISTORIES_ROOT / version
    folder.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[tuple[object, str]]] = {}
    query = f'WorkflowId = "{workflow_id}" OR WorkflowId STARTS_WITH "{workflow_id}-pod-"'
    async for execution in client.list_workflows(query):
        runs.setdefault(execution.id, []).append((execution.start_time, execution.run_id))
    for stale in folder.glob(f"{scenario}--*.json"):
        stale.unlink()
    written = []
    for wid, entries in sorted(runs.items()):
        for number, (_, run_id) in enumerate(sorted(entries, key=lambda e: str(e[0])), start=1):
            history = await client.get_workflow_handle(wid, run_id=run_id).fetch_history()
            path = folder / history_path(scenario, wid, number).name
            path.write_text(history.to_json() + "\n")
            written.append(path.name)
    return written


async def main() -> None:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenario")
    parser.add_argument("workflow_id")
    parser.add_argument("--address", default="localhost:7233")
    parser.add_argument("--version", default=None, help="histories folder (default: record's)")
    args = parser.parse_args()
    client = await Client.connect(args.address, data_converter=pydantic_data_converter)
    for name in await export(client, args.scenario, args.workflow_id, args.version):
        print(name)


if __name__ == "__main__":
    asyncio.run(main())
