"""The server lifecycle's decisions, replayed as scripted histories: a fake clock, fake vLLM generations (each
a scripted API server with its EngineCore), fake probes. No real process, no sleep."""

from __future__ import annotations

import signal
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bootstrap.core.lifecycle import (
    Collaborators,
    Failed,
    GaveUp,
    HealthAnswer,
    Lifecycle,
    MemoryReleased,
    ProbeFailed,
    ProbeResult,
    ProbeSettings,
    ProbeSucceeded,
    ProcessRef,
    Ready,
    Restarting,
    RestartPolicy,
    Starting,
    Stopped,
    Stopping,
    Target,
    Waiting,
)
from bootstrap.core.supervisor import GroupOps
from tests.support.fakes import FakeClock


@dataclass
class Script:
    """How one generation of vLLM behaves, in seconds after its start (None: never)."""

    ready_at: float | None = 3.0
    exits_at: float | None = None
    exit_code: int = 0
    engine_dies_at: float | None = None
    api_exits_after_engine: float | None = 2.0  # vLLM's API server follows its dead engine (exit 0)
    health_503_at: float | None = None
    silent_at: float | None = None  # /health stops answering at all
    hangs_at: float | None = None  # generations stop completing; /health still 200
    ignores_sigterm: bool = False
    log: list[str] = field(default_factory=lambda: ["INFO: starting"])
    gpu_bytes: int = 0
    gpu_release_after: float = 0.0  # after the tree died, NVML still lists the memory this long


class FakeGeneration:
    """One API server (the child) and its EngineCore, obeying a Script on the fake clock."""

    def __init__(self, pid: int, script: Script, clock: FakeClock) -> None:
        self.pid = pid
        self.engine_pid = pid + 1
        self.script = script
        self.clock = clock
        self.t0 = clock.monotonic()
        self.killed_at: float | None = None
        self.returncode: int | None = None

    def age(self) -> float:
        return self.clock.monotonic() - self.t0

    def _after(self, at: float | None) -> bool:
        return at is not None and self.age() >= at

    def engine_alive(self) -> bool:
        return self.killed_at is None and not self._after(self.script.engine_dies_at)

    def poll(self) -> int | None:
        if self.returncode is None:
            if self.killed_at is not None:
                self.returncode = self._kill_code
            elif self._after(self.script.exits_at):
                self.returncode = self.script.exit_code
            elif (self.script.engine_dies_at is not None and self.script.api_exits_after_engine is not None
                  and self._after(self.script.engine_dies_at + self.script.api_exits_after_engine)):
                self.returncode = 0
        return self.returncode

    def alive(self) -> bool:
        return self.poll() is None

    def signal(self, sig: int) -> None:
        if (sig == signal.SIGKILL or not self.script.ignores_sigterm) and self.killed_at is None:
            self.killed_at = self.clock.monotonic()
            self._kill_code = -sig

    def health(self) -> HealthAnswer:
        if not self.alive() or self.script.ready_at is None or self.age() < self.script.ready_at:
            return HealthAnswer(None, "connection refused")
        if self._after(self.script.silent_at):
            return HealthAnswer(None, "timed out")
        if self._after(self.script.health_503_at):
            return HealthAnswer(503)
        return HealthAnswer(200)

    def generates(self) -> bool:
        return self.alive() and self.engine_alive() and not self._after(self.script.hangs_at)


