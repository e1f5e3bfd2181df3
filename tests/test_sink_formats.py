"""Tests of the webhook sink's bodies: json, cloudevents, slack and teams (monitor.sink_formats)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.config_sinks import WebhookFormat
from monitor.core.item_watch import ProtectionChanged, RpoBreached, RpoRestored
from monitor.core.jobs import JobError, JobStatus
from monitor.core.vaults import VaultRef, parse_vault_id
from monitor.events import render_change, to_cloudevent
from monitor.outbox import OutboxEvent
from monitor.sink_formats import (
    CONTENT_TYPES,
    SLACK_MAX_BYTES,
    SLACK_SECTION_CHARS,
    TEAMS_MAX_BYTES,
    Body,
    portal_link,
    render_bodies,
)
from tests import test_item_events as ie
from tests.core import payloads as p
from tests.fakes import rendered_backup_vault_job_event, rendered_job_event
from tests.test_sinks import CLOUDEVENT_VALIDATOR, validate

PORTAL = "https://portal.azure.com"
VAULT = parse_vault_id(p.VAULT_ID, location="westeurope")
EMITTED_AT = datetime(2026, 11, 25, 10, 23, 42, 604_000, tzinfo=UTC)
FORMATS: tuple[WebhookFormat, ...] = ("json", "cloudevents", "slack", "teams")
JOB_GUID = "7ddead57-0000-4000-8000-000000000001"


def job_event(
    *,
    status: str = "Failed",
    vault: VaultRef = VAULT,
    name: str = JOB_GUID,
    entity: str | None = "vm-web-01",
    operation: str = "Backup",
    errors: Sequence[JobError] | None = None,
    duration: str | None = "PT1H2M3S",
) -> dict[str, object]:
    """A schema v1 event of one job (validated against the shipped schema)."""
    start = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    terminal = JobStatus.of(status).is_terminal
    event = rendered_job_event(
        vault,
        name=name,
        status=status,
        start=start,
        end=start + timedelta(hours=1) if terminal else None,
        emitted_at=EMITTED_AT,
        entity=entity,
        operation=operation,
        duration=duration,
        errors=None if errors is None else tuple(errors),
    )
    validate(event)
    return event


BV_VAULT = parse_vault_id(
    f"/subscriptions/{p.SUB}/resourceGroups/rg-backup/providers/Microsoft.DataProtection/"
    "backupVaults/bv1",
    location="westeurope",
)


def bv_event(status: str = "Failed") -> dict[str, object]:
    """A schema v1 event of a Backup vault disk backup job (validated)."""
    start = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    terminal = JobStatus.of(status).is_terminal
    event = rendered_backup_vault_job_event(
        BV_VAULT,
        name=JOB_GUID,
        status=status,
        start=start,
        end=start + timedelta(minutes=3) if terminal else None,
        emitted_at=EMITTED_AT,
        backup_instance="rg-disks\\disk-data-01",
        errors=FAILED_ERRORS[:1] if terminal else None,
    )
    validate(event)
    return event


FAILED_ERRORS = (
    JobError(
        code="UserErrorVmNotFound",
        message="The VM <vm-web-01> & its disks were not found",
        title=None,
        recommendations=("Check that the VM exists", "Then retry the backup"),
    ),
    JobError(code="Second", message="second error", title=None, recommendations=()),
)


def outbox(*events: dict[str, object], first_seq: int = 1) -> list[OutboxEvent]:
    """The outbox records of `events`, as store.py would read them back."""
    return [
        OutboxEvent(
            seq=first_seq + i,
            event_id=str(e.get("event_id", f"id-{i}")),
            committed_at=EMITTED_AT,
            line=orjson.dumps(e, option=orjson.OPT_APPEND_NEWLINE),
        )
        for i, e in enumerate(events)
    ]


def distinct_events(count: int) -> list[dict[str, object]]:
    """`count` events of different jobs and statuses."""
    statuses = ["InProgress", "Completed", "Failed", "CompletedWithWarnings", "Cancelled"]
    return [
        job_event(status=statuses[i % len(statuses)], name=f"7ddead57-0000-4000-8000-{i:012d}")
        for i in range(count)
    ]


def slack_texts(message: dict[str, Any]) -> list[str]:
    """Every mrkdwn or plain text of a Slack message (fallback, sections, fields, context)."""
    texts = [message["text"]]
    for block in message["blocks"]:
        if "text" in block:
            texts.append(block["text"]["text"])
        texts += [f["text"] for f in block.get("fields", [])]
        texts += [e["text"]["text"] if "url" in e else e["text"] for e in block.get("elements", [])]
    return texts


def card_of(message: dict[str, Any]) -> dict[str, Any]:
    """The Adaptive Card of a Teams message, after checking the Workflows envelope."""
    assert message["type"] == "message"
    [attachment] = message["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card: dict[str, Any] = attachment["content"]
    assert card["type"] == "AdaptiveCard"
    assert card["version"] == "1.4"
    return card


def card_text(card: dict[str, Any]) -> str:
    """The text a person reads on a card: text blocks and facts."""
    parts: list[str] = []
    for item in card["body"]:
        if item["type"] == "TextBlock":
            parts.append(item["text"])
        elif item["type"] == "FactSet":
            parts += [f"{f['title']}: {f['value']}" for f in item["facts"]]
    return "\n".join(parts)


class TestBatchFormats:
    """json and cloudevents carry the whole batch in one body."""

    def test_json_is_the_array_of_events(self) -> None:
        """One body: the events in order, byte-compatible with the committed lines."""
        events = distinct_events(4)
        [body] = render_bodies("json", outbox(*events), portal_url=PORTAL)
        assert orjson.loads(body.data) == events
        assert body.content_type == "application/json"
        assert body.event_count == 4
        ids = "\n".join(str(e["event_id"]) for e in events)
        assert body.idempotency_key == hashlib.sha256(ids.encode()).hexdigest()

    def test_cloudevents_batch_mode(self) -> None:
        """An array of valid CloudEvents envelopes of the events, as `to_cloudevent` makes."""
        events = distinct_events(3)
        [body] = render_bodies("cloudevents", outbox(*events), portal_url=PORTAL)
        assert body.content_type == "application/cloudevents-batch+json"
        envelopes = orjson.loads(body.data)
        assert envelopes == [to_cloudevent(e) for e in events]
        for envelope in envelopes:
            CLOUDEVENT_VALIDATOR.validate(envelope)

    def test_same_batch_same_key(self) -> None:
        """The idempotency key depends on the batch's event ids only, and differs for another."""
        events = distinct_events(3)
        one = render_bodies("json", outbox(*events), portal_url=PORTAL)[0]
        again = render_bodies("cloudevents", outbox(*events, first_seq=9), portal_url=PORTAL)[0]
        other = render_bodies("json", outbox(*events[:2]), portal_url=PORTAL)[0]
        assert one.idempotency_key == again.idempotency_key != other.idempotency_key

    def test_empty_batch_has_no_bodies(self) -> None:
        """Nothing to send, for every format."""
        for fmt in FORMATS:
            assert render_bodies(fmt, [], portal_url=PORTAL) == []

    def test_a_non_job_event_gets_a_generic_envelope(self) -> None:
        """An event of another type (issue 13) still becomes a CloudEvent, not an error."""
        item = {
            "schema_version": 1,
            "event": "backup_item.missed",
            "event_id": "ab" * 16,
            "time": "2026-11-25T10:23:42.604Z",
            "vault": {"id": VAULT.id, "name": VAULT.name},
        }
        [body] = render_bodies("cloudevents", outbox(item), portal_url=PORTAL)
        [envelope] = orjson.loads(body.data)
        assert envelope["type"] == "backup_item.missed"
        assert envelope["source"] == VAULT.id
        assert envelope["id"] == "ab" * 16
        assert envelope["data"] == item


