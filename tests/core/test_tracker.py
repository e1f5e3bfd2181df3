"""The pure poll step over arbitrary histories: no status twice, no terminal change lost.

A model vault runs jobs (each starts, may be listed late, ends in a terminal status, may be
deleted); polls come at arbitrary times (gaps, downtime past the lookback, small clock steps
back), detail reads fail now and then, and the monitor restarts: cleanly, or killed before a
poll's commit (its events and checkpoint, one transaction), which then never happened. A small
synchronous driver plays the shell's part in the order `monitor/poller.py` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import example, given, settings
from hypothesis import strategies as st

from monitor.core.jobs import BackupJob, JobKey, JobStatus
from monitor.core.tracker import (
    Hold,
    PollStep,
    TrackRules,
    VaultCheckpoint,
    VaultJobs,
    lookback_floor,
)
from monitor.core.vaults import VaultRef, parse_vault_id
from tests.fakes import bare_details

VAULT: VaultRef = parse_vault_id(
    "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg/providers/"
    "Microsoft.RecoveryServices/vaults/v1"
)
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
LOOKBACK_S, OVERLAP_S = 1800, 120
TERMINAL = ["Completed", "Failed", "Cancelled", "CompletedWithWarnings"]


@dataclass(frozen=True)
class ModelJob:
    name: str
    start_s: int  # seconds after T0
    late_s: int  # listed from start_s + late_s on (at most the overlap)
    end_s: int  # terminal from here on
    terminal: str
    deleted_s: int | None  # gone (not listed, 404) from here on

    def status_at(self, t: int) -> str:
        return self.terminal if t >= self.end_s else "InProgress"

    def visible_at(self, t: int) -> bool:
        gone = self.deleted_s is not None and t >= self.deleted_s
        return t >= self.start_s + self.late_s and not gone

    def job(self, t: int) -> BackupJob:
        return BackupJob(
            key=JobKey(vault_key=VAULT.key, job_name=self.name),
            name=self.name,
            resource_id=f"{VAULT.id}/backupJobs/{self.name}",
            job_type="AzureIaaSVMJob",
            operation="Backup",
            backup_management_type="AzureIaasVM",
            entity="vm",
            status=JobStatus.of(self.status_at(t)),
            start_at=self.started_at,
            end_at=None,
            duration_raw=None,
            actions=(),
            activity_id=None,
            properties={},
        )

    @property
    def started_at(self) -> datetime:
        return T0 + timedelta(seconds=self.start_s)


@st.composite
def model_jobs(draw: st.DrawFn) -> list[ModelJob]:
    jobs = []
    for n in range(draw(st.integers(1, 8))):
        start = draw(st.integers(0, 6000))
        end = start + draw(st.integers(0, 4000))
        deleted = draw(st.none() | st.integers(start + 1, end + 3000))
        jobs.append(
            ModelJob(
                name=f"job-{n}",
                start_s=start,
                late_s=draw(st.integers(0, OVERLAP_S)),
                end_s=end,
                terminal=draw(st.sampled_from(TERMINAL)),
                deleted_s=deleted,
            )
        )
    return jobs


# One action between polls: (seconds that pass, how the poll goes). "clock_back" steps the
# monitor's wall clock back a minute (the world's time goes on: Azure's jobs do not un-finish).
ACTIONS = st.tuples(
    st.integers(0, 700) | st.sampled_from([LOOKBACK_S + 600, 1]),
    st.sampled_from(["poll", "poll", "poll", "details_fail", "restart", "crash", "clock_back"]),
)


@dataclass
class Monitor:
    """The shell's part, synchronous: what `poller.VaultPoller.poll` does around a step."""

    rules: TrackRules
    known: VaultJobs = field(default_factory=VaultJobs)
    stored: VaultCheckpoint = field(
        default_factory=lambda: VaultCheckpoint(vault_key=VAULT.key, jobs={}, polled_at=None)
    )
    emitted: list[tuple[str, str]] = field(default_factory=list)  # (job, status)
    mono: float = 0.0
    polls: list[tuple[int, int]] = field(default_factory=list)  # (world time, wall clock)
    held_at_restart: dict[str, datetime | None] = field(default_factory=dict)
    lost: set[str] = field(default_factory=set)  # held at a restart, behind the next floor

    def poll(
        self, world: list[ModelJob], t: int, clock_t: int, *, details_fail: bool, save: bool
    ) -> None:
        """Poll the world as it is at `t`, with the monitor's wall clock reading `clock_t`."""
        now = T0 + timedelta(seconds=clock_t)
        # The one loss allowed: a change held back in memory (its details failing) when the
        # process restarts, of a job that the next poll cannot list: deleted meanwhile, or its
        # start behind that poll's lookback.
        floor = lookback_floor(now, self.rules)
        by_name = {j.name: j for j in world}
        self.lost |= {
            name
            for name, start in self.held_at_restart.items()
            if not by_name[name].visible_at(t) or (start is not None and start < floor)
        }
        self.held_at_restart = {}
        step = PollStep(self.known, now, self.rules)
        listed = [
            j.job(t)
            for j in world
            if j.visible_at(t)
            and step.window_start <= T0 + timedelta(seconds=j.start_s) <= step.window_end
        ]
        for key in step.listed(listed):
            model = by_name[key.job_name]
            if model.deleted_s is None or t < model.deleted_s:
                step.read(bare_details(model.job(t)))
            else:
                step.gone(key)
        for change in step.changes():
            if step.wants_details(change):
                if details_fail:
                    assert step.hold(change, self.mono, transient=True) in set(Hold)
                else:
                    step.detailed(change, bare_details(change.job))
        outcome = step.finish()
        after = self.known.after(outcome)
        if outcome.emit or after.save_due(now, self.rules):
            if not save:
                return  # killed before the commit: nothing went out, nothing moved
            # The commit: the events into the outbox and the checkpoint, in one transaction.
            self.emitted += [(c.job.name, c.status.value) for c, _ in outcome.emit]
            jobs = dict(self.stored.jobs)
            jobs.update(after.unsaved)
            for key in after.unsaved_removed:
                jobs.pop(key, None)
            polled_at = after.save_point(now)
            self.stored = VaultCheckpoint(vault_key=VAULT.key, jobs=jobs, polled_at=polled_at)
            after.saved(polled_at)
        self.known = after

    def restart(self) -> None:
        """A new process: what the store holds (checkpoints and outbox commit together)."""
        self.held_at_restart |= {
            key.job_name: held.job.start_at for key, held in self.known.held.items()
        }
        self.known = VaultJobs.restored(self.stored)