class World:
    """The fake box: generations started in order, each following the next script."""

    def __init__(self, *scripts: Script) -> None:
        self.clock = FakeClock()
        self.scripts = list(scripts)
        self.gens: list[FakeGeneration] = []
        self.events: list = []
        self.smokes = 0
        self.probes = 0
        self.rotations = 0
        self.gpu_other = 2 * 2**30  # another process's memory on the same GPU

    # collaborators
    def spawn(self, argv, env, log, pdeathsig):
        script = self.scripts[min(len(self.gens), len(self.scripts) - 1)]
        gen = FakeGeneration(1000 + 10 * len(self.gens), script, self.clock)
        self.gens.append(gen)
        return gen

    def by_pid(self, pid):
        return next((g for g in self.gens if g.pid == pid), None)

    def health(self, url, timeout):
        gen = self.gens[-1]
        return gen.health()

    def generate(self, url, model, key, timeout):
        self.probes += 1
        fut: Future = Future()
        gen = self.gens[-1]
        if gen.generates():
            fut.set_result(ProbeResult(True, 0.05))
        else:
            self.clock.t += timeout  # the client waited its whole timeout
            fut.set_result(ProbeResult(False, timeout, error="timed out"))
        return fut

    def smoke(self, url, model, key):
        self.smokes += 1
        return ProbeResult(True, 0.2, completion_tokens=8, tokens_per_s=40.0, text="hi")

    def engines(self, pgid):
        gen = self.by_pid(pgid)
        return [ProcessRef(gen.engine_pid, 1.0)] if gen and gen.engine_alive() else []

    def pid_alive(self, pid, ct):
        gen = next((g for g in self.gens if g.engine_pid == pid), None)
        return gen is not None and gen.engine_alive()

    def signal_group(self, pgid, sig):
        gen = self.by_pid(pgid)
        if gen is None or not self.members(pgid):
            return False
        gen.signal(sig)  # the whole group: the API server and its EngineCore
        return True

    def members(self, pgid):
        gen = self.by_pid(pgid)
        if gen is None:
            return []
        out = [gen.pid] if gen.alive() else []
        if gen.engine_alive():
            out.append(gen.engine_pid)
        return out

    def gpu_used(self):
        """Memory in use on the GPU: every generation holds its bytes while its tree lives and for
        ``gpu_release_after`` seconds after the tree died (the driver frees it late)."""
        now = self.clock.monotonic()
        used = self.gpu_other
        for g in self.gens:
            if g.killed_at is not None:
                dead_at = g.killed_at
            elif g.script.engine_dies_at is not None and not g.engine_alive():
                dead_at = g.t0 + g.script.engine_dies_at
            else:
                dead_at = None
            if g.script.gpu_bytes and (dead_at is None or now - dead_at < g.script.gpu_release_after):
                used += g.script.gpu_bytes
        return used

    def collaborators(self, gpu: bool = False) -> Collaborators:
        return Collaborators(
            spawn=self.spawn, health=self.health, generate=self.generate, smoke=self.smoke, engines=self.engines,
            pid_alive=self.pid_alive, ops=GroupOps(signal_group=self.signal_group, members=self.members),
            clock=self.clock, wall=lambda: 1_700_000_000.0 + self.clock.monotonic(),
            log_tail=lambda path, n: list(self.gens[-1].script.log[-n:]) if self.gens else [],
            rotate_log=lambda run_dir: setattr(self, "rotations", self.rotations + 1),
            gpu_used=self.gpu_used if gpu else None)

    def lifecycle(self, policy: RestartPolicy | None = None, gpu: bool = False, **probe_overrides) -> Lifecycle:
        probes = ProbeSettings(**{"liveness_interval_s": 30.0, "liveness_timeout_s": 10.0, **probe_overrides})
        target = Target(argv=("vllm", "serve"), env={}, log=Path("/nonexistent/run/vllm.log"),
                        url="http://127.0.0.1:8000", served_model_name="m")
        return Lifecycle(target, self.collaborators(gpu), policy or RestartPolicy(), probes,
                         on_event=self.events.append)

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]


def stop_at(life: Lifecycle, world: World, t: float, sig: int = signal.SIGTERM) -> None:
    """Ask the lifecycle to stop once the fake clock passes ``t`` (as a signal handler would)."""
    real_sleep = world.clock.sleep

    def sleep(s):
        real_sleep(s)
        if world.clock.t >= t:
            life.request_stop(sig)

    world.clock.sleep = sleep


ON_FAILURE = RestartPolicy(mode="on-failure")


# --- start-up -------------------------------------------------------------------------------------------------

