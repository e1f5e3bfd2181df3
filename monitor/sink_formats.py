"""The request bodies of the webhook sink: a batch of outbox events in one of its four formats."""

# Rules:
# - Pure: nothing here awaits, logs or reads the clock. `render_bodies` is total over any event
#   the outbox holds: each type of ours has its own message (`_FACTS_OF`); an event of a type
#   we do not know, or one missing the fields its message shows, renders a generic message
#   instead of raising.
# - `json` and `cloudevents` carry the whole batch in one body; `slack` and `teams` carry one
#   event per body (a chat message per job), so a failure part-way reports how far it got.
# - Every value that came from Azure is escaped for the chat format that shows it (Slack
#   mrkdwn: `&`, `<`, `>`), stripped of control characters, and cut to the destination's
#   limits; a body never exceeds the format's byte cap, whatever the strings in the event.

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from monitor.config_sinks import WebhookFormat
from monitor.events import (
    BACKUP_MISSED_EVENT_TYPE,
    LONG_RUNNING_EVENT_TYPE,
    PROTECTION_CHANGED_EVENT_TYPE,
    RPO_BREACHED_EVENT_TYPE,
    RPO_RESTORED_EVENT_TYPE,
    protection_verdict,
    to_cloudevent,
)
from monitor.outbox import OutboxEvent

__all__ = [
    "CONTENT_TYPES",
    "SLACK_MAX_BYTES",
    "SLACK_SECTION_CHARS",
    "TEAMS_MAX_BYTES",
    "Body",
    "portal_link",
    "render_bodies",
]

CONTENT_TYPES: Final[Mapping[WebhookFormat, str]] = {
    "json": "application/json",
    "cloudevents": "application/cloudevents-batch+json",
    "slack": "application/json",
    "teams": "application/json",
}
"""The `Content-Type` of each format's bodies."""

SLACK_SECTION_CHARS: Final = 3000
"""Slack's limit on the text of a section block (and we keep the `text` fallback under it)."""
SLACK_FIELD_CHARS: Final = 2000
"""Slack's limit on one field of a section block."""
SLACK_MAX_BYTES: Final = 32 * 1024
"""Most bytes of one Slack message body (Slack truncates a message past 40,000 characters)."""
TEAMS_MAX_BYTES: Final = 24 * 1024
"""Most bytes of one Teams message body (Teams refuses a message over about 28 KB)."""

_ELLIPSIS: Final = "…"
_CONTROL: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_OUTCOME_WORDS: Final[Mapping[str, str]] = {
    "succeeded": "succeeded",
    "succeeded_with_warnings": "succeeded with warnings",
    "failed": "failed",
    "cancelled": "was cancelled",
}
_SLACK_ICONS: Final[Mapping[str, str]] = {
    "succeeded": ":white_check_mark:",
    "succeeded_with_warnings": ":warning:",
    "failed": ":x:",
    "cancelled": ":no_entry_sign:",
}
_TEAMS_COLORS: Final[Mapping[str, str]] = {
    "succeeded": "Good",
    "succeeded_with_warnings": "Warning",
    "failed": "Attention",
    "cancelled": "Warning",
}
# Per-value character budgets of a chat message, as a fraction of which the renderers start;
# a body still over its byte cap is rendered again with every budget halved.
_VALUE_CHARS: Final = 300
_MESSAGE_CHARS: Final = 1500
_MAX_LINK_CHARS: Final = 2000  # a vault id longer than this gets no link (Slack: 3000)


@dataclass(frozen=True, slots=True, kw_only=True)
class Body:
    """One request body of a delivery.

    Attributes:
        data: the bytes to POST.
        content_type: its `Content-Type`.
        event_count: how many events of the batch it carries; the bodies of a batch carry them
            in order, and their counts sum to the batch's length.
        idempotency_key: the same for every retry of these events (the `Idempotency-Key`
            header): the event_id of a chat message's event, else the sha256 hex of the
            batch's event_ids joined by newlines.
    """

    data: bytes
    content_type: str
    event_count: int
    idempotency_key: str