class TestSlack:
    """One incoming-webhook message per event, readable at a glance."""

    def test_failed_job_shows_what_a_person_needs(self) -> None:
        """Vault, entity, operation, outcome, error code and message, first recommendation,
        duration, job id and a portal link; Azure's `<>&` escaped."""
        event = job_event(status="Failed", errors=FAILED_ERRORS)
        [body] = render_bodies("slack", outbox(event), portal_url=PORTAL)
        assert body.content_type == "application/json"
        assert body.event_count == 1
        assert body.idempotency_key == event["event_id"]
        message = orjson.loads(body.data)
        text = "\n".join(slack_texts(message))
        for needed in (
            "v1",
            "vm-web-01",
            "Backup",
            "failed",
            "UserErrorVmNotFound",
            "The VM &lt;vm-web-01&gt; &amp; its disks were not found",
            "Check that the VM exists",
            "1h 02m 03s",
            JOB_GUID,
            "1 more error",
        ):
            assert needed in text, needed
        assert "Then retry" not in text  # only the first recommendation
        assert "<vm-web-01>" not in text
        assert ":x:" in message["text"]
        [button] = next(b for b in message["blocks"] if b["type"] == "actions")["elements"]
        assert button["url"] == f"{PORTAL}/#@/resource{VAULT.id}"

    def test_backup_vault_job_shows_its_datasource(self) -> None:
        """A Backup vault job's message names the datasource type, backup instance and policy;
        a Recovery Services job's has none of those facts."""
        [body] = render_bodies("slack", outbox(bv_event()), portal_url=PORTAL)
        message = orjson.loads(body.data)
        fields = next(b for b in message["blocks"] if "fields" in b)["fields"]
        texts = [f["text"] for f in fields]
        for needed in (
            "*Vault*\nbv1",
            "*Entity*\ndisk-data-01",
            "*Datasource type*\nMicrosoft.Compute/disks",
            "*Backup instance*\nrg-disks\\disk-data-01",
            "*Policy*\npolicy-disks-daily",
        ):
            assert needed in texts, needed
        assert len(fields) <= 10  # Slack's limit on a section's fields
        [button] = next(b for b in message["blocks"] if b["type"] == "actions")["elements"]
        assert button["url"] == f"{PORTAL}/#@/resource{BV_VAULT.id}"
        [rs] = render_bodies("slack", outbox(job_event(errors=FAILED_ERRORS)), portal_url=PORTAL)
        rs_text = "\n".join(slack_texts(orjson.loads(rs.data)))
        assert "Datasource" not in rs_text
        assert "Policy" not in rs_text

    def test_in_progress_is_a_short_line(self) -> None:
        """A running job renders as a heading and one context line, no error section."""
        [body] = render_bodies("slack", outbox(job_event(status="InProgress")), portal_url=PORTAL)
        message = orjson.loads(body.data)
        kinds = [b["type"] for b in message["blocks"]]
        assert kinds[:2] == ["section", "context"]
        assert "fields" not in message["blocks"][0]
        assert "InProgress" in message["text"]
        assert "vm-web-01" in message["text"]

    def test_one_body_per_event_in_order(self) -> None:
        """Three events make three bodies keyed by their event ids."""
        events = distinct_events(3)
        bodies = render_bodies("slack", outbox(*events), portal_url=PORTAL)
        assert [b.idempotency_key for b in bodies] == [e["event_id"] for e in events]
        assert [b.event_count for b in bodies] == [1, 1, 1]

    def test_non_job_event(self) -> None:
        """An event without a job renders from its type, vault and time."""
        item: dict[str, object] = {
            "event": "backup_item.missed",
            "event_id": "cd" * 16,
            "time": "T",
            "vault": {},
        }
        [body] = render_bodies("slack", outbox(item), portal_url=PORTAL)
        message = orjson.loads(body.data)
        assert "backup_item.missed" in message["text"]
        assert not any(b["type"] == "actions" for b in message["blocks"])