def test_a_server_becomes_ready_after_health_and_the_smoke_request():
    world = World(Script(ready_at=3.0))
    life = world.lifecycle()
    stop_at(life, world, 10.0)
    out = life.run()
    [ready] = world.of(Ready)
    assert 3.0 <= ready.ready_s < 4.0 and ready.smoke.ok and world.smokes == 1
    assert ready.engines == (1001,)
    assert out.exit_code == 143 and out.ready_once


def test_waiting_events_carry_the_elapsed_time_and_the_last_log_line():
    world = World(Script(ready_at=5.0, log=["INFO: loading weights", ""]))
    life = world.lifecycle()
    stop_at(life, world, 6.0)
    life.run()
    waits = world.of(Waiting)
    assert waits and waits[-1].last_line == "INFO: loading weights" and waits[-1].elapsed_s >= 3.0


def test_a_start_that_exits_before_ready_is_a_startup_failure_with_the_diagnosis():
    world = World(Script(ready_at=None, exits_at=2.0, exit_code=1,
                         log=["vllm serve: error: argument --max-num-seqs: invalid int value: 'x'"]))
    out = world.lifecycle(ON_FAILURE).run()
    assert out.exit_code == 8 and not out.ready_once
    assert out.failure.reason == "startup_failed" and out.failure.code == 1
    assert out.failure.diagnosis.code == "bad_argument"
    [gave_up] = world.of(GaveUp)
    assert "never became ready" in gave_up.why
    assert len(world.gens) == 1  # on-failure does not retry a server that was never ready


def test_a_start_that_never_answers_times_out_and_its_tree_is_stopped():
    world = World(Script(ready_at=None))
    out = world.lifecycle(ready_timeout_s=30.0).run()
    assert out.failure.reason == "startup_timeout" and out.exit_code == 8
    assert not world.gens[0].alive()
    [failed] = world.of(Failed)
    assert failed.stop is not None and failed.stop.survivors == ()


def test_a_stop_during_startup_stops_the_tree_and_exits_130_for_sigint():
    world = World(Script(ready_at=100.0))
    life = world.lifecycle()
    stop_at(life, world, 5.0, signal.SIGINT)
    out = life.run()
    assert out.exit_code == 130 and not world.gens[0].alive()
    assert [type(e) for e in world.events[-2:]] == [Stopping, Stopped]
    assert world.of(Ready) == []


# --- failures of a ready server -------------------------------------------------------------------------------

def test_policy_no_ends_on_the_first_death_even_when_vllm_exits_0():
    world = World(Script(ready_at=2.0, exits_at=20.0, exit_code=0))
    out = world.lifecycle().run()
    assert out.exit_code == 8 and out.failure.reason == "exited" and out.failure.code == 0
    assert "vLLM exited with code 0 while serving" == out.failure.summary
    assert len(world.gens) == 1


def test_an_engine_death_is_restarted_under_on_failure_and_counted():
    world = World(Script(ready_at=2.0, engine_dies_at=20.0), Script(ready_at=2.0))
    life = world.lifecycle(ON_FAILURE)
    stop_at(life, world, 60.0)
    out = life.run()
    assert out.exit_code == 143 and out.restarts == 1 and len(world.gens) == 2
    [failed] = world.of(Failed)
    assert failed.failure.reason in ("exited", "engine_gone")
    [restart] = world.of(Restarting)
    assert restart.restarts == 1 and restart.delay_s == 0.0 and restart.generation == 2  # the first: at once
    assert not world.gens[0].alive() and not world.gens[0].engine_alive()
    assert [e.generation for e in world.of(Ready)] == [1, 2]
    assert world.rotations == 1  # the first generation's log is kept as vllm.log.1


def test_an_api_server_that_lingers_without_its_engine_is_a_failure():
    world = World(Script(ready_at=2.0, engine_dies_at=20.0, api_exits_after_engine=None))
    out = world.lifecycle(engine_grace_s=5.0).run()
    assert out.failure.reason == "engine_gone"
    assert 25.0 <= out.failure.at - 1_700_000_000.0 < 27.0


def test_health_503_is_an_engine_death():
    world = World(Script(ready_at=2.0, health_503_at=10.0))
    out = world.lifecycle().run()
    assert out.failure.reason == "engine_dead" and "503" in out.failure.summary