def render_bodies(
    fmt: WebhookFormat, batch: Sequence[OutboxEvent], *, portal_url: str
) -> list[Body]:
    """The bodies that deliver `batch` in format `fmt`, in the order to POST them.

    `portal_url` is the base of the links to a vault (slack and teams). An empty batch has no
    bodies.
    """
    if not batch:
        return []
    if fmt == "json" or fmt == "cloudevents":
        key = hashlib.sha256("\n".join(e.event_id for e in batch).encode()).hexdigest()
        if fmt == "json":
            # The committed lines are the events' JSON already: no decode, no re-encode.
            data = b"[" + b",".join(e.line.rstrip(b"\n") for e in batch) + b"]"
        else:
            data = orjson.dumps([_cloudevent(e.event) for e in batch])
        return [
            Body(
                data=data,
                content_type=CONTENT_TYPES[fmt],
                event_count=len(batch),
                idempotency_key=key,
            )
        ]
    render = _slack_message if fmt == "slack" else _teams_message
    cap = SLACK_MAX_BYTES if fmt == "slack" else TEAMS_MAX_BYTES
    return [
        Body(
            data=_capped(render, e.event, portal_url, cap),
            content_type=CONTENT_TYPES[fmt],
            event_count=1,
            idempotency_key=e.event_id,
        )
        for e in batch
    ]


def portal_link(portal_url: str, resource_id: str) -> str:
    """The Azure portal's page of a resource: `{portal}/#@/resource{id}` (the signed-in user's
    default directory; the form `az`/`azd` print)."""
    return f"{portal_url.rstrip('/')}/#@/resource{resource_id}"


# --------------------------------------------------------------------------------------------
# CloudEvents


def _cloudevent(event: Mapping[str, Any]) -> dict[str, object]:
    """`to_cloudevent`, or a generic envelope for an event that is not a job's."""
    try:
        return to_cloudevent(event)
    except (ValueError, KeyError):
        vault = event.get("vault")
        source = vault.get("id") if isinstance(vault, Mapping) else None
        envelope: dict[str, object] = {
            "specversion": "1.0",
            "id": str(event.get("event_id") or ""),
            "source": str(source or "urn:backup-job-monitor"),
            "type": str(event.get("event") or "unknown"),
        }
        if isinstance(event.get("time"), str):
            envelope["time"] = event["time"]
        envelope["datacontenttype"] = "application/json"
        envelope["data"] = event
        return envelope


# --------------------------------------------------------------------------------------------
# What a chat message says, whatever the format


@dataclass(frozen=True, slots=True, kw_only=True)
class _Facts:
    """The fields of an event a person reads, as plain text (not yet escaped or cut).

    `outcome` is a job's (`job.outcome`), or for other events the one whose icon and colour fit:
    `failed` for a problem, `succeeded` for its end, `succeeded_with_warnings` for a warning;
    None for a message that only informs.
    """

    title: str
    outcome: str | None
    is_job: bool
    facts: tuple[tuple[str, str], ...]
    error_message: str | None
    recommendation: str | None
    more_errors: int
    vault_id: str | None
    time: str | None


def _text(value: object) -> str | None:
    if value is None or value == "":
        return None
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return _CONTROL.sub(" ", text)


def _duration(value: object) -> str | None:
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        return None
    seconds = int(value)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{value:.1f}s" if value < 10 else f"{secs}s"


def _facts_of(event: Mapping[str, Any]) -> _Facts:
    facts_of = _FACTS_OF.get(str(event.get("event")))
    if facts_of is not None:
        try:
            return facts_of(event)
        except (KeyError, TypeError, AttributeError):
            pass  # not the shape of its type: the generic message below
    return _job_facts_of(event)


