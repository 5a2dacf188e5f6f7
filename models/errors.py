"""Error types shared by activities (which raise them) and workflows (which decide on retries)."""

from __future__ import annotations

from enum import StrEnum


class ErrorType(StrEnum):
    """`ApplicationError.type` values. Permanent ones are listed in `PERMANENT_ERRORS`."""

    COMPETITION_FILE_INVALID = "CompetitionFileInvalid"
    UNKNOWN_ROUND = "UnknownRound"
    UNKNOWN_HOTKEY = "UnknownHotkey"
    INVALID_INPUT = "InvalidInput"
    PROVIDER_UNAVAILABLE = "ProviderUnavailable"
    PROVIDER_REJECTED = "ProviderRejected"
    NO_CAPACITY = "NoCapacity"
    """The provider has no GPU of that kind now: raised non-retryable by `deploy_pod`, so the
    pod's next acquisition attempt goes to the next provider; never charged to the miner."""
    PROVIDER_CIRCUIT_OPEN = "ProviderCircuitOpen"
    """The worker skips this provider for a while after repeated deploy failures (its circuit
    breaker): raised non-retryable, so the next acquisition attempt tries the next provider."""
    POD_UNHEALTHY = "PodUnhealthy"
    POD_NOT_VISIBLE = "PodNotVisible"  # not listed with a URL in time: delete, retry acquisition
    PROMPT_UNAVAILABLE = "PromptUnavailable"
    MINER_FAILED = "MinerFailed"
    MINER_BAD_OUTPUT = "MinerBadOutput"
    MINER_TIMEOUT = "MinerTimeout"
    SUBMISSION_UNAVAILABLE = "SubmissionUnavailable"
    RENDER_FAILED = "RenderFailed"
    SCORING_MODEL_UNAVAILABLE = "ScoringModelUnavailable"  # DINOV3_MODEL cannot be loaded
    GIT_PUSH_CONFLICT = "GitPushConflict"
    NOT_READY = "NotReady"
    WRONG_COMPETITION_REPO = "WrongCompetitionRepo"
    """This worker is configured for another competition repo than the audit's (retryable: a
    worker configured for the audit's repo takes the retry)."""
    NOTIFY_REJECTED = "NotifyRejected"
    """The notice webhook refused a notice (4xx): not retried, the audit goes on."""
    SERVICE_UNAVAILABLE = "ServiceUnavailable"
    """One of our services (GPU queue, artifact store, prompt server) stayed down past
    SERVICE_OUTAGE_LIMIT: the audit fails without a verdict; never charged to the miner."""


PERMANENT_ERRORS: list[str] = [
    ErrorType.COMPETITION_FILE_INVALID,
    ErrorType.UNKNOWN_ROUND,
    ErrorType.UNKNOWN_HOTKEY,
    ErrorType.INVALID_INPUT,
    ErrorType.PROVIDER_REJECTED,
    ErrorType.POD_NOT_VISIBLE,
    ErrorType.PROMPT_UNAVAILABLE,
    ErrorType.MINER_FAILED,
    ErrorType.MINER_BAD_OUTPUT,
    ErrorType.MINER_TIMEOUT,
    ErrorType.SUBMISSION_UNAVAILABLE,
    ErrorType.RENDER_FAILED,
]


class UnknownRoundError(LookupError):
    """The competition repo has no such round (its `rounds/{n}/seed.json` does not exist)."""

    def __init__(self, round_number: int, path: str) -> None:
        self.round_number = round_number
        self.path = path
        super().__init__(f"unknown round {round_number}: {path} does not exist")


class UnknownHotkeyError(LookupError):
    """The hotkey has no entry in the round's `submissions.json`."""

    def __init__(self, hotkey: str, round_number: int, path: str) -> None:
        self.hotkey = hotkey
        self.round_number = round_number
        self.path = path
        super().__init__(f"unknown hotkey {hotkey!r} in round {round_number}: no entry in {path}")


class CompetitionFileError(ValueError):
    """A competition-repo file is missing, not JSON, or of the wrong shape.

    The message always names the file (repo-relative path) and, where known, the field.
    """

    def __init__(self, path: str, problem: str, field: str | None = None) -> None:
        self.path = path
        self.field = field
        self.problem = problem
        where = f"{path}: field '{field}'" if field else path
        super().__init__(f"{where}: {problem}")