class TestTeams:
    """One Workflows-webhook message per event: an Adaptive Card 1.4 with facts and a link."""

    def test_failed_job_card(self) -> None:
        """The card has the facts, the error, the first recommendation and an OpenUrl action."""
        event = job_event(status="CompletedWithWarnings", errors=FAILED_ERRORS[:1])
        [body] = render_bodies("teams", outbox(event), portal_url="https://portal.azure.us/")
        card = card_of(orjson.loads(body.data))
        text = card_text(card)
        for needed in (
            "Vault: v1",
            "Entity: vm-web-01",
            "Operation: Backup",
            "Status: CompletedWithWarnings",
            "succeeded with warnings",
            "Error code: UserErrorVmNotFound",
            "The VM <vm-web-01> & its disks were not found",
            "Recommendation: Check that the VM exists",
            "Duration: 1h 02m 03s",
            f"Job id: {JOB_GUID}",
        ):
            assert needed in text, needed
        assert card["body"][0]["color"] == "Warning"
        [action] = card["actions"]
        assert action == {
            "type": "Action.OpenUrl",
            "title": "Open the vault in the Azure portal",
            "url": f"https://portal.azure.us/#@/resource{VAULT.id}",
        }

    def test_backup_vault_job_card(self) -> None:
        """A Backup vault job's card has its datasource facts; a running one keeps the four
        first facts (vault, entity, operation, status)."""
        [body] = render_bodies("teams", outbox(bv_event()), portal_url=PORTAL)
        text = card_text(card_of(orjson.loads(body.data)))
        for needed in (
            "Entity: disk-data-01",
            "Datasource type: Microsoft.Compute/disks",
            "Backup instance: rg-disks\\disk-data-01",
            "Policy: policy-disks-daily",
        ):
            assert needed in text, needed
        [running] = render_bodies("teams", outbox(bv_event("InProgress")), portal_url=PORTAL)
        facts = card_of(orjson.loads(running.data))["body"][1]["facts"]
        assert [f["title"] for f in facts] == ["Vault", "Entity", "Operation", "Status"]

    def test_in_progress_card(self) -> None:
        """A running job is a short card: title and the first facts."""
        [body] = render_bodies("teams", outbox(job_event(status="InProgress")), portal_url=PORTAL)
        card = card_of(orjson.loads(body.data))
        assert "InProgress" in card["body"][0]["text"]
        assert len(card["body"][1]["facts"]) == 4


