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
from typing import Literal

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
Source = Literal["window", "full", "index"]


@dataclass(frozen=True)
class ModelJob:
    name: str
    start_s: int  # seconds after T0
    late_s: int  # listed from start_s + late_s on (at most the overlap)
    end_s: int  # terminal from here on
    terminal: str
    deleted_s: int | None  # gone (not listed, 404) from here on
    cancel_s: int | None = None  # Cancelling from here on (before end_s), if ever

    def status_at(self, t: int) -> str:
        if t >= self.end_s:
            return self.terminal
        return "Cancelling" if self.cancel_s is not None and t >= self.cancel_s else "InProgress"

    def visible_at(self, t: int) -> bool:
        gone = self.deleted_s is not None and t >= self.deleted_s
        return t >= self.start_s + self.late_s and not gone

    def job(self, t: int, *, provisional: bool = False) -> BackupJob:
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
            provisional=provisional,
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
    st.sampled_from(
        ["poll", "poll", "poll", "details_fail", "bound", "restart", "crash", "clock_back"]
    ),
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

    # The lagging-index model's bookkeeping (see `run_lagging`).
    tracked_from: dict[str, int] = field(default_factory=dict)  # first poll committing it running
    held_restart: dict[str, int] = field(default_factory=dict)  # last restart holding it: polls
    window: tuple[datetime, datetime] | None = None  # the last poll's listing window

    def poll(
        self,
        world: list[ModelJob],
        t: int,
        clock_t: int,
        *,
        details_fail: bool,
        save: bool,
        source: Source = "window",
        lags: tuple[int, ...] = (),
        reads_fail: bool = False,
        linger: bool = False,
        bound: bool = False,
    ) -> None:
        """Poll the world as it is at `t`, with the monitor's wall clock reading `clock_t`.

        `source` says what lists: ARM's filtered window (`window`), ARM's full listing of the
        vault's history (`full`), or a lagging index (`index`) that shows job `i` as it was
        `lags[i]` seconds ago (0 when `lags` is short), provisional (`linger`: see
        `list_jobs`). `reads_fail` fails every
        direct read of a job that exists (a deleted one still answers 404)."""
        now = T0 + timedelta(seconds=clock_t)
        # The one loss allowed: a change held back in memory (its details failing) when the
        # process restarts, of a job that the next poll cannot list: deleted meanwhile, or its
        # start behind that poll's lookback.
        # A poll killed before its commit (`save` False) never was, to the world: it neither
        # lists the held change for good nor loses it, so the next poll that commits decides.
        floor = lookback_floor(now, self.rules)
        by_name = {j.name: j for j in world}
        if save:
            self.lost |= {
                name
                for name, start in self.held_at_restart.items()
                if not by_name[name].visible_at(t) or (start is not None and start < floor)
            }
            self.held_at_restart = {}
        step = PollStep(self.known, now, self.rules)
        self.window = (step.window_start, step.window_end)
        listed = list_jobs(world, t, step, source, lags, linger=linger)
        for key in step.listed(listed):
            model = by_name[key.job_name]
            if model.deleted_s is not None and t >= model.deleted_s:
                step.gone(key)
            elif reads_fail:
                step.failed(key)
            else:
                step.read(bare_details(model.job(t)))
        for change in step.changes():
            if step.wants_details(change, bound=bound):
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
            for c, _ in outcome.emit:
                if not c.status.is_terminal:
                    self.tracked_from.setdefault(c.job.name, len(self.polls))
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
        self.held_restart |= dict.fromkeys(self.held_at_restart, len(self.polls))
        self.known = VaultJobs.restored(self.stored)


def list_jobs(
    world: list[ModelJob],
    t: int,
    step: PollStep,
    source: Source,
    lags: tuple[int, ...],
    *,
    linger: bool = False,
) -> list[BackupJob]:
    """What a poll's listing shows at world time `t` (see `Monitor.poll`). The index shows a
    deleted job's row only while it lags behind the deletion when `linger` is set (see
    `test_a_lingering_row_of_a_deleted_job_is_emitted_again`); otherwise its rows of deleted
    jobs go with them."""
    if source == "window":
        return [
            j.job(t)
            for j in world
            if j.visible_at(t) and step.window_start <= j.started_at <= step.window_end
        ]
    if source == "full":
        return [j.job(t) for j in world if j.visible_at(t)]
    shown = []
    for i, j in enumerate(world):
        seen_t = index_time(t, lags, i)
        if j.visible_at(seen_t) and (linger or j.visible_at(t)):
            shown.append(j.job(seen_t, provisional=True))
    return shown


