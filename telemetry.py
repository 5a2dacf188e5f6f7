"""OpenTelemetry for workers: traces and metrics from the standard OTEL_* environment variables.

`configure()` builds a tracer provider and a meter provider (service name OTEL_SERVICE_NAME,
default `generation-orchestrator`). With OTEL_EXPORTER_OTLP_ENDPOINT set they export over OTLP
(the exporters read the other OTEL_EXPORTER_OTLP_* variables themselves; install the `otlp`
extra), and Temporal's own SDK metrics go to the same collector through the SDK runtime;
without it nothing is exported. `ActivityTelemetry` is a worker interceptor that gives each
step of an audit a span (deploy, warm-up, generate, render, score, write) carrying round,
hotkey, pod and stem where the activity knows them, and records the metrics:

| metric | kind | attributes |
|---|---|---|
| `orchestrator.generations` | counter | outcome (`generated` or the error type) |
| `orchestrator.generation.seconds` | histogram | - |
| `orchestrator.pods.deployed` | counter | provider |
| `orchestrator.pods.deleted` | counter | - |
| `orchestrator.pods.rented_seconds` | counter (s) | provider: deploy -> delete of each pod |
| `orchestrator.audits` | counter | outcome (passed / rejected) |

It owns the providers' lifetime (`shutdown` flushes them); it does not own the activities.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from temporalio import activity, client
from temporalio.exceptions import ApplicationError
from temporalio.runtime import OpenTelemetryConfig, Runtime, TelemetryConfig
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

SERVICE_NAME = "generation-orchestrator"

SPAN_NAMES: dict[str, str] = {
    "deploy_pod": "deploy",
    "await_pod_healthy": "warm-up",
    "generate": "generate",
    "render_preview": "render",
    "score_distance": "score",
    "write_files": "write",
    "delete_pod": "delete",
}
"""Activity type -> span name of the audit steps operators follow in a trace."""

_POD_WORKFLOW = re.compile(r"^audit-(?P<round>\d+)-(?P<hotkey>[^-]+)-pod-(?P<pod>.+)$")
_AUDIT_WORKFLOW = re.compile(r"^audit-(?P<round>\d+)-(?P<hotkey>[^-]+)$")


class TelemetryError(RuntimeError):
    """OTLP export asked for (OTEL_EXPORTER_OTLP_ENDPOINT) but the exporter is not installed."""


@dataclass
class Telemetry:
    """The providers of one process and the Temporal runtime that exports SDK metrics."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    runtime: Runtime | None = None

    def shutdown(self) -> None:
        """Flush and stop both providers."""
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def configure(
    environ: Mapping[str, str] | None = None,
    *,
    span_exporter: SpanExporter | None = None,
    metric_reader: MetricReader | None = None,
) -> Telemetry:
    """Providers as the OTEL_* variables say; tests pass in-memory exporters instead.

    Raises:
        TelemetryError: OTEL_EXPORTER_OTLP_ENDPOINT is set and the OTLP exporter is missing.
    """
    env = os.environ if environ is None else environ
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", SERVICE_NAME)})
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    readers: list[MetricReader] = [metric_reader] if metric_reader is not None else []
    tracer_provider = TracerProvider(resource=resource)
    if span_exporter is not None:
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    runtime: Runtime | None = None
    if endpoint:
        try:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter,
            )
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError as e:
            raise TelemetryError(
                "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OTLP exporter is not installed: "
                "pip install -e '.[otlp]'"
            ) from e
        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        runtime = Runtime(
            telemetry=TelemetryConfig(
                metrics=OpenTelemetryConfig(url=endpoint), global_tags={"service": SERVICE_NAME}
            )
        )
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    return Telemetry(tracer_provider, meter_provider, runtime)