def _job_facts_of(event: Mapping[str, Any]) -> _Facts:
    vault = event.get("vault")
    vault = vault if isinstance(vault, Mapping) else {}
    job = event.get("job")
    vault_id = _text(vault.get("id"))
    vault_name = _text(vault.get("name")) or vault_id
    time = _text(event.get("time"))
    if not isinstance(job, Mapping):
        kind = _text(event.get("event")) or "event"
        facts = [("Event", kind)]
        if vault_name:
            facts.append(("Vault", vault_name))
        if time:
            facts.append(("Time", time))
        title = f"{kind} in vault {vault_name}" if vault_name else kind
        return _Facts(
            title=title,
            outcome=None,
            is_job=False,
            facts=tuple(facts),
            error_message=None,
            recommendation=None,
            more_errors=0,
            vault_id=vault_id,
            time=time,
        )
    operation = _text(job.get("operation")) or _text(job.get("type")) or "Job"
    entity = _text(job.get("entity"))
    status = _text(job.get("status")) or "unknown"
    raw_outcome = job.get("outcome")
    outcome = raw_outcome if isinstance(raw_outcome, str) and raw_outcome else None
    if outcome is not None:
        word = _OUTCOME_WORDS.get(outcome, _text(outcome) or "")
        title = f"{operation} {word}"
    else:
        title = f"{operation} {status}"
    if entity:
        title += f": {entity}"
    errors = job.get("errors")
    first = errors[0] if isinstance(errors, list) and errors else None
    first = first if isinstance(first, Mapping) else {}
    recommendations = first.get("recommendations")
    recommendation = (
        _text(recommendations[0]) if isinstance(recommendations, list) and recommendations else None
    )
    facts = [
        ("Vault", vault_name or "unknown"),
        ("Entity", entity or "unknown"),
        ("Operation", operation),
        ("Status", status),
    ]
    # Backup vault jobs: what the entity is, its backup instance and policy (after the four
    # facts a short card shows; None for Recovery Services jobs and in older events).
    datasource_type = _text(job.get("datasource_type"))
    if datasource_type:
        facts.append(("Datasource type", datasource_type))
    backup_instance = _text(job.get("backup_instance"))
    if backup_instance and backup_instance != entity:
        facts.append(("Backup instance", backup_instance))
    policy = _text(job.get("policy_name"))
    if policy:
        facts.append(("Policy", policy))
    code = _text(first.get("code"))
    if code:
        facts.append(("Error code", code))
    duration = _duration(job.get("duration_s"))
    if duration:
        facts.append(("Duration", duration))
    job_id = _text(job.get("id"))
    if job_id:
        facts.append(("Job id", job_id))
    return _Facts(
        title=title,
        outcome=outcome,
        is_job=True,
        facts=tuple(facts),
        error_message=_text(first.get("message")),
        recommendation=recommendation,
        more_errors=max(0, len(errors) - 1) if isinstance(errors, list) else 0,
        vault_id=vault_id,
        time=time,
    )


def _item_facts(
    event: Mapping[str, Any],
    *,
    title: str,
    outcome: str | None,
    facts: list[tuple[str, str | None]],
) -> _Facts:
    """The facts of an item event: the vault and the item first, then `facts` (unknown values
    left out)."""
    vault: Mapping[str, Any] = event["vault"]
    item: Mapping[str, Any] = event["item"]
    vault_id = _text(vault.get("id"))
    shown: list[tuple[str, str | None]] = [
        ("Vault", _text(vault.get("name")) or vault_id or "unknown"),
        ("Item", _item_name(item) or "unknown"),
        *facts,
        ("Datasource type", _text(item.get("datasource_type"))),
        ("Policy", _text(item.get("policy_name"))),
        ("Item id", _text(item.get("id"))),
    ]
    return _Facts(
        title=title,
        outcome=outcome,
        is_job=True,
        facts=tuple((name, value) for name, value in shown if value),
        error_message=None,
        recommendation=None,
        more_errors=0,
        vault_id=vault_id,
        time=_text(event.get("time")),
    )


def _item_name(item: Mapping[str, Any]) -> str | None:
    return _text(item.get("friendly_name")) or _text(item.get("name"))


def _missed_facts(event: Mapping[str, Any]) -> _Facts:
    run: Mapping[str, Any] = event["expected_run"]
    name = _item_name(event["item"]) or "an item"
    kind = _text(run.get("kind")) or "scheduled"
    return _item_facts(
        event,
        title=f"Backup missed: {name} (the {kind} run due {_text(run.get('due_time'))})",
        outcome="failed",
        facts=[
            ("Run due", _text(run.get("due_time"))),
            ("Deadline", _text(run.get("deadline"))),
            ("Run kind", kind),
            ("Time zone", _text(run.get("time_zone"))),
        ],
    )


def _rpo_facts(event: Mapping[str, Any]) -> _Facts:
    rpo: Mapping[str, Any] = event["rpo"]
    name = _item_name(event["item"]) or "an item"
    restored = event.get("event") == RPO_RESTORED_EVENT_TYPE
    title = f"Recovery point fresh again: {name}" if restored else f"Recovery point too old: {name}"
    return _item_facts(
        event,
        title=title,
        outcome="succeeded" if restored else "failed",
        facts=[
            ("Last recovery point", _text(rpo.get("last_recovery_point"))),
            ("Age", _duration(rpo.get("age_s"))),
            ("Allowed", _duration(rpo.get("allowed_s"))),
            ("Breached at", _text(rpo.get("breached_at"))),
        ],
    )


