"""The item events of schema v1 (`backup_item.*`, `backup_job.long_running`): rendering, the
shipped schema, CloudEvents and read-back."""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.core.item_watch import (
    BackupMissed,
    LongRunning,
    ProtectionChanged,
    RpoBreached,
    RpoRestored,
)
from monitor.core.jobs import BackupJob, JobKey, JobStatus
from monitor.core.protection import BackupPolicy, ProtectedItem
from monitor.core.schedule import (
    ExpectedRun,
    RunKind,
    Schedule,
    SubSchedule,
    TimesOfDay,
    windows_zone,
)
from monitor.core.vaults import VaultKind, VaultRef, parse_vault_id
from monitor.events import (
    EVENT_TYPE,
    EVENT_TYPES,
    ITEM_EVENT_TYPES,
    LONG_RUNNING_EVENT_TYPE,
    EmittedEvent,
    decode_events,
    encode_events,
    render_change,
    render_item_event,
    render_long_running,
    to_cloudevent,
)
from tests.core import payloads as p
from tests.fakes import rendered_job_event
from tests.test_sinks import CLOUDEVENT_VALIDATOR, EVENT_VALIDATOR, TENANT, validate

VAULT = dataclasses.replace(parse_vault_id(p.VAULT_ID, location="westeurope"), tenant_id=TENANT)
BV_VAULT = parse_vault_id(
    f"/subscriptions/{p.SUB}/resourceGroups/rg-backup/providers/Microsoft.DataProtection/"
    "backupVaults/bv1",
    location="westeurope",
)
CONTAINER = "IaasVMContainer;iaasvmcontainerv2;rg-app;vm-web-01"
ITEM_NAME = "VM;iaasvmcontainerv2;rg-app;vm-web-01"
ITEM_ID = (
    f"{p.VAULT_ID}/backupFabrics/Azure/protectionContainers/{CONTAINER}/protectedItems/{ITEM_NAME}"
)
POLICY_ID = f"{p.VAULT_ID}/backupPolicies/daily-2200"
ZONE = "W. Europe Standard Time"
EMITTED_AT = datetime(2026, 3, 29, 21, 5, 7, 123_999, tzinfo=UTC)
ITEM_KEYS = [
    "id",
    "name",
    "friendly_name",
    "datasource_type",
    "datasource_id",
    "backup_management_type",
    "policy_id",
    "policy_name",
    "protection_state",
    "health_status",
    "last_backup_time",
    "last_recovery_point",
]


def make_item(
    vault: VaultRef = VAULT,
    *,
    item_id: str = ITEM_ID,
    state: str | None = "Protected",
    health: str | None = "Passed",
    last_recovery_point: datetime | None = datetime(2026, 3, 28, 20, 10, tzinfo=UTC),
    policy: bool = True,
) -> ProtectedItem:
    """A protected item of `vault` (a Recovery Services VM unless told otherwise)."""
    return ProtectedItem(
        id=item_id,
        vault_key=vault.key,
        kind=vault.kind,
        name=item_id.rsplit("/", 1)[-1],
        friendly_name="vm-web-01",
        datasource_type="VM"
        if vault.kind is VaultKind.RECOVERY_SERVICES
        else "Microsoft.Compute/disks",
        datasource_id=f"/subscriptions/{p.SUB}/resourceGroups/rg-app/providers/"
        "Microsoft.Compute/virtualMachines/vm-web-01",
        backup_management_type="AzureIaasVM" if vault.kind is VaultKind.RECOVERY_SERVICES else None,
        policy_id=POLICY_ID if policy else None,
        policy_name="daily-2200" if policy else None,
        protection_state=state,
        health_status=health,
        last_backup_time=last_recovery_point,
        last_recovery_point=last_recovery_point,
    )