class ActivityTelemetry(client.Interceptor, Interceptor):
    """Worker interceptor: a span per audit step and the audit metrics (module docstring).

    Also a client interceptor (changing nothing on the client side), so that passing it to
    `connect` puts it on every worker of that client.
    """

    def __init__(self, telemetry: Telemetry) -> None:
        """Take the tracer and the instruments from `telemetry`'s providers."""
        self._tracer = telemetry.tracer_provider.get_tracer(SERVICE_NAME)
        meter: Meter = telemetry.meter_provider.get_meter(SERVICE_NAME)
        self.generations = meter.create_counter(
            "orchestrator.generations", description="generate calls by outcome"
        )
        self.generation_seconds = meter.create_histogram(
            "orchestrator.generation.seconds", unit="s", description="miner generation time"
        )
        self.pods_deployed = meter.create_counter(
            "orchestrator.pods.deployed", description="pods rented (initial and replacements)"
        )
        self.pods_deleted = meter.create_counter("orchestrator.pods.deleted")
        self.rented_seconds = meter.create_counter(
            "orchestrator.pods.rented_seconds",
            unit="s",
            description="rented pod time, deploy to delete (x GPUs per pod = GPU-seconds)",
        )
        self.audits = meter.create_counter(
            "orchestrator.audits", description="verdicts written, by outcome"
        )

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        """Wrap every activity of the worker."""
        return _Inbound(next, self)

    @property
    def tracer(self) -> trace.Tracer:
        """The tracer the spans come from."""
        return self._tracer


class _Inbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, owner: ActivityTelemetry) -> None:
        super().__init__(next)
        self._owner = owner

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        name = SPAN_NAMES.get(info.activity_type)
        if name is None:
            return await super().execute_activity(input)
        attributes = step_attributes(info.workflow_id or "", input.args[0] if input.args else None)
        attributes["temporal.activity.attempt"] = info.attempt
        started = time.monotonic()
        with self._owner.tracer.start_as_current_span(name, attributes=attributes) as span:
            try:
                result = await super().execute_activity(input)
            except Exception as e:
                if info.activity_type == "generate":
                    outcome = e.type if isinstance(e, ApplicationError) and e.type else "error"
                    self._owner.generations.add(1, {"outcome": outcome})
                raise
            span.set_attribute("duration_s", time.monotonic() - started)
        self._record(info.activity_type, input.args[0] if input.args else None, result)
        return result

    def _record(self, activity_type: str, arg: object, result: object) -> None:
        owner = self._owner
        if activity_type == "generate":
            owner.generations.add(1, {"outcome": "generated"})
            seconds = getattr(result, "generation_time", None)
            if isinstance(seconds, float | int):
                owner.generation_seconds.record(float(seconds))
        elif activity_type == "deploy_pod":
            owner.pods_deployed.add(1, {"provider": str(getattr(arg, "provider", ""))})
        elif activity_type == "delete_pod":
            owner.pods_deleted.add(1)
            pod = getattr(arg, "pod", None)
            deployed_at = getattr(pod, "deployed_at", None)
            if isinstance(deployed_at, datetime):
                rented = (datetime.now(UTC) - deployed_at).total_seconds()
                owner.rented_seconds.add(
                    max(0.0, rented), {"provider": str(getattr(pod, "provider", ""))}
                )
        elif activity_type == "write_files":
            for write in getattr(arg, "files", []):
                # the verdict: one miner's entry, merged under its hotkey
                value = getattr(write, "value", None)
                path = str(getattr(write, "path", ""))
                if path.endswith("generation_audits.json") and isinstance(value, dict):
                    owner.audits.add(1, {"outcome": str(value.get("outcome"))})


def step_attributes(workflow_id: str, arg: object) -> dict[str, str | int]:
    """round, hotkey and pod from the calling workflow's id; stem and pod from the input."""
    attributes: dict[str, str | int] = {"temporal.workflow_id": workflow_id}
    match = _POD_WORKFLOW.match(workflow_id) or _AUDIT_WORKFLOW.match(workflow_id)
    if match:
        attributes["round"] = int(match["round"])
        attributes["hotkey"] = match["hotkey"]
        if "pod" in match.groupdict():
            attributes["pod"] = match["pod"]
    assignment = getattr(arg, "assignment_id", None)
    stem = getattr(arg, "stem", None) or (
        assignment.split("#")[0] if isinstance(assignment, str) else None
    )
    if isinstance(stem, str):
        attributes["stem"] = stem
    pod_name = getattr(arg, "name", None) or getattr(getattr(arg, "pod", None), "name", None)
    if isinstance(pod_name, str):
        attributes["pod"] = pod_name
    return attributes