def test_portal_link_form() -> None:
    """The portal's resource deep link, with the default directory."""
    assert portal_link("https://portal.azure.com/", "/subscriptions/s/x") == (
        "https://portal.azure.com/#@/resource/subscriptions/s/x"
    )


# --------------------------------------------------------------------------------------------
# Properties over any strings

HUGE = "<&>" * 70_000  # 210 KB of the characters that need escaping
any_text = st.text(max_size=40) | st.sampled_from(
    ["", HUGE, "\x00\x1b[31m\u2028<b>&amp;", "é" * 9000]
)
PROVIDER = "Microsoft.RecoveryServices"
safe_names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,15}", fullmatch=True)


@st.composite
def hostile_events(draw: st.DrawFn) -> dict[str, object]:
    """A valid event whose Azure-given strings are anything: control characters, markup, 200 KB."""
    name = draw(safe_names | st.just("v" * 200_000))
    vault_id = f"/subscriptions/{p.SUB}/resourceGroups/rg/providers/{PROVIDER}/vaults/{name}"
    vault = VaultRef(
        id=vault_id,
        key=vault_id.lower(),
        subscription_id=p.SUB,
        resource_group="rg",
        name=name,
        location=draw(st.none() | any_text),
    )
    errors = draw(
        st.none()
        | st.lists(
            st.builds(
                JobError,
                code=st.none() | any_text,
                message=st.none() | any_text,
                title=st.none(),
                recommendations=st.lists(any_text, max_size=2).map(tuple),
            ),
            max_size=3,
        )
    )
    return job_event(
        status=draw(st.sampled_from(["InProgress", "Completed", "Failed", "Cancelled", "Odd"])),
        vault=vault,
        entity=draw(st.none() | any_text),
        operation=draw(any_text),
        errors=errors,
        duration=draw(st.sampled_from([None, "PT1S", "P3DT1H"])),
    )


