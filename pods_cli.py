"""`starter.py pods list|cleanup`: rented pods on every configured provider, the running
workflow owning each, and the deletion of leaked ones.

Owns the CLI side only; which pods an audit owns and how one is deleted is `providers.inventory`,
the same code the audit's own sweep runs.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from temporalio.client import Client

from embedded_temporal import connect
from models.audit import ProviderName
from models.constants import AUDIT_WORKFLOW_ID_PREFIX, pod_name_prefix
from models.rounds import LEADER_HOTKEY
from models.settings import Settings
from providers import inventory
from providers.base import ContainerInfo, GpuProvider, ProviderError
from providers.breaker import read_states
from providers.registry import build_providers

RUNNING_OWNERS_QUERY = (
    "ExecutionStatus = 'Running' AND (WorkflowType = 'AuditWorkflow' OR "
    "WorkflowType = 'LeaderGenerationWorkflow' OR WorkflowType = 'PodWorkflow')"
)


def owner_pod_prefix(workflow_id: str) -> str | None:
    """The pod-name prefix of an audit (`audit-{round}-{hotkey}`), leader (`leader-{round}`) or
    one of their pod children (`...-pod-...`); None for any other id. Hotkeys (SS58) have no
    dash."""
    kind, _, rest = workflow_id.partition("-")
    round_text, _, tail = rest.partition("-")
    if not round_text.isdigit():
        return None
    hotkey = tail.partition("-")[0]
    if kind == AUDIT_WORKFLOW_ID_PREFIX and hotkey:
        return pod_name_prefix(int(round_text), hotkey)
    if kind == "leader":
        return pod_name_prefix(int(round_text), LEADER_HOTKEY)
    return None


async def running_pod_owners(client: Client) -> dict[str, str]:
    """Pod-name prefix -> id of a running audit, leader or pod workflow whose pods start with it
    (a pod workflow outliving its audit still deletes its own pod)."""
    owners: dict[str, str] = {}
    async for execution in client.list_workflows(RUNNING_OWNERS_QUERY):
        prefix = owner_pod_prefix(execution.id)
        if prefix is not None:
            owners[prefix] = execution.id
    return owners


class PodReport(inventory.PodListing):
    """`pods list`: every rented pod, and the running workflow owning each (absent: leaked)."""

    owners: dict[str, str] = {}  # pod name -> id of a running audit/leader/pod workflow

    def leaked(self) -> list[ContainerInfo]:
        """Pods no running audit, leader or pod workflow owns."""
        return [pod for pod in self.pods if pod.name not in self.owners]


async def find_pods(
    client: Client,
    providers: dict[ProviderName, GpuProvider],
    round_number: int | None = None,
    hotkey: str | None = None,
) -> PodReport:
    """Rented pods (of a round / hotkey) on every provider, each with its running owner."""
    listing = await inventory.list_pods(providers, inventory.pods_prefix(round_number), hotkey)
    running = await running_pod_owners(client)
    owners = {}
    for pod in listing.pods:
        prefix = inventory.owned_by(pod.name, list(running))
        if prefix is not None:
            owners[pod.name] = running[prefix]
    pods = sorted(listing.pods, key=lambda p: (p.name, p.provider, p.container_id))
    return PodReport(pods=pods, errors=listing.errors, owners=owners)


async def cleanup_pods(
    providers: dict[ProviderName, GpuProvider], report: PodReport, dry_run: bool = False
) -> list[ContainerInfo]:
    """Delete the leaked pods of `report` (none with `dry_run`); returns those (to be) deleted.

    Raises the first provider error after trying every pod (a rerun deletes what is left).
    """
    done: list[ContainerInfo] = []
    problems: list[ProviderError] = []
    for pod in report.leaked():
        if dry_run:
            done.append(pod)
            continue
        try:
            if await inventory.delete_pod(providers[pod.provider], pod.name):
                done.append(pod)
        except ProviderError as e:
            problems.append(e)
    if problems:
        raise problems[0]
    return done


def describe_pod(pod: ContainerInfo, owner: str | None) -> str:
    """One line of `pods list`."""
    return f"{pod.provider}\t{pod.name}\t{pod.container_id}\t{pod.state}\t{owner or 'LEAKED'}"


async def run_pods_command(
    client: Client,
    providers: dict[ProviderName, GpuProvider],
    args: argparse.Namespace,
    out: Callable[[str], None] = print,
    breaker_dir: Path | None = None,
) -> int:
    """`starter.py pods list|cleanup`: 0 when every provider answered, else 1.

    With `breaker_dir` (WORK_DIR), also prints each worker's open provider breakers.
    """
    report = await find_pods(client, providers, args.round, args.hotkey)
    for pod in report.pods:
        out(describe_pod(pod, report.owners.get(pod.name)))
    for name, problem in sorted(report.errors.items()):
        out(f"error: {name} could not be listed: {problem}")
    if args.pods_command == "cleanup":
        verb = "would delete" if args.dry_run else "deleted"
        try:
            for pod in await cleanup_pods(providers, report, dry_run=args.dry_run):
                out(f"{verb} {pod.provider} {pod.name}")
        except ProviderError as e:
            out(f"error: {e}")
            return 1
    out(f"{len(report.pods)} pods, {len(report.leaked())} leaked")
    if breaker_dir is not None:
        for worker, states in read_states(breaker_dir).items():
            for state in states:
                if state.is_open(time.time()):
                    out(f"breaker open on {worker}: {state.provider} ({state.last_error})")
    return 1 if report.errors else 0


async def pods_main(settings: Settings, args: argparse.Namespace) -> int:
    """Connect, build every configured provider, run the pods command, close the clients."""
    client = await connect(settings)
    providers = build_providers(settings)
    try:
        return await run_pods_command(client, providers, args, breaker_dir=settings.work_dir)
    finally:
        for provider in providers.values():
            await provider.aclose()


def add_pods_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`pods list` and `pods cleanup` on the CLI's subcommands."""
    pods = sub.add_parser(
        "pods", help="rented pods on every provider in GPU_PROVIDERS; delete leaked ones"
    )
    pods_sub = pods.add_subparsers(dest="pods_command", required=True)
    for name, text in (
        ("list", "print each pod: provider, name, id, state, owning audit (or LEAKED)"),
        ("cleanup", "delete every pod no running audit, leader or pod workflow owns"),
    ):
        command = pods_sub.add_parser(name, help=text)
        command.add_argument("--round", type=int, default=None)
        command.add_argument("--hotkey", default=None)
        if name == "cleanup":
            command.add_argument(
                "--dry-run", action="store_true", help="print what would be deleted"
            )
