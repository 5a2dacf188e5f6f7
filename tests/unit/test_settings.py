"""Settings: upstream names and defaults, clear errors naming the variable."""

from __future__ import annotations

import pytest

from models.audit import ProviderName
from models.settings import Settings, SettingsError, load_settings

ENV_NAMES = [
    "GPU_PROVIDERS",
    "PODS_PER_MINER",
    "INITIAL_POD_COUNT",
    "GENERATION_TIMEOUT",
    "ACCEPTABLE_DISTANCE",
    "TEMPORAL_ADDRESS",
    "COMPETITION_REPO",
]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def test_defaults_are_upstream() -> None:
    """Unset variables take REFERENCE.md's defaults."""
    settings = load_settings()
    policy = settings.audit_policy()
    assert settings.temporal_address == "localhost:7233"
    assert settings.competition_branch == "main"
    assert policy.gpu_providers == [ProviderName.TARGON]
    assert (policy.pods_per_miner, policy.initial_pod_count, policy.max_pod_attempts) == (4, 2, 6)
    assert (policy.max_prompt_attempts, policy.pod_min_samples, policy.pod_failure_threshold) == (
        3,
        8,
        8,
    )
    assert (
        policy.prompt_lock_timeout_seconds,
        policy.rolling_median_limit_seconds,
        policy.warmup_half_window,
        policy.retry_delta_min_samples,
        policy.download_timeout_seconds,
    ) == (600.0, 120.0, 4, 3, 180.0)
    assert (
        policy.check_pod_interval_seconds,
        policy.pod_acquisition_retry_interval_seconds,
        policy.pod_acquisition_max_attempts,
        policy.pod_visibility_timeout_seconds,
        policy.pod_start_delay_seconds,
    ) == (30.0, 120.0, 720, 1800.0, 30.0)
    assert (policy.median_limit_seconds, policy.trim_count, policy.generation_timeout_seconds) == (
        90.0,
        6,
        180.0,
    )
    assert policy.acceptable_distance == 0.1
    assert (policy.max_mismatched_prompts, policy.max_mismatched_critical_prompts) == (6, 1)
    assert settings.generation_port == 10006


def test_comma_list_of_providers_in_priority_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """GPU_PROVIDERS is a comma list, order kept, case and spaces forgiven."""
    monkeypatch.setenv("GPU_PROVIDERS", "Verda, targon,local")
    assert load_settings().gpu_providers == [
        ProviderName.VERDA,
        ProviderName.TARGON,
        ProviderName.LOCAL,
    ]


def test_local_pod_faults_for_benchmarks(monkeypatch: pytest.MonkeyPatch) -> None:
    """LOCAL_POD_SLOWDOWN and LOCAL_POD_DIES_AFTER: JSON maps of pod index, empty by default."""
    monkeypatch.delenv("LOCAL_POD_DIES_AFTER", raising=False)
    assert load_settings().local_pod_dies_after == {}
    monkeypatch.setenv("LOCAL_POD_SLOWDOWN", '{"1": 3}')
    monkeypatch.setenv("LOCAL_POD_DIES_AFTER", '{"1": 4}')
    settings = load_settings()
    assert (settings.local_pod_slowdown, settings.local_pod_dies_after) == ({1: 3.0}, {1: 4})
    monkeypatch.setenv("LOCAL_POD_DIES_AFTER", '{"1": "soon"}')
    with pytest.raises(SettingsError, match="LOCAL_POD_DIES_AFTER"):
        load_settings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GPU_PROVIDERS", "nvidia"),
        ("PODS_PER_MINER", "0"),
        ("GENERATION_TIMEOUT", "soon"),
        ("ACCEPTABLE_DISTANCE", "-1"),
    ],
)
def test_invalid_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """A bad value fails at start-up with the variable's name and the value."""
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert name in str(info.value)
    assert value in str(info.value)


def test_cross_field_invariant(monkeypatch: pytest.MonkeyPatch) -> None:
    """More initial pods than pods per miner is refused."""
    monkeypatch.setenv("PODS_PER_MINER", "2")
    monkeypatch.setenv("INITIAL_POD_COUNT", "3")
    with pytest.raises(SettingsError, match="INITIAL_POD_COUNT"):
        load_settings()


ROUND_ENV = (
    "GITHUB_REPO",
    "CHECK_AUDIT_INTERVAL",
    "MIN_CHECK_STATE_INTERVAL",
    "MAX_CHECK_STATE_INTERVAL",
    "MAX_CONCURRENT_MINERS",
    "MINER_START_STAGGER",
    "BUILD_COMMIT_MESSAGE",
    "DOCKER_IMAGE_FORMAT",
)


def test_round_policy_defaults_are_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    """The round loop's intervals, concurrency and formats are REFERENCE.md sec. 3-4's."""
    for name in ROUND_ENV:
        monkeypatch.delenv(name, raising=False)
    policy = load_settings().round_policy()
    assert policy.check_audit_interval_seconds == 120
    assert (policy.min_check_state_interval_seconds, policy.max_check_state_interval_seconds) == (
        120,
        1800,
    )
    assert policy.max_concurrent_miners == 4
    assert policy.miner_start_stagger_seconds == 5
    assert policy.check_build_interval_seconds == 120
    assert policy.build_timeout_seconds == 10800
    assert policy.build_commit_message == "submissions for round {current_round}"
    assert policy.docker_image_format.endswith("/active-competition/{hotkey10}:{tag}")
    assert policy.track_builds is False  # no GITHUB_REPO: builds.json is someone else's
    monkeypatch.setenv("GITHUB_REPO", "404-Repo/competition")
    assert load_settings().round_policy().track_builds is True


def test_round_settings_errors_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad GITHUB_REPO or an inverted state-check clamp stops start-up with the name."""
    monkeypatch.setenv("GITHUB_REPO", "not a repo")
    with pytest.raises(SettingsError, match="GITHUB_REPO"):
        load_settings()
    monkeypatch.delenv("GITHUB_REPO")
    monkeypatch.setenv("MIN_CHECK_STATE_INTERVAL", "900")
    monkeypatch.setenv("MAX_CHECK_STATE_INTERVAL", "60")
    with pytest.raises(SettingsError, match="MIN_CHECK_STATE_INTERVAL"):
        load_settings()


def test_every_setting_is_documented_in_the_readme() -> None:
    """Operators configure from README's table: every environment variable appears in it."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    aliases = [f.alias for f in Settings.model_fields.values() if f.alias]
    assert [a for a in aliases if f"`{a}`" not in readme] == []