def make_policy(*, schedule: bool = True) -> BackupPolicy:
    """A daily 22:00 policy in a Windows zone (or one without a schedule)."""
    return BackupPolicy(
        id=POLICY_ID,
        vault_key=VAULT.key,
        name="daily-2200",
        schedule=(
            Schedule(
                time_zone=ZONE,
                zone=windows_zone(ZONE),
                parts=(SubSchedule(kind=RunKind.BACKUP, cadence=TimesOfDay(times=(time(22),))),),
            )
            if schedule
            else None
        ),
        problem=None if schedule else "no schedule",
    )


def missed(
    *, at: datetime = datetime(2026, 3, 29, 20, 0, tzinfo=UTC), grace_s: float = 3600.0
) -> BackupMissed:
    """The 22:00 (CEST: 20:00 UTC) run of 29 March, missed."""
    return BackupMissed(
        item=make_item(),
        policy=make_policy(),
        run=ExpectedRun(at=at, kind=RunKind.BACKUP),
        deadline=at + timedelta(seconds=grace_s),
    )


def running_job(vault: VaultRef = VAULT, *, start: datetime | None = None) -> BackupJob:
    """A job of the item, still running."""
    name = str(uuid.UUID(int=7))
    return BackupJob(
        key=JobKey(vault_key=vault.key, job_name=name),
        name=name,
        resource_id=f"{vault.id}/backupJobs/{name}",
        job_type="AzureIaaSVMJob",
        operation="Backup",
        backup_management_type="AzureIaasVM",
        entity="vm-web-01",
        status=JobStatus.IN_PROGRESS,
        start_at=start or datetime(2026, 3, 28, 20, 0, 1, tzinfo=UTC),
        end_at=None,
        duration_raw="PT25H5M",
        actions=(),
        activity_id=None,
        properties={},
    )


def long_running(*, item: bool = True, reason: str = "absolute") -> LongRunning:
    """The running job, past a day."""
    return LongRunning(
        job=running_job(),
        item=make_item() if item else None,
        vault_key=VAULT.key,
        elapsed_s=90_306.1234,
        threshold_s=86_400.0,
        reason=reason,
        median_s=3_000.0 if reason == "median" else None,
        samples=7 if reason == "median" else 2,
    )


def rendered(change: Any, vault: VaultRef = VAULT) -> dict[str, object]:
    """`render_change`, validated through a JSON round trip (as a consumer sees it)."""
    event = render_change(change, vault=vault, emitted_at=EMITTED_AT)
    validate(event)
    return event