def run(world: list[ModelJob], actions: list[tuple[int, str]], rules: TrackRules) -> Monitor:
    """Play the actions, then quiet polls until every job has ended and every held change is
    out; `Monitor.polls` records (world time, wall clock) of each poll."""
    monitor, t, skew = Monitor(rules=rules), 0, 0
    for passed_s, how in actions:
        t += passed_s
        monitor.mono += max(passed_s, 1)
        if how == "clock_back":
            skew -= 60
        if how == "restart":
            monitor.restart()
        # What is held in memory before a poll that is killed before its commit stays held as
        # far as the store knows, whatever that poll did with it.
        held = {key.job_name: h.job.start_at for key, h in monitor.known.held.items()}
        monitor.poll(world, t, t + skew, details_fail=how == "details_fail", save=how != "crash")
        if how == "crash":
            monitor.held_at_restart |= held
            monitor.restart()  # killed before its commit: to the world, that poll never was
        else:
            monitor.polls.append((t, t + skew))
    last = max(max(j.end_s for j in world), t) + 1
    for quiet in range(t, last + int(rules.detail_retry_s) + 2 * OVERLAP_S, 60):
        monitor.mono += 60
        monitor.poll(world, quiet, quiet + skew, details_fail=False, save=True)
        monitor.polls.append((quiet, quiet + skew))
    return monitor


def rules(backfill: bool) -> TrackRules:
    return TrackRules(
        lookback_s=LOOKBACK_S, overlap_s=OVERLAP_S, backfill=backfill, detail_retry_s=300
    )


@settings(max_examples=300, deadline=None)
@given(model_jobs(), st.lists(ACTIONS, max_size=25), st.booleans())
@example(  # a running job holds the window at the floor; the clock steps back a minute
    world=[
        ModelJob("job-0", start_s=828, late_s=0, end_s=828, terminal="Completed", deleted_s=None),
        ModelJob("job-4", start_s=0, late_s=0, end_s=2690, terminal="Completed", deleted_s=None),
    ],
    actions=[(228, "poll"), (2400, "poll"), (61, "clock_back"), (0, "clock_back")],
    backfill=False,
)
def test_no_status_is_emitted_twice(
    world: list[ModelJob], actions: list[tuple[int, str]], backfill: bool
) -> None:
    monitor = run(world, actions, rules(backfill))
    assert len(monitor.emitted) == len(set(monitor.emitted)), monitor.emitted


@settings(max_examples=300, deadline=None)
@given(model_jobs(), st.lists(ACTIONS, max_size=25))
@example(  # held, then killed before the commit of the poll that read its details: held at
    # the restart, and behind the lookback by the next poll (the one allowed loss)
    world=[
        ModelJob("job-0", start_s=600, late_s=0, end_s=600, terminal="Completed", deleted_s=None)
    ],
    actions=[(0, "poll"), (2400, "details_fail"), (0, "crash"), (1, "poll")],
)
@example(  # held (details failing) at a restart, deleted meanwhile: the one allowed loss
    world=[ModelJob("job-0", start_s=0, late_s=0, end_s=0, terminal="Cancelled", deleted_s=688)],
    actions=[(0, "details_fail"), (0, "details_fail"), (1, "details_fail"), (694, "restart")],
)
def test_no_terminal_change_inside_the_lookback_is_lost(
    world: list[ModelJob], actions: list[tuple[int, str]]
) -> None:
    """A job that ended, and that a poll after it could list (visible, its start inside the
    lookback of every poll so far: a clock stepped back does not bring back what the floor
    already passed), has its terminal status emitted. The one exception: its change was held
    back in memory (details failing) when the process restarted, and the first poll after that
    cannot list it (deleted meanwhile, or its start behind the lookback)."""
    monitor = run(world, actions, rules(backfill=True))
    polls = monitor.polls
    floors, highest = [], T0 - timedelta(days=1)
    for _, clock_t in polls:
        highest = max(highest, lookback_floor(T0 + timedelta(seconds=clock_t), monitor.rules))
        floors.append(highest)

    def listable(job: ModelJob, i: int) -> bool:
        t = polls[i][0]
        return t >= job.end_s and job.visible_at(t) and job.started_at >= floors[i]

    for job in world:
        if job.name not in monitor.lost and any(listable(job, i) for i in range(len(polls))):
            assert (job.name, job.terminal) in monitor.emitted, (job, monitor.emitted)
