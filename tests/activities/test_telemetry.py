"""telemetry.py: spans and metrics of audit steps, seen through in-memory exporters."""

from __future__ import annotations

from datetime import timedelta

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

from models.audit import (
    ArtifactResult,
    DeletePodInput,
    DeployPodInput,
    GenerateInput,
    GenerateResult,
    JsonFileWrite,
    PodRef,
    ProviderName,
    RenderPreviewInput,
    ScoreDistanceInput,
    ScoreDistanceResult,
    WriteFilesInput,
    WriteFilesResult,
)
from telemetry import ActivityTelemetry, configure, step_attributes
from tests.helpers import new_worker

POD_WORKFLOW_ID = "audit-7-5HotkeyTel-pod-abcd1234-0"
ONCE = RetryPolicy(maximum_attempts=1)


def generate_input(stem: str) -> GenerateInput:
    return GenerateInput(
        audit_id="audit-7-5HotkeyTel",
        assignment_id=f"{stem}#1",
        round=7,
        provider=ProviderName.LOCAL,
        pod_url="http://127.0.0.1:1",
        prompt_url="http://127.0.0.1:1/p.png",
        seed=1,
        timeout=timedelta(seconds=5),
        max_bytes=100,
    )


@activity.defn(name="deploy_pod")
async def deploy_pod(input: DeployPodInput) -> PodRef:
    return PodRef(name=input.name, provider=input.provider)


@activity.defn(name="generate")
async def generate(input: GenerateInput) -> GenerateResult:
    if input.assignment_id.startswith("bad"):
        raise ApplicationError("miner said 500", type="MinerFailed", non_retryable=True)
    return GenerateResult(glb_uri="file:///x.glb", size=10, generation_time=2.5)


@activity.defn(name="render_preview")
async def render_preview(input: RenderPreviewInput) -> ArtifactResult:
    return ArtifactResult(uri="file:///x.png", size=1)


@activity.defn(name="score_distance")
async def score_distance(input: ScoreDistanceInput) -> ScoreDistanceResult:
    return ScoreDistanceResult(distance=0.0)


@activity.defn(name="delete_pod")
async def delete_pod(input: DeletePodInput) -> None:
    return None


@activity.defn(name="write_files")
async def write_files(input: WriteFilesInput) -> WriteFilesResult:
    return WriteFilesResult(commit="abc")


@workflow.defn(name="TelemetrySteps", sandboxed=False)
class TelemetrySteps:
    @workflow.run
    async def run(self) -> None:
        timeout = timedelta(seconds=10)
        await workflow.execute_activity(
            "deploy_pod",
            DeployPodInput(name="miner-07-5hotkeytel-0-abcd1234", provider="local", image="i"),
            start_to_close_timeout=timeout,
            result_type=PodRef,
        )
        for stem in ("good", "bad"):
            try:
                await workflow.execute_activity(
                    "generate",
                    generate_input(stem),
                    start_to_close_timeout=timeout,
                    retry_policy=ONCE,
                    result_type=GenerateResult,
                )
            except Exception:
                workflow.logger.info("expected failure of %s", stem)
        await workflow.execute_activity(
            "render_preview",
            RenderPreviewInput(glb_uri="file:///x.glb", stem="good"),
            start_to_close_timeout=timeout,
            result_type=ArtifactResult,
        )
        await workflow.execute_activity(
            "score_distance",
            ScoreDistanceInput(png_a_uri="file:///a.png", png_b_uri="file:///b.png", stem="good"),
            start_to_close_timeout=timeout,
            result_type=ScoreDistanceResult,
        )
        verdict = {"hotkey": "5HotkeyTel", "outcome": "rejected"}
        write = JsonFileWrite(
            path="rounds/7/generation_audits.json", value=verdict, merge_key="5HotkeyTel"
        )
        await workflow.execute_activity(
            "write_files",
            WriteFilesInput(message="verdict", files=[write]),
            start_to_close_timeout=timeout,
            result_type=WriteFilesResult,
        )
        rented = PodRef(
            name="miner-07-5hotkeytel-0-abcd1234",
            provider=ProviderName.LOCAL,
            deployed_at=workflow.now() - timedelta(seconds=90),
        )
        await workflow.execute_activity(
            "delete_pod", DeletePodInput(pod=rented), start_to_close_timeout=timeout
        )


def points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, object], object]]]:
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[str, list[tuple[dict[str, object], object]]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", None)
                    if value is None:
                        value = (getattr(point, "count", None), getattr(point, "sum", None))
                    found.setdefault(metric.name, []).append((dict(point.attributes or {}), value))
    return found


async def test_audit_steps_make_spans_and_metrics(client: Client) -> None:
    """deploy / generate (one ok, one failed) / write: spans carry round, hotkey, pod, stem;
    counters and the histogram count each by outcome."""
    spans = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    telemetry = configure({}, span_exporter=spans, metric_reader=reader)
    assert telemetry.runtime is None  # no OTEL_EXPORTER_OTLP_ENDPOINT: nothing exported
    async with new_worker(
        client,
        TelemetrySteps,
        activities=[deploy_pod, generate, write_files, delete_pod, render_preview, score_distance],
        interceptors=[ActivityTelemetry(telemetry)],
    ) as worker:
        await client.execute_workflow(
            TelemetrySteps.run, id=POD_WORKFLOW_ID, task_queue=worker.task_queue
        )
    telemetry.tracer_provider.force_flush()

    finished = spans.get_finished_spans()
    names = ["deploy", "generate", "generate", "render", "score", "write", "delete"]
    assert [s.name for s in finished] == names
    deploy, good, bad, render, score, write, delete = (dict(s.attributes or {}) for s in finished)
    assert render["stem"] == "good" and score["stem"] == "good"
    for attributes in (deploy, good, bad, render, score, write, delete):
        assert attributes["round"] == 7
        assert attributes["hotkey"] == "5HotkeyTel"
    assert deploy["pod"] == "miner-07-5hotkeytel-0-abcd1234"
    assert good["pod"] == "abcd1234-0" and good["stem"] == "good"
    assert bad["stem"] == "bad"
    assert not finished[2].status.is_ok

    metrics = points(reader)
    assert sorted(str(a["outcome"]) for a, _ in metrics["orchestrator.generations"]) == [
        "MinerFailed",
        "generated",
    ]
    assert metrics["orchestrator.generation.seconds"] == [({}, (1, 2.5))]
    assert metrics["orchestrator.pods.deployed"] == [({"provider": "local"}, 1)]
    assert metrics["orchestrator.audits"] == [({"outcome": "rejected"}, 1)]
    assert metrics["orchestrator.pods.deleted"] == [({}, 1)]
    [(rented_attributes, seconds)] = metrics["orchestrator.pods.rented_seconds"]
    assert rented_attributes == {"provider": "local"}
    assert isinstance(seconds, float) and 90 <= seconds < 150
    telemetry.shutdown()


def test_step_attributes_of_an_audit_workflow() -> None:
    """An activity of the audit itself has round and hotkey, no pod."""
    assert step_attributes("audit-3-5Abc", None) == {
        "temporal.workflow_id": "audit-3-5Abc",
        "round": 3,
        "hotkey": "5Abc",
    }


def test_otlp_endpoint_without_exporter_is_a_clear_error() -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT asks for OTLP: the missing exporter is named, or it works."""
    try:
        import opentelemetry.exporter.otlp.proto.grpc  # noqa: F401
    except ImportError:
        from telemetry import TelemetryError

        with pytest.raises(TelemetryError, match=r"\.\[otlp\]"):
            configure({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"})
    else:
        telemetry = configure({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"})
        assert telemetry.runtime is not None