def _protection_facts(event: Mapping[str, Any]) -> _Facts:
    protection: Mapping[str, Any] = event["protection"]
    name = _item_name(event["item"]) or "an item"
    stopped, error = protection_verdict(protection.get("state"), protection.get("health"))
    if stopped or error:
        outcome: str | None = "failed"
        word = "stopped" if stopped else "error"
    elif stopped is False or error is False:
        outcome, word = "succeeded", "back"
    else:
        outcome, word = None, "changed"
    was = _text(protection.get("previous_state")) or "unknown"
    now = _text(protection.get("state")) or "unknown"
    return _item_facts(
        event,
        title=f"Protection {word}: {name} ({was} → {now})",
        outcome=outcome,
        facts=[
            ("State", _text(protection.get("state"))),
            ("Previous state", _text(protection.get("previous_state"))),
            ("Health", _text(protection.get("health"))),
            ("Previous health", _text(protection.get("previous_health"))),
        ],
    )


def _long_running_facts(event: Mapping[str, Any]) -> _Facts:
    job: Mapping[str, Any] = event["job"]
    vault: Mapping[str, Any] = event["vault"]
    why: Mapping[str, Any] = event["long_running"]
    operation = _text(job.get("operation")) or _text(job.get("type")) or "Job"
    entity = _text(job.get("entity"))
    elapsed = _duration(why.get("elapsed_s")) or "long"
    title = f"{operation} running for {elapsed}" + (f": {entity}" if entity else "")
    reason = _text(why.get("reason"))
    threshold = _duration(why.get("threshold_s"))
    if threshold and reason == "median":
        median = _duration(why.get("median_s"))
        threshold += f" ({_text(why.get('samples'))} recent jobs' median {median})"
    vault_id = _text(vault.get("id"))
    facts = [
        ("Vault", _text(vault.get("name")) or vault_id or "unknown"),
        ("Entity", entity or "unknown"),
        ("Operation", operation),
        ("Status", _text(job.get("status")) or "unknown"),
        ("Started", _text(job.get("start_time"))),
        ("Running for", elapsed),
        ("Threshold", threshold),
        ("Job id", _text(job.get("id"))),
    ]
    return _Facts(
        title=title,
        outcome="succeeded_with_warnings",
        is_job=True,
        facts=tuple((name, value) for name, value in facts if value),
        error_message=None,
        recommendation=None,
        more_errors=0,
        vault_id=vault_id,
        time=_text(event.get("time")),
    )


_FACTS_OF: Final[Mapping[str, Callable[[Mapping[str, Any]], _Facts]]] = {
    BACKUP_MISSED_EVENT_TYPE: _missed_facts,
    RPO_BREACHED_EVENT_TYPE: _rpo_facts,
    RPO_RESTORED_EVENT_TYPE: _rpo_facts,
    PROTECTION_CHANGED_EVENT_TYPE: _protection_facts,
    LONG_RUNNING_EVENT_TYPE: _long_running_facts,
}
"""The message of each event type but a job's state change (`_job_facts_of`)."""


def _cut(text: str, limit: int, escape: Callable[[str], str] = str) -> str:
    """`escape(text)`, cut to at most `limit` characters (an ellipsis marks the cut) without
    splitting an escape sequence."""
    escaped = escape(text)
    if len(escaped) <= limit:
        return escaped
    out: list[str] = []
    used = len(_ELLIPSIS)
    for char in text:
        piece = escape(char)
        if used + len(piece) > limit:
            break
        out.append(piece)
        used += len(piece)
    return "".join(out) + _ELLIPSIS


def _capped(
    render: Callable[[Mapping[str, Any], str, int], dict[str, object]],
    event: Mapping[str, Any],
    portal_url: str,
    cap: int,
) -> bytes:
    """`render` with a per-value budget, halved until the body fits in `cap` bytes."""
    budget = _VALUE_CHARS
    while True:
        data = orjson.dumps(render(event, portal_url, budget))
        if len(data) <= cap or budget <= 8:
            return data
        budget //= 2


# --------------------------------------------------------------------------------------------
# Slack: an incoming-webhook message (`text` fallback plus Block Kit `blocks`)


