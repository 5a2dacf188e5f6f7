"""Webhook notices: sent by the `notify` activity to a loopback webhook server, never twice."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime

import httpx
import pytest_asyncio
from aiohttp import web
from temporalio.client import Client
from temporalio.worker import Replayer

from activities.notify import NotifyActivities
from benchmarks.long_audit import run_fake_audit
from testing.fakes import FakeWorld
from tests.replay.record import GOES_BAD, failing_on, replacement_world, with_generate
from workflows import WORKFLOWS


class Webhook:
    """A Discord-like webhook on loopback that records every POSTed body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, object]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(json.loads(await request.text()))
        return web.Response(status=204)

    def embeds(self) -> list[dict[str, object]]:
        found: list[dict[str, object]] = []
        for body in self.bodies:
            embeds = body["embeds"]
            assert isinstance(embeds, list) and len(embeds) == 1
            found.append(embeds[0])
        return found


@pytest_asyncio.fixture(loop_scope="session")
async def webhook() -> AsyncIterator[Webhook]:
    hook = Webhook()
    app = web.Application()
    app.router.add_post("/api/webhooks/1/token", hook.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    hook.url = f"http://127.0.0.1:{port}/api/webhooks/1/token"
    try:
        yield hook
    finally:
        await runner.cleanup()


def notify_world() -> FakeWorld:
    """Pod 0 gives up acquiring after 2 attempts, pod 1 is marked bad, notices on."""
    world = replacement_world()
    update = {"notify": True, "pod_acquisition_max_attempts": 2}
    world.policy = world.policy.model_copy(update=update)
    return world


async def test_audit_notices_reach_the_webhook_once(client: Client, webhook: Webhook) -> None:
    """A pod that fails to deploy, one marked bad, the final progress and the verdict each
    reach the webhook once, in upstream's shape; replaying the history sends nothing more."""
    world = notify_world()
    async with httpx.AsyncClient() as http:
        notify = NotifyActivities(webhook.url, http).activities()
        fakes = [a for a in with_generate(world, failing_on(GOES_BAD)) if a.__name__ != "notify"]
        run = await run_fake_audit(client, world, activities=[*fakes, *notify])

    embeds = webhook.embeds()
    titles = [str(e["title"]) for e in embeds]
    assert titles.count("Pod Deploy Failed") == 1, embeds
    assert titles.count("Pod Marked Bad") == 1
    assert titles.count("Round 1 Generation — `5Replace`") == 1
    assert titles[-1] == "Miner Audit Result"
    assert len(titles) == 4, titles
    result = embeds[-1]
    assert result["color"] == 0x2ECC71
    assert str(result["description"]).startswith("Miner `5Replace` passed — 10 prompts, median")
    progress = next(e for e in embeds if str(e["title"]).startswith("Round 1 Generation"))
    assert "Generated    10 / 10 (100%)" in str(progress["description"])
    bad = next(e for e in embeds if e["title"] == "Pod Marked Bad")
    assert bad["color"] == 0xE67E22
    assert str(bad["description"]).startswith("`miner-01-5replace-1` on local: ")
    for embed in embeds:
        datetime.fromisoformat(str(embed["timestamp"]))

    parent = run.histories.parent
    sent = [
        e
        for each in parent
        for e in each.history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "notify"
    ]
    assert len(sent) == len(embeds)
    replayer = Replayer(workflows=WORKFLOWS)
    for each in parent:
        await replayer.replay_workflow(each.history)
    assert len(webhook.bodies) == len(embeds)


async def test_without_webhook_no_notice_is_scheduled(client: Client) -> None:
    """notify off (no DISCORD_WEBHOOK_URL): the audit schedules no `notify` at all."""
    world = replacement_world()
    fakes = with_generate(world, failing_on(GOES_BAD))
    await run_fake_audit(client, world, activities=fakes)
    assert world.notices == []
