"""Pod selection shared by the audit's sweep and `starter.py pods`: prefixes, hotkeys, owners."""

from __future__ import annotations

from pods_cli import owner_pod_prefix
from providers.inventory import hotkey_matches, owned_by, pods_prefix


def test_prefixes_select_rounds_and_hotkeys() -> None:
    """A round selects `miner-NN-`; a hotkey matches its first ten characters, lowercased."""
    assert pods_prefix(None) == "miner-"
    assert pods_prefix(3) == "miner-03-"
    assert hotkey_matches("miner-03-5fhonestab-0-1a2b3c4d", "5FHonestAbcdefgh")
    assert not hotkey_matches("miner-03-5fhonestxy-0", "5FHonestAbcdefgh")
    assert not hotkey_matches("other", "5FHonestAbcdefgh")


def test_owner_prefixes_of_audits_leaders_and_pods() -> None:
    """Audit, leader and pod-workflow ids map to the pod prefix they rent under."""
    assert owner_pod_prefix("audit-3-5FHonestAbcdefgh") == "miner-03-5fhonestab-"
    assert owner_pod_prefix("audit-3-5FHonestAbcdefgh-pod-1a2b3c4d-0") == "miner-03-5fhonestab-"
    assert owner_pod_prefix("leader-12") == "miner-12-leader-"
    assert owner_pod_prefix("leader-12-pod-0") == "miner-12-leader-"
    assert owner_pod_prefix("competition") is None
    assert owner_pod_prefix("builds-3") is None
    assert owned_by("miner-03-5fhonestab-0", ["miner-03-leader-", "miner-03-5fhonestab-"]) == (
        "miner-03-5fhonestab-"
    )
    assert owned_by("miner-04-5fhonestab-0", ["miner-03-5fhonestab-"]) is None