def _mrkdwn(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_message(event: Mapping[str, Any], portal_url: str, budget: int) -> dict[str, object]:
    facts = _facts_of(event)
    message_budget = budget * _MESSAGE_CHARS // _VALUE_CHARS
    icon = _SLACK_ICONS.get(
        facts.outcome or "", ":hourglass_flowing_sand:" if facts.is_job else ":information_source:"
    )
    title = _cut(facts.title, budget * 2, _mrkdwn)
    vault = dict(facts.facts).get("Vault")
    in_vault = f" in vault {_cut(vault, budget, _mrkdwn)}" if vault and facts.is_job else ""
    text = f"{icon} {title}{in_vault}"
    if facts.error_message:
        text += f": {_cut(facts.error_message, budget, _mrkdwn)}"
    link = None if facts.vault_id is None else portal_link(portal_url, facts.vault_id)
    if link is not None and len(link) > _MAX_LINK_CHARS:
        link = None
    blocks: list[dict[str, object]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} *{title}*"}},
    ]
    if facts.is_job and (facts.outcome is not None or facts.error_message):
        blocks.append(
            {
                "type": "section",
                "fields": [
                    {
                        "type": "mrkdwn",
                        "text": f"*{name}*\n{_cut(value, budget, _mrkdwn)}",
                    }
                    for name, value in facts.facts[:10]
                ],
            }
        )
        details: list[str] = []
        if facts.error_message:
            details.append(f"*Error:* {_cut(facts.error_message, message_budget, _mrkdwn)}")
            if facts.more_errors:
                details.append(f"_(and {facts.more_errors} more error(s))_")
        if facts.recommendation:
            recommendation = _cut(facts.recommendation, message_budget * 2 // 3, _mrkdwn)
            details.append(f"*Recommendation:* {recommendation}")
        if details:
            # At most 1500 + 1000 characters and the labels: under SLACK_SECTION_CHARS.
            blocks.append(
                {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(details)}}
            )
    else:
        # In progress, or an event that is not a job's: one short line of context.
        context = " · ".join(
            f"{name}: {_cut(value, min(budget, 250), _mrkdwn)}"
            for name, value in facts.facts
            if name != "Operation"
        )
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    if link is not None:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {
                            "type": "plain_text",
                            "text": "Open the vault in the Azure portal",
                        },
                        "url": link,
                    }
                ],
            }
        )
    if facts.time:
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"backup-job-monitor · {_cut(facts.time, 64, _mrkdwn)}",
                    }
                ],
            }
        )
    return {"text": text, "blocks": blocks}


# --------------------------------------------------------------------------------------------
# Teams: an Adaptive Card for a Workflows webhook ("Post to a channel when a webhook request
# is received")


def _teams_message(event: Mapping[str, Any], portal_url: str, budget: int) -> dict[str, object]:
    facts = _facts_of(event)
    message_budget = budget * _MESSAGE_CHARS // _VALUE_CHARS
    body: list[dict[str, object]] = [
        {
            "type": "TextBlock",
            "text": _cut(facts.title, budget * 2),
            "weight": "Bolder",
            "size": "Medium" if facts.outcome is not None else "Default",
            "color": _TEAMS_COLORS.get(facts.outcome or "", "Default"),
            "wrap": True,
        }
    ]
    shown = facts.facts if facts.outcome is not None or facts.error_message else facts.facts[:4]
    body.append(
        {
            "type": "FactSet",
            "facts": [{"title": name, "value": _cut(value, budget)} for name, value in shown],
        }
    )
    if facts.error_message:
        more = f" (and {facts.more_errors} more)" if facts.more_errors else ""
        body.append(
            {
                "type": "TextBlock",
                "text": f"Error{more}: " + _cut(facts.error_message, message_budget),
                "wrap": True,
            }
        )
    if facts.recommendation:
        body.append(
            {
                "type": "TextBlock",
                "text": "Recommendation: " + _cut(facts.recommendation, message_budget),
                "wrap": True,
                "isSubtle": True,
            }
        )
    if facts.time:
        body.append(
            {
                "type": "TextBlock",
                "text": f"backup-job-monitor · {_cut(facts.time, 64)}",
                "isSubtle": True,
                "size": "Small",
                "wrap": True,
            }
        )
    card: dict[str, object] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
        "msteams": {"width": "Full"},
    }
    link = None if facts.vault_id is None else portal_link(portal_url, facts.vault_id)
    if link is not None and len(link) <= _MAX_LINK_CHARS:
        card["actions"] = [
            {"type": "Action.OpenUrl", "title": "Open the vault in the Azure portal", "url": link}
        ]
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
        ],
    }