def check_body(fmt: WebhookFormat, body: Body) -> Any:
    """The parsed body, after the caps of its format."""
    assert body.content_type == CONTENT_TYPES[fmt]
    parsed = orjson.loads(body.data)
    if fmt == "slack":
        assert len(body.data) <= SLACK_MAX_BYTES
        assert sum(len(t) for t in slack_texts(parsed)) < 40_000
        for block in parsed["blocks"]:
            if "text" in block:
                assert len(block["text"]["text"]) <= SLACK_SECTION_CHARS
            assert len(block.get("fields", [])) <= 10
            assert all(len(f["text"]) <= 2000 for f in block.get("fields", []))
        for text in slack_texts(parsed):
            bare = text.replace("&amp;", "").replace("&lt;", "").replace("&gt;", "")
            assert "<" not in bare
            assert ">" not in bare
            assert "&" not in bare
    if fmt == "teams":
        assert len(body.data) <= TEAMS_MAX_BYTES
        card_of(parsed)
    return parsed


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(hostile_events(), min_size=1, max_size=4), fmt=st.sampled_from(FORMATS))
def test_any_strings_make_valid_bodies(events: list[dict[str, object]], fmt: WebhookFormat) -> None:
    """Bodies are JSON within their caps, cover the batch in order, and json/cloudevents
    round-trip the events."""
    batch = outbox(*events)
    bodies = render_bodies(fmt, batch, portal_url=PORTAL)
    assert sum(b.event_count for b in bodies) == len(batch)
    parsed = [check_body(fmt, b) for b in bodies]
    if fmt == "json":
        assert parsed == [events]
    elif fmt == "cloudevents":
        assert [[env["data"] for env in parsed[0]]] == [events]
        for envelope in parsed[0]:
            CLOUDEVENT_VALIDATOR.validate(envelope)
    else:
        assert [b.idempotency_key for b in bodies] == [e["event_id"] for e in events]


@pytest.mark.parametrize("fmt", ["slack", "teams"])
def test_every_chat_message_names_its_event(fmt: WebhookFormat) -> None:
    """Each status renders, and the entity appears in its message."""
    for status in ("InProgress", "Cancelling", "Completed", "Failed", "Cancelled", "Odd"):
        [body] = render_bodies(
            fmt,
            outbox(job_event(status=status, entity="db-07")),
            portal_url=PORTAL,
        )
        assert b"db-07" in body.data, status


# --------------------------------------------------------------------------------------------
# Item events and long-running jobs


def item_events(
    *, name: str | None = "vm-web-01", state: str | None = "ProtectionStopped"
) -> dict[str, dict[str, object]]:
    """One valid event of each new type, of an item whose friendly name is `name`."""
    item = replace(ie.make_item(), friendly_name=name)
    point = datetime(2026, 3, 28, 20, 10, tzinfo=UTC)
    changes: dict[str, Any] = {
        "missed": replace(ie.missed(), item=item),
        "breached": RpoBreached(
            item=item,
            last_recovery_point=point,
            allowed_s=90_000.0,
            breached_at=point + timedelta(seconds=90_000),
        ),
        "restored": RpoRestored(item=item, last_recovery_point=point, allowed_s=90_000.0),
        "protection": ProtectionChanged(
            item=replace(item, protection_state=state),
            previous_state="Protected",
            previous_health="Passed",
            seq=2,
        ),
        "long_running": replace(
            ie.long_running(reason="median"),
            item=item,
            job=replace(ie.running_job(), entity=name),
        ),
    }
    events = {
        key: render_change(change, vault=ie.VAULT, emitted_at=ie.EMITTED_AT)
        for key, change in changes.items()
    }
    for event in events.values():
        validate(event)
    return events


TITLES = {
    "missed": ":x: *Backup missed: vm-web-01 (the backup run due 2026-03-29T20:00:00.000Z)*",
    "breached": ":x: *Recovery point too old: vm-web-01*",
    "restored": ":white_check_mark: *Recovery point fresh again: vm-web-01*",
    "protection": ":x: *Protection stopped: vm-web-01 (Protected → ProtectionStopped)*",
    "long_running": ":warning: *Backup running for 25h 05m 06s: vm-web-01*",
}