def test_health_that_stops_answering_fails_only_after_the_timeout():
    world = World(Script(ready_at=2.0, silent_at=10.0))
    out = world.lifecycle(unresponsive_after_s=30.0).run()
    assert out.failure.reason == "unresponsive"
    assert 40.0 <= out.failure.at - 1_700_000_000.0 < 44.0
    assert all(e.kind == "health" for e in world.of(ProbeFailed))


def test_a_hung_engine_is_found_by_two_failed_generations_in_a_row():
    world = World(Script(ready_at=2.0, hangs_at=40.0), Script(ready_at=2.0))
    life = world.lifecycle(ON_FAILURE, liveness_interval_s=30.0, liveness_timeout_s=10.0, liveness_retry_s=2.0)
    stop_at(life, world, 200.0)
    life.run()
    [failed] = world.of(Failed)
    assert failed.failure.reason == "hung" and "2 generation probes in a row failed" in failed.failure.summary
    # ready at ~2 s; probes at ~32 s (ok), ~62 s (fails: 10 s timeout), ~74 s (fails) -> failure at ~84 s
    assert 80.0 <= failed.failure.at - 1_700_000_000.0 <= 90.0
    assert [e.consecutive for e in world.of(ProbeFailed) if e.generation == 1] == [1, 2]


def test_one_failed_generation_followed_by_a_good_one_is_not_a_hang():
    class Flaky(World):
        def generate(self, url, model, key, timeout):
            self.probes += 1
            fut: Future = Future()
            fut.set_result(ProbeResult(self.probes != 2, 0.1, error="" if self.probes != 2 else "HTTP 500"))
            return fut

    world = Flaky(Script(ready_at=2.0))
    life = world.lifecycle(liveness_interval_s=10.0)
    stop_at(life, world, 100.0)
    out = life.run()
    assert out.exit_code == 143 and world.of(Failed) == []
    assert len(world.of(ProbeSucceeded)) >= 5 and len(world.of(ProbeFailed)) == 1


def test_liveness_probes_come_once_per_interval():
    world = World(Script(ready_at=2.0))
    life = world.lifecycle(liveness_interval_s=30.0)
    stop_at(life, world, 310.0)
    life.run()
    assert world.probes == 10  # ready at ~2 s, then one every 30 s


def test_probes_can_be_turned_off():
    world = World(Script(ready_at=2.0))
    life = world.lifecycle(liveness_interval_s=0)
    stop_at(life, world, 302.0)
    life.run()
    assert world.probes == 0


# --- restart judgement ----------------------------------------------------------------------------------------

def test_a_crash_loop_gives_up_after_max_restarts_with_exit_8():
    dies = Script(ready_at=2.0, exits_at=5.0, exit_code=1, log=["RuntimeError: CUDA error: an illegal memory access"])
    world = World(dies)
    out = world.lifecycle(RestartPolicy(mode="on-failure", max_restarts=3, window_s=600)).run()
    assert out.exit_code == 8 and out.restarts == 3 and len(world.gens) == 4
    [gave_up] = world.of(GaveUp)
    assert "4 failures within 10 min (--max-restarts 3)" in gave_up.why
    assert all(not g.alive() for g in world.gens)


def test_backoff_doubles_up_to_the_maximum():
    world = World(Script(ready_at=1.0, exits_at=2.0, exit_code=1))
    world.lifecycle(RestartPolicy(mode="on-failure", max_restarts=7, window_s=10_000, backoff_initial_s=2,
                                  backoff_max_s=20)).run()
    assert [r.delay_s for r in world.of(Restarting)] == [0, 2, 4, 8, 16, 20, 20]


def test_failures_older_than_the_window_are_forgotten():
    world = World(Script(ready_at=1.0, exits_at=100.0, exit_code=1))
    life = world.lifecycle(RestartPolicy(mode="on-failure", max_restarts=2, window_s=60))
    stop_at(life, world, 1000.0)
    out = life.run()
    assert out.exit_code == 143 and world.of(GaveUp) == [] and out.restarts >= 8
    assert {r.delay_s for r in world.of(Restarting)} == {0.0}