def index_time(t: int, lags: tuple[int, ...], i: int) -> int:
    """The world time as of which a lagging index shows job `i` at world time `t`."""
    return t - (lags[i] if i < len(lags) else 0)


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
        monitor.poll(
            world,
            t,
            t + skew,
            details_fail=how == "details_fail",
            save=how != "crash",
            bound=how == "bound",  # the budget binds: Completed jobs go out without details
        )
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
@example(  # held, then two polls killed before their commits: the held change is still only
    # in the store's past when the next committing poll finds it behind its lookback (the one
    # allowed loss; the model used to forget it at the second killed poll)
    world=[
        ModelJob("job-0", start_s=1152, late_s=0, end_s=1152, terminal="Completed", deleted_s=None),
        ModelJob("job-1", start_s=0, late_s=0, end_s=0, terminal="Completed", deleted_s=None),
    ],
    actions=[(552, "poll"), (2400, "details_fail"), (0, "crash"), (0, "crash"), (1, "poll")],
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


# --------------------------------------------------------------------------------------------
# A lagging index (Resource Graph) and full listings of a vault's history.

RANK = {"InProgress": 0, "Cancelling": 1, **dict.fromkeys(TERMINAL, 2)}
MAX_JOBS = 8
LAGS = st.tuples(*[st.integers(0, 900) | st.sampled_from([0, 5000]) for _ in range(MAX_JOBS)])


@st.composite
def lagging_world(draw: st.DrawFn) -> list[ModelJob]:
    """Jobs as `model_jobs` draws them, some passing through Cancelling on their way to
    Cancelled (a third status, so that an index can show one older than the last emitted)."""
    jobs = []
    for job in draw(model_jobs()):
        if job.terminal == "Cancelled" and job.end_s > job.start_s and draw(st.booleans()):
            cancel = draw(st.integers(job.start_s, job.end_s - 1))
            job = ModelJob(**{**job.__dict__, "cancel_s": cancel})
        jobs.append(job)
    return jobs


# (seconds that pass, how the poll goes, what lists, the index's lag per job)
LAGGING_ACTIONS = st.tuples(
    st.integers(0, 700) | st.sampled_from([LOOKBACK_S + 600, 1]),
    st.sampled_from(
        ["poll", "poll", "poll", "details_fail", "reads_fail", "restart", "crash", "clock_back"]
    ),
    st.sampled_from(["index", "index", "index", "full", "window"]),
    LAGS,
)


@dataclass(frozen=True)
class PollRecord:
    t: int  # world time
    clock_t: int  # the monitor's wall clock
    source: Source
    lags: tuple[int, ...]
    reads_fail: bool
    window: tuple[datetime, datetime] | None  # the step's listing window


@dataclass
class LaggingRun:
    monitor: Monitor
    records: list[PollRecord]


def run_lagging(
    world: list[ModelJob],
    actions: list[tuple[int, str, Source, tuple[int, ...]]],
    stuck: tuple[int, ...],
    rules: TrackRules,
) -> LaggingRun:
    """Play the actions, then quiet polls of the index (lagging by `stuck` per job, for ever),
    with every direct read and detail read succeeding, until every job has ended and every
    held change is out."""
    monitor, t, skew, records = Monitor(rules=rules), 0, 0, []
    for passed_s, how, source, lags in actions:
        t += passed_s
        monitor.mono += max(passed_s, 1)
        if how == "clock_back":
            skew -= 60
        if how == "restart":
            monitor.restart()
        held = {key.job_name: h.job.start_at for key, h in monitor.known.held.items()}
        reads_fail = how == "reads_fail"
        monitor.poll(
            world,
            t,
            t + skew,
            details_fail=how == "details_fail",
            save=how != "crash",
            source=source,
            lags=lags,
            reads_fail=reads_fail,
        )
        if how == "crash":
            monitor.held_at_restart |= held
            monitor.restart()
        else:
            monitor.polls.append((t, t + skew))
            records.append(PollRecord(t, t + skew, source, lags, reads_fail, monitor.window))
    last = max(max(j.end_s for j in world), t) + 1
    for quiet in range(t, last + int(rules.detail_retry_s) + 2 * OVERLAP_S, 60):
        monitor.mono += 60
        monitor.poll(
            world, quiet, quiet + skew, details_fail=False, save=True, source="index", lags=stuck
        )
        monitor.polls.append((quiet, quiet + skew))
        records.append(PollRecord(quiet, quiet + skew, "index", stuck, False, monitor.window))
    return LaggingRun(monitor, records)


def assert_never_backwards(emitted: list[tuple[str, str]]) -> None:
    """Per job, each emitted status is strictly newer than the one before: none twice, none
    older, nothing after a terminal one."""
    last: dict[str, str] = {}
    for name, status in emitted:
        if name in last:
            assert RANK[status] > RANK[last[name]], (name, last[name], status, emitted)
        last[name] = status


@settings(max_examples=300, deadline=None)
@given(lagging_world(), st.lists(LAGGING_ACTIONS, max_size=25), LAGS, st.booleans(), st.booleans())
def test_a_lagging_index_never_moves_a_status_backwards(
    world: list[ModelJob],
    actions: list[tuple[int, str, Source, tuple[int, ...]]],
    stuck: tuple[int, ...],
    backfill: bool,
    history: bool,
) -> None:
    """Polls list from a lagging index (stale statuses, provisional), ARM's full history or its
    window, in any mix, through restarts, crashes, clock steps and failing reads: no status is
    emitted twice for a job, and none is older than one emitted before (never a running status
    after a terminal one, never InProgress after Cancelling)."""
    if not history:  # without full listings: the index and the window only
        actions = [(a, how, "index" if s == "full" else s, lags) for a, how, s, lags in actions]
    done = run_lagging(world, actions, stuck, rules(backfill))
    assert_never_backwards(done.monitor.emitted)


@settings(max_examples=300, deadline=None)
@given(lagging_world(), st.lists(LAGGING_ACTIONS, max_size=25), LAGS)
@example(  # the index never shows job-1 (listed late, then lagging); ARM's window after those
    # polls starts past it: not learnable there (the window trusts earlier windows)
    world=[
        ModelJob("job-0", start_s=0, late_s=0, end_s=0, terminal="Completed", deleted_s=None),
        ModelJob(
            "job-1", start_s=2393, late_s=120, end_s=2393, terminal="Completed", deleted_s=None
        ),
    ],
    actions=[
        (112, "poll", "index", (0,) * MAX_JOBS),
        (2400, "poll", "index", (0,) * MAX_JOBS),
        (62, "clock_back", "index", (0, 102, 0, 0, 0, 0, 0, 0)),
        (0, "poll", "window", (0,) * MAX_JOBS),
    ],
    stuck=(0, 5000, 0, 0, 0, 0, 0, 0),
)
def test_a_lagging_index_loses_no_terminal_change(
    world: list[ModelJob],
    actions: list[tuple[int, str, Source, tuple[int, ...]]],
    stuck: tuple[int, ...],
) -> None:
    """A job's terminal status is emitted when some poll `i` could learn it: at `i` the job has
    ended and still exists, its start is at or after every lookback floor so far, `i` comes
    after the last restart that dropped its held change (details failing) from memory, and
    - `i` lists from ARM: the full history, or the window when it holds the job's start (the
      window alone covers what the polls before it missed only when those were ARM's
      windows too: `test_no_terminal_change_inside_the_lookback_is_lost`), or
    - the index shows the job at `i` (any status: terminal, or older and then read), and the
      direct reads of `i` succeed unless the row it shows is already terminal, or
    - a running status of the job was committed before `i`, and the direct reads of `i`
      succeed.

    Fairness assumed: after the drawn actions, polls go on every minute with every direct and
    detail read succeeding, while the index may stay behind for ever (`stuck`, per job); a job
    that the index never shows, that was never listed by ARM, and that no read could reach is
    not required."""
    done = run_lagging(world, actions, stuck, rules(backfill=True))
    monitor, records = done.monitor, done.records
    floors, highest = [], T0 - timedelta(days=1)
    for r in records:
        highest = max(highest, lookback_floor(T0 + timedelta(seconds=r.clock_t), monitor.rules))
        floors.append(highest)

    def learnable(i: int, n: int, job: ModelJob) -> bool:
        r = records[i]
        if r.t < job.end_s or not job.visible_at(r.t) or job.started_at < floors[i]:
            return False
        if i < monitor.held_restart.get(job.name, 0):
            return False
        if r.source == "full":
            return True
        if r.source == "window":  # covers what earlier polls missed only if they were ARM's too
            assert r.window is not None
            return r.window[0] <= job.started_at <= r.window[1]
        seen_t = index_time(r.t, r.lags, n)
        if job.visible_at(seen_t) and (seen_t >= job.end_s or not r.reads_fail):
            return True
        return monitor.tracked_from.get(job.name, len(records)) < i and not r.reads_fail

    for n, job in enumerate(world):
        if any(learnable(i, n, job) for i in range(len(records))):
            assert (job.name, job.terminal) in monitor.emitted, (job, monitor.emitted)


def test_a_lingering_row_of_a_deleted_job_is_not_emitted_again() -> None:
    """The index lags behind a deletion: a stale running row of a job already emitted as
    Completed is dropped unread (a job known to have ended cannot change), so the job is not
    forgotten, and the row showing Completed again is no news. Found by the lagging-index
    property when a 404 to the confirming read forgot the job."""
    job = ModelJob("job-0", start_s=0, late_s=0, end_s=100, terminal="Completed", deleted_s=200)
    monitor = Monitor(rules=rules(backfill=True))
    for t, lag in [(0, 0), (120, 0), (220, 150), (220, 30)]:  # index as of t - lag
        monitor.mono += 60
        monitor.poll(
            [job], t, t, details_fail=False, save=True, source="index", lags=(lag,), linger=True
        )
    assert monitor.emitted == [("job-0", "InProgress"), ("job-0", "Completed")]


class TestDetailsWhenBound:
    @settings(max_examples=200, deadline=None)
    @given(
        status=st.sampled_from(
            ["InProgress", "Completed", "CompletedWithWarnings", "Failed", "Cancelled", "Odd"]
        ),
        first=st.booleans(),
        bound=st.booleans(),
        when_bound=st.sampled_from(["all", "not_succeeded"]),
        backfill_details=st.sampled_from(["all", "not_succeeded", "none"]),
    )
    def test_a_bound_budget_leaves_out_only_later_successes(
        self, status: str, first: bool, bound: bool, when_bound: str, backfill_details: str
    ) -> None:
        """`bound` only ever turns down a Completed job's details on a later poll, and only
        with `details_when_bound = "not_succeeded"`; everything else is as unbound."""
        vault_rules = TrackRules(
            lookback_s=LOOKBACK_S,
            overlap_s=OVERLAP_S,
            backfill_details=backfill_details,  # type: ignore[arg-type]
            details_when_bound=when_bound,  # type: ignore[arg-type]
        )
        known = VaultJobs()
        if not first:  # one poll before: the vault's history is behind it
            known = known.after(PollStep(known, T0, vault_rules).finish())
        now = T0 + timedelta(minutes=5)
        step = PollStep(known, now, vault_rules)
        model = ModelJob("j1", start_s=60, late_s=0, end_s=120, terminal=status, deleted_s=None)
        job = model.job(300)
        step.listed([job])
        (change,) = step.changes()
        free = step.wants_details(change)
        taken = step.wants_details(change, bound=bound)
        left_out = bound and not first and status == "Completed" and when_bound != "all"
        assert taken == (free and not left_out)
        assert free == (
            JobStatus.of(status).is_terminal
            and (
                not first
                or backfill_details == "all"
                or (backfill_details == "not_succeeded" and status != "Completed")
            )
        )