class TestItemMessages:
    """Slack and Teams messages of the item events and long-running jobs."""

    @pytest.mark.parametrize("which", sorted(TITLES))
    def test_slack_title_and_facts(self, which: str) -> None:
        """Each type has its own title, icon and facts, and links to the vault."""
        event = item_events()[which]
        [body] = render_bodies("slack", outbox(event), portal_url=PORTAL)
        message = check_body("slack", body)
        assert message["blocks"][0]["text"]["text"] == TITLES[which]
        fields = [f["text"] for f in message["blocks"][1]["fields"]]
        assert fields[0] == "*Vault*\nv1"
        texts = "\n".join(slack_texts(message))
        assert "Open the vault in the Azure portal" in texts
        wanted = {
            "missed": ["*Run due*\n2026-03-29T20:00:00.000Z", f"*Time zone*\n{ie.ZONE}"],
            "breached": ["*Age*\n24h 55m 07s", "*Allowed*\n25h 00m 00s"],
            "restored": ["*Last recovery point*\n2026-03-28T20:10:00.000Z"],
            "protection": ["*State*\nProtectionStopped", "*Previous state*\nProtected"],
            "long_running": ["*Threshold*\n24h 00m 00s (7 recent jobs' median 50m 00s)"],
        }[which]
        for fact in wanted:
            assert fact in fields

    @pytest.mark.parametrize("which", sorted(TITLES))
    def test_teams_card(self, which: str) -> None:
        """The card's title is the Slack title's text, coloured by what it reports."""
        event = item_events()[which]
        [body] = render_bodies("teams", outbox(event), portal_url=PORTAL)
        card = card_of(check_body("teams", body))
        title = card["body"][0]
        assert title["text"] == TITLES[which].split(" ", 1)[1].strip("*")
        colour = {"restored": "Good", "long_running": "Warning"}.get(which, "Attention")
        assert title["color"] == colour
        assert "Vault: v1" in card_text(card)
        assert card["actions"][0]["url"].startswith(PORTAL)

    def test_protection_back_is_good_news(self) -> None:
        """Protected again: a check mark; a state and health both unknown: information."""
        back = item_events(state="Protected")["protection"]
        [body] = render_bodies("slack", outbox(back), portal_url=PORTAL)
        assert orjson.loads(body.data)["text"].startswith(":white_check_mark: Protection back")
        unknown = orjson.loads(orjson.dumps(back))
        unknown["protection"]["state"] = unknown["protection"]["health"] = None
        [body] = render_bodies("teams", outbox(unknown), portal_url=PORTAL)
        assert card_of(orjson.loads(body.data))["body"][0]["color"] == "Default"

    def test_an_item_event_without_its_shape_is_generic(self) -> None:
        """An item event missing the object its message shows renders the generic message."""
        event = dict(item_events()["missed"])
        del event["expected_run"]
        [body] = render_bodies("slack", outbox(event), portal_url=PORTAL)
        assert "backup_item.backup_missed" in orjson.loads(body.data)["text"]

    def test_cloudevents_of_item_events(self) -> None:
        """A batch of the new types as CloudEvents: each envelope valid, subject the item's or
        the job's id."""
        events = list(item_events().values())
        [body] = render_bodies("cloudevents", outbox(*events), portal_url=PORTAL)
        envelopes = orjson.loads(body.data)
        for envelope in envelopes:
            CLOUDEVENT_VALIDATOR.validate(envelope)
        assert [e["subject"] for e in envelopes] == [ie.ITEM_ID] * 4 + [ie.running_job().name]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.none() | any_text, state=st.none() | any_text, fmt=st.sampled_from(FORMATS))
def test_item_events_with_any_strings_make_valid_bodies(
    name: str | None, state: str | None, fmt: WebhookFormat
) -> None:
    """Whatever the item's name and state: bodies within their caps, escaped, one per event."""
    events = list(item_events(name=name or None, state=state or None).values())
    bodies = render_bodies(fmt, outbox(*events), portal_url=PORTAL)
    assert sum(b.event_count for b in bodies) == len(events)
    for body in bodies:
        check_body(fmt, body)
