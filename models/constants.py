"""Names shared by workers, starters, workflows and tests: queues, id schemes, search attributes."""

from __future__ import annotations

TASK_QUEUE = "generation-orchestrator"
"""All workflows and the I/O activities (git, providers, miner HTTP calls, artifacts)."""

GPU_TASK_QUEUE = "gpu"
"""Render + DINOv3 scoring activities; the only worker that imports torch."""

AUDIT_WORKFLOW_ID_PREFIX = "audit"

SEARCH_ATTRIBUTE_ROUND = "Round"
SEARCH_ATTRIBUTE_HOTKEY = "Hotkey"
SEARCH_ATTRIBUTE_AUDIT_STATUS = "AuditStatus"

# name -> temporal CLI type, registered on every server we start (dev server, compose, tests).
SEARCH_ATTRIBUTES: dict[str, str] = {
    SEARCH_ATTRIBUTE_ROUND: "Int",
    SEARCH_ATTRIBUTE_HOTKEY: "Keyword",
    SEARCH_ATTRIBUTE_AUDIT_STATUS: "Keyword",
}

DEFAULT_DINOV3_MODEL = "facebook/dinov3-vits16-pretrain-lvd1689m"


def audit_workflow_id(round_number: int, hotkey: str) -> str:
    """The id operators type in the CLI: one audit per (round, hotkey)."""
    return f"{AUDIT_WORKFLOW_ID_PREFIX}-{round_number}-{hotkey}"


ROUND_WORKFLOW_ID = "competition"
"""The one long-lived RoundWorkflow (`python starter.py run` attaches to it)."""


def build_tracking_id(round_number: int) -> str:
    """BuildTrackingWorkflow of a round."""
    return f"builds-{round_number}"


def leader_workflow_id(round_number: int) -> str:
    """LeaderGenerationWorkflow of a round."""
    return f"leader-{round_number}"


def pod_workflow_id(audit_id: str, slot: int, attempt: int) -> str:
    """Child id of a pod slot's attempt; derived, so a retried start finds its own child."""
    return f"{audit_id}-pod-{slot}-{attempt}"


def pod_name_prefix(round_number: int, hotkey: str) -> str:
    """Prefix of every pod an audit rents (upstream scheme); cleanup sweeps by it."""
    return f"miner-{round_number:02d}-{hotkey[:10].lower()}-"


def round_pod_prefix(round_number: int) -> str:
    """Prefix of every pod of a round, leader included (upstream's end-of-iteration sweep; we
    zero-pad as pod names are, so round 1 never sweeps round 10's pods)."""
    return f"miner-{round_number:02d}-"


def pod_name(round_number: int, hotkey: str, slot: int, attempt: int) -> str:
    """Deterministic pod name: a retried deploy finds the pod it already made."""
    return f"{pod_name_prefix(round_number, hotkey)}{slot}-{attempt}"


def pod_child_id(audit_id: str, index: int, run_chain_id: str | None = None) -> str:
    """Child id of a v2 audit's `index`-th pod start.

    With the audit's run chain (audits with the `run-keyed-pods` marker) the id carries its key,
    so a re-run of the audit (after a failure, a termination, a re-audit) never meets the
    previous run's children: `audit-{round}-{hotkey}-pod-{key}-{i}`.
    """
    if run_chain_id is None:
        return f"{audit_id}-pod-{index}"
    return f"{audit_id}-pod-{run_key(run_chain_id)}-{index}"


RUN_KEY_LENGTH = 8


def run_key(run_chain_id: str) -> str:
    """Short key of an audit's run chain: the last hex digits of its first run id (the random
    ones: Temporal's UUIDv7 run ids start with a timestamp)."""
    return run_chain_id.replace("-", "")[-RUN_KEY_LENGTH:].lower()


def rented_pod_name(round_number: int, hotkey: str, index: int, run_chain_id: str) -> str:
    """The name a keyed audit rents its pod under: upstream's name plus the run key, so a
    re-run's pods never share a name with the previous run's (the sweep prefix still finds
    both). pod_stats.json keeps upstream's name."""
    return f"{upstream_pod_name(round_number, hotkey, index)}-{run_key(run_chain_id)}"


def unkeyed_pod_name(name: str) -> str:
    """Upstream's pod name of a rented one (the run key dropped); other names unchanged."""
    base, _, key = name.rpartition("-")
    keyed = base.startswith("miner-") and len(key) == RUN_KEY_LENGTH and base[-1:].isdigit()
    return base if keyed and all(c in "0123456789abcdef" for c in key) else name


def upstream_pod_name(round_number: int, hotkey: str, index: int) -> str:
    """Upstream's pod id `miner-{round:02d}-{hotkey[:10].lower()}-{i}` (i counts starts)."""
    return f"{pod_name_prefix(round_number, hotkey)}{index}"


def short_pod_id(pod_name: str) -> str:
    """Upstream's short id (logs, attempted_by): the pod id minus `miner-NN-`."""
    parts = pod_name.split("-", 2)
    return parts[2] if len(parts) == 3 else pod_name