class TestBackupMissed:
    """`backup_item.backup_missed`."""

    def test_renders_every_field(self) -> None:
        """The envelope, the item, the expected run and the lag, in the documented order."""
        change = missed()
        event = rendered(change)
        assert list(event) == [
            "schema_version",
            "event",
            "event_id",
            "time",
            "item",
            "expected_run",
            "vault",
            "detection_lag_s",
        ]
        assert event["event"] == "backup_item.backup_missed"
        assert event["event_id"] == change.event_id
        assert event["time"] == "2026-03-29T21:05:07.123Z"
        assert event["item"] == {
            "id": ITEM_ID,
            "name": ITEM_NAME,
            "friendly_name": "vm-web-01",
            "datasource_type": "VM",
            "datasource_id": f"/subscriptions/{p.SUB}/resourceGroups/rg-app/providers/"
            "Microsoft.Compute/virtualMachines/vm-web-01",
            "backup_management_type": "AzureIaasVM",
            "policy_id": POLICY_ID,
            "policy_name": "daily-2200",
            "protection_state": "Protected",
            "health_status": "Passed",
            "last_backup_time": "2026-03-28T20:10:00.000Z",
            "last_recovery_point": "2026-03-28T20:10:00.000Z",
        }
        assert event["expected_run"] == {
            "due_time": "2026-03-29T20:00:00.000Z",
            "deadline": "2026-03-29T21:00:00.000Z",
            "kind": "backup",
            "policy_id": POLICY_ID,
            "policy_name": "daily-2200",
            "time_zone": ZONE,
        }
        assert event["detection_lag_s"] == 307.123
        assert event["vault"] == {
            "id": p.VAULT_ID,
            "name": "v1",
            "resource_group": "rg-backup",
            "subscription_id": p.SUB,
            "location": "westeurope",
            "kind": "recovery_services",
            "tenant_id": TENANT,
        }

    def test_a_policy_without_a_schedule_has_no_zone(self) -> None:
        """`time_zone` is null when the policy's schedule is not known."""
        change = BackupMissed(
            item=make_item(),
            policy=make_policy(schedule=False),
            run=missed().run,
            deadline=missed().deadline,
        )
        expected_run: Any = rendered(change)["expected_run"]
        assert expected_run["time_zone"] is None

    @given(
        due=st.datetimes(
            min_value=datetime(2020, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive
            max_value=datetime(2035, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive
            timezones=st.just(UTC),
        ),
        grace_s=st.floats(min_value=0, max_value=7 * 86_400),
        late_s=st.floats(min_value=-60, max_value=30 * 86_400),
        kind=st.sampled_from(RunKind),
    )
    def test_any_run_validates_and_its_lag_is_time_minus_deadline(
        self, due: datetime, grace_s: float, late_s: float, kind: RunKind
    ) -> None:
        """Whatever the run and its lateness: a valid event whose lag is `time − deadline` on the
        millisecond values written, and whose id is the change's."""
        deadline = due + timedelta(seconds=grace_s)
        change = BackupMissed(
            item=make_item(),
            policy=make_policy(),
            run=ExpectedRun(at=due, kind=kind),
            deadline=deadline,
        )
        emitted_at = deadline + timedelta(seconds=late_s)
        event = render_item_event(change, vault=VAULT, emitted_at=emitted_at)
        validate(event)
        expected_run: Any = event["expected_run"]
        assert expected_run["kind"] == kind.value
        written = datetime.fromisoformat(str(event["time"]))
        written_deadline = datetime.fromisoformat(expected_run["deadline"])
        assert event["detection_lag_s"] == round((written - written_deadline).total_seconds(), 3)
        assert event["event_id"] == change.event_id


class TestRpo:
    """`backup_item.rpo_breached` and `backup_item.rpo_restored`."""

    def test_breach(self) -> None:
        """A breach: the recovery point, what is allowed, the age, when it breached, the lag."""
        point = datetime(2026, 3, 28, 20, 10, tzinfo=UTC)
        change = RpoBreached(
            item=make_item(last_recovery_point=point),
            last_recovery_point=point,
            allowed_s=90_000.0,
            breached_at=point + timedelta(seconds=90_000),
        )
        event = rendered(change)
        assert list(event) == [
            "schema_version",
            "event",
            "event_id",
            "time",
            "item",
            "rpo",
            "vault",
            "detection_lag_s",
        ]
        assert event["event"] == "backup_item.rpo_breached"
        assert event["event_id"] == change.event_id
        assert event["rpo"] == {
            "last_recovery_point": "2026-03-28T20:10:00.000Z",
            "allowed_s": 90_000.0,
            "age_s": 89_707.123,
            "breached_at": "2026-03-29T21:10:00.000Z",
        }
        assert event["detection_lag_s"] == -292.877  # the breach is ahead of the clock

    def test_restored(self) -> None:
        """A restore: the fresh recovery point and its age; no breach time, no lag."""
        point = datetime(2026, 3, 29, 20, 40, 30, 500_000, tzinfo=UTC)
        change = RpoRestored(
            item=make_item(last_recovery_point=point),
            last_recovery_point=point,
            allowed_s=90_000.0,
        )
        event = rendered(change)
        assert "detection_lag_s" not in event
        assert event["event"] == "backup_item.rpo_restored"
        assert event["event_id"] == change.event_id
        assert event["rpo"] == {
            "last_recovery_point": "2026-03-29T20:40:30.500Z",
            "allowed_s": 90_000.0,
            "age_s": 1476.623,
            "breached_at": None,
        }


class TestProtectionChanged:
    """`backup_item.protection_changed`."""

    @pytest.mark.parametrize(
        ("state", "health", "previous_state", "previous_health"),
        [
            ("ProtectionStopped", "Passed", "Protected", "Passed"),
            ("Protected", "ActionRequired", "Protected", "Passed"),
            (None, None, "Protected", None),
        ],
    )
    def test_renders_both_states(
        self,
        state: str | None,
        health: str | None,
        previous_state: str | None,
        previous_health: str | None,
    ) -> None:
        """The new state and health (the item's) and the previous ones, verbatim or null."""
        change = ProtectionChanged(
            item=make_item(state=state, health=health, policy=state == "Protected"),
            previous_state=previous_state,
            previous_health=previous_health,
            seq=3,
        )
        event = rendered(change)
        assert event["event"] == "backup_item.protection_changed"
        assert event["event_id"] == change.event_id
        assert "detection_lag_s" not in event
        assert event["protection"] == {
            "state": state,
            "previous_state": previous_state,
            "health": health,
            "previous_health": previous_health,
        }

    def test_backup_instance(self) -> None:
        """A Backup vault's backup instance renders as an item too (no management type)."""
        instance = f"{BV_VAULT.id}/backupInstances/disk-data-01-bi"
        change = ProtectionChanged(
            item=make_item(BV_VAULT, item_id=instance, state="ProtectionError", health=None),
            previous_state="ProtectionConfigured",
            previous_health=None,
            seq=1,
        )
        event = rendered(change, BV_VAULT)
        item: Any = event["item"]
        assert item["id"] == instance
        assert item["name"] == "disk-data-01-bi"
        assert item["backup_management_type"] is None
        vault: Any = event["vault"]
        assert vault["kind"] == "backup_vault"


class TestLongRunning:
    """`backup_job.long_running`."""

    @pytest.mark.parametrize("reason", ["absolute", "median"])
    def test_renders_job_item_and_why(self, reason: str) -> None:
        """The job (with its item's id), the item, and the threshold it passed."""
        change = long_running(reason=reason)
        event = rendered(change)
        assert list(event) == [
            "schema_version",
            "event",
            "event_id",
            "time",
            "job",
            "item",
            "long_running",
            "vault",
        ]
        assert event["event"] == LONG_RUNNING_EVENT_TYPE
        assert event["event_id"] == change.event_id
        job: Any = event["job"]
        assert job["id"] == change.job.name
        assert job["status"] == "InProgress"
        assert job["outcome"] is None
        assert job["protected_item_id"] == ITEM_ID
        item: Any = event["item"]
        assert item["id"] == ITEM_ID
        assert event["long_running"] == {
            "elapsed_s": 90_306.123,
            "threshold_s": 86_400.0,
            "reason": reason,
            "median_s": 3000.0 if reason == "median" else None,
            "samples": 7 if reason == "median" else 2,
        }

    def test_without_its_item(self) -> None:
        """A job whose item is not known: `item` and `job.protected_item_id` are null."""
        event = rendered(long_running(item=False))
        job: Any = event["job"]
        assert event["item"] is None
        assert job["protected_item_id"] is None


class TestRefusals:
    """What the renderers refuse."""

    def test_another_vault(self) -> None:
        """An item of another vault is an error, not a wrong event."""
        with pytest.raises(ValueError, match="vault"):
            render_item_event(missed(), vault=BV_VAULT, emitted_at=EMITTED_AT)
        with pytest.raises(ValueError, match="vault"):
            render_long_running(long_running(), vault=BV_VAULT, emitted_at=EMITTED_AT)

    def test_naive_time(self) -> None:
        """A naive emission time is refused."""
        with pytest.raises(ValueError, match="naive"):
            render_item_event(missed(), vault=VAULT, emitted_at=datetime(2026, 3, 29))  # noqa: DTZ001


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda event: event.pop(key)


class TestSchema:
    """The shipped schema holds each type to its own shape; job events are unchanged."""

    @pytest.mark.parametrize(
        ("make", "mutate"),
        [
            (missed, _drop("expected_run")),
            (missed, _drop("item")),
            (missed, _drop("detection_lag_s")),
            (missed, lambda e: e.__setitem__("item", None)),
            (missed, lambda e: e.__setitem__("job", {})),
            (missed, lambda e: e["expected_run"].pop("time_zone")),
            (missed, lambda e: e["item"].__setitem__("extra", 1)),
            (missed, lambda e: e.__setitem__("rpo", e["expected_run"])),
            (long_running, _drop("long_running")),
            (long_running, _drop("job")),
            (long_running, lambda e: e["long_running"].__setitem__("reason", "gut feeling")),
            (long_running, lambda e: e.__setitem__("detection_lag_s", 1.0)),
            (
                lambda: RpoRestored(
                    item=make_item(), last_recovery_point=EMITTED_AT, allowed_s=60.0
                ),
                lambda e: e["rpo"].__setitem__("breached_at", e["time"]),
            ),
            (
                lambda: ProtectionChanged(
                    item=make_item(), previous_state=None, previous_health=None, seq=1
                ),
                lambda e: e["protection"].pop("previous_health"),
            ),
        ],
    )
    def test_a_broken_event_is_invalid(
        self, make: Callable[[], Any], mutate: Callable[[dict[str, Any]], None]
    ) -> None:
        """Each mutation of a valid event of a new type makes it invalid."""
        event = orjson.loads(orjson.dumps(rendered(make())))
        EVENT_VALIDATOR.validate(event)
        mutate(event)
        assert not EVENT_VALIDATOR.is_valid(event)

    def test_a_state_change_still_needs_its_job(self) -> None:
        """`backup_job.state_changed` without `job`, or with an item object, is invalid."""
        event = self._job_event()
        EVENT_VALIDATOR.validate(event)
        assert not EVENT_VALIDATOR.is_valid({k: v for k, v in event.items() if k != "job"})
        assert not EVENT_VALIDATOR.is_valid({**event, "item": None})

    def test_an_unknown_type_is_invalid(self) -> None:
        """The `event` values are a closed set of the schema (new ones come with the schema)."""
        assert not EVENT_VALIDATOR.is_valid({**self._job_event(), "event": "backup_job.other"})

    def test_a_job_event_without_protected_item_id_is_valid(self) -> None:
        """Older v1 events, written before `job.protected_item_id`, still validate."""
        event = self._job_event()
        del event["job"]["protected_item_id"]
        EVENT_VALIDATOR.validate(event)

    @staticmethod
    def _job_event() -> dict[str, Any]:
        event = rendered_job_event(
            VAULT,
            name=str(uuid.UUID(int=9)),
            status="Completed",
            start=EMITTED_AT - timedelta(hours=1),
            end=EMITTED_AT - timedelta(minutes=1),
            emitted_at=EMITTED_AT,
        )
        loaded: dict[str, Any] = orjson.loads(orjson.dumps(event))
        return loaded


class TestWireAndReadBack:
    """CloudEvents, encoding and read-back of the new types."""

    def test_cloudevent_subject(self) -> None:
        """`subject` is the item id for item events, the job id for job events."""
        for change in (missed(), long_running()):
            event = rendered(change)
            cloudevent = to_cloudevent(event)
            CLOUDEVENT_VALIDATOR.validate(orjson.loads(orjson.dumps(cloudevent)))
            assert cloudevent["type"] == event["event"]
            assert cloudevent["id"] == event["event_id"]
        assert to_cloudevent(rendered(missed()))["subject"] == ITEM_ID
        assert to_cloudevent(rendered(long_running()))["subject"] == long_running().job.name

    @pytest.mark.parametrize("fmt", ["json", "cloudevents"])
    def test_decode_keeps_every_type(self, fmt: Any) -> None:
        """Every type of ours is read back (plain or CloudEvents); others are skipped."""
        point = datetime(2026, 3, 28, 20, 10, tzinfo=UTC)
        events = [
            rendered(missed()),
            rendered(
                RpoBreached(
                    item=make_item(),
                    last_recovery_point=point,
                    allowed_s=60.0,
                    breached_at=point + timedelta(seconds=60),
                )
            ),
            rendered(RpoRestored(item=make_item(), last_recovery_point=point, allowed_s=60.0)),
            rendered(
                ProtectionChanged(
                    item=make_item(), previous_state=None, previous_health=None, seq=1
                )
            ),
            rendered(long_running()),
            TestSchema._job_event(),
        ]
        assert sorted({str(e["event"]) for e in events}) == sorted(EVENT_TYPES)
        foreign = orjson.dumps({**events[0], "event": "someone.else"}) + b"\n"
        lines = (
            encode_events(events[:3], format=fmt) + foreign + encode_events(events[3:], format=fmt)
        ).split(b"\n")
        assert decode_events(lines) == orjson.loads(orjson.dumps(events))

    def test_emitted_event_of_an_item_event(self) -> None:
        """An item event is no job state change: the metrics see its type and lag, no status."""
        emitted = EmittedEvent.of(rendered(missed()))
        assert emitted.event == "backup_item.backup_missed"
        assert not emitted.is_state_change
        assert not emitted.status.is_known
        assert emitted.detection_lag_s == 307.123
        running = EmittedEvent.of(rendered(long_running()))
        assert running.event == LONG_RUNNING_EVENT_TYPE
        assert not running.is_state_change
        job = EmittedEvent.of(TestSchema._job_event())
        assert job.event == EVENT_TYPE
        assert job.is_state_change
        assert job.status is JobStatus.COMPLETED

    def test_type_constants(self) -> None:
        """The exported type names are the schema's `event` values."""
        schema_types = EVENT_VALIDATOR.schema["properties"]["event"]["enum"]
        assert sorted(schema_types) == sorted(EVENT_TYPES)
        assert set(ITEM_EVENT_TYPES) == {t for t in EVENT_TYPES if t.startswith("backup_item.")}


class TestDocs:
    """docs/events.md documents the new types as the code writes them."""

    TEXT = (Path(__file__).resolve().parents[1] / "docs" / "events.md").read_text(encoding="utf-8")

    def test_the_missed_run_sample_is_what_the_code_renders(self) -> None:
        """The sample line validates and is exactly the rendering of `missed()`."""
        start = self.TEXT.index("<!-- sample-event-backup-missed -->")
        line = self.TEXT[start:].split("```json\n", 1)[1].split("\n```", 1)[0]
        assert "\n" not in line
        sample = orjson.loads(line)
        EVENT_VALIDATOR.validate(sample)
        assert line == orjson.dumps(rendered(missed())).decode()

    @pytest.mark.parametrize("name", ["item", "expected_run", "rpo", "protection", "long_running"])
    def test_every_field_of_the_schema_is_documented(self, name: str) -> None:
        """Each key of each new object has a row in its table of docs/events.md."""
        section = self.TEXT.split(f"### `{name}`", 1)[1].split("\n### ", 1)[0]
        rows = [line for line in section.splitlines() if line.startswith("| `")]
        documented = {key for row in rows for key in re.findall(r"`([a-z_]+)`", row.split("|")[1])}
        keys = set(EVENT_VALIDATOR.schema["$defs"][name]["properties"])
        assert keys <= documented

    def test_every_type_is_documented(self) -> None:
        """Each event type has a row in the table of when it is emitted, and its event_id."""
        for kind in EVENT_TYPES[1:]:
            assert f"| `{kind}` |" in self.TEXT
        assert "| `protected_item_id` |" in self.TEXT