def test_on_failure_does_not_restart_when_the_diagnosis_says_it_cannot_help():
    world = World(Script(ready_at=2.0), Script(ready_at=None, exits_at=3.0, exit_code=1,
                                               log=["ValueError: To serve at least one request with the model's max "
                                                    "seq len (8192), (2.0 GiB KV cache is needed, which is larger "
                                                    "than the available KV cache memory (1.0 GiB)"]))
    world.scripts[0].exits_at = 10.0
    out = world.lifecycle(ON_FAILURE).run()
    assert len(world.gens) == 2 and out.exit_code == 8
    [gave_up] = world.of(GaveUp)
    assert "a restart cannot help" in gave_up.why and out.failure.diagnosis.code == "kv_cache_too_small"


def test_always_retries_even_a_server_that_was_never_ready():
    world = World(Script(ready_at=None, exits_at=1.0, exit_code=1), Script(ready_at=1.0))
    life = world.lifecycle(RestartPolicy(mode="always"))
    stop_at(life, world, 30.0)
    out = life.run()
    assert out.exit_code == 143 and len(world.gens) == 2 and [e.generation for e in world.of(Ready)] == [2]


def test_a_stop_during_the_backoff_exits_143_with_nothing_left():
    world = World(Script(ready_at=1.0, exits_at=5.0, exit_code=1))
    life = world.lifecycle(RestartPolicy(mode="on-failure", backoff_initial_s=30))
    stop_at(life, world, 15.0)  # the second failure (~11 s) waits 30 s before its restart
    out = life.run()
    assert out.exit_code == 143 and len(world.gens) == 2 and not any(g.alive() for g in world.gens)
    assert isinstance(world.events[-1], Stopped) and world.of(Restarting)[-1].delay_s == 30


def test_a_tree_that_ignores_sigterm_is_killed_before_the_restart():
    world = World(Script(ready_at=1.0, engine_dies_at=5.0, api_exits_after_engine=None, ignores_sigterm=True),
                  Script(ready_at=1.0))
    life = world.lifecycle(ON_FAILURE, stop_grace_s=10.0)
    stop_at(life, world, 60.0)
    life.run()
    [failed] = world.of(Failed)
    assert failed.stop.escalated and failed.stop.survivors == ()
    starts = world.of(Starting)
    assert len(starts) == 2 and not world.gens[0].alive()


# --- GPU memory between generations ---------------------------------------------------------------------------

def test_a_restart_waits_until_nvml_shows_the_old_engine_memory_released():
    gib = 2**30
    world = World(Script(ready_at=1.0, engine_dies_at=5.0, gpu_bytes=16 * gib, gpu_release_after=8.0),
                  Script(ready_at=1.0, gpu_bytes=16 * gib))
    life = world.lifecycle(ON_FAILURE, gpu=True)
    stop_at(life, world, 60.0)
    life.run()
    [released] = world.of(MemoryReleased)
    assert released.release.held_bytes == 16 * gib and released.release.released
    assert released.release.baseline_bytes == 2 * gib
    engine_died = world.gens[0].t0 + 5.0
    assert world.gens[1].t0 - engine_died >= 8.0  # the second generation started after the memory came back


def test_memory_that_never_comes_back_is_reported_and_the_wait_is_bounded():
    gib = 2**30
    world = World(Script(ready_at=1.0, engine_dies_at=5.0, gpu_bytes=4 * gib, gpu_release_after=1e9),
                  Script(ready_at=1.0))
    life = world.lifecycle(ON_FAILURE, gpu=True, memory_settle_s=20.0)
    stop_at(life, world, 80.0)
    life.run()
    [released] = world.of(MemoryReleased)
    assert not released.release.released and released.release.used_bytes == 6 * gib
    assert 20.0 <= released.release.waited_s < 21.0


def test_settings_reject_an_unknown_restart_mode():
    with pytest.raises(ValueError, match="restart mode"):
        RestartPolicy(mode="sometimes")
