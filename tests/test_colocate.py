"""Several servers on one box, without a GPU: budgets (fake NVML), the start lock (real flock, and a fake one
in the lifecycle's scripted histories), the settle wait, sleep accounting, idle sleep, and the route's rules."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from bootstrap.core import colocate, route
from bootstrap.core.checks import Status
from bootstrap.core.colocate import (
    GIB,
    IdleTracker,
    RequestCounts,
    SleepReport,
    cpu_budget,
    gpu_budgets,
    kv_cache_tokens,
    lock_names,
)
from bootstrap.core.lifecycle import (
    Failed,
    GpuSettling,
    Ready,
    Slept,
    Starting,
    StartLockReleased,
    WaitingForStartLock,
    Woke,
)
from bootstrap.core.runs import RunRecord
from bootstrap.core.startlock import FileStartLock, LockHolder
from bootstrap.probes import nvml as nvml_probe
from tests.support import fake_nvml as fakes
from tests.test_doctor_checks import VLLM_CPU, make_facts, one
from tests.test_lifecycle import Script, World, stop_at

UUID = "GPU-00000000-0000-0000-0000-000000000000"
REPO = __import__("pathlib").Path(__file__).resolve().parent.parent


def run(name, *, device="gpu", util=0.0, kv=0, state="ready", gpus=(UUID,), kind="server", kv_at=1.0, port=8000):
    return RunRecord(name=name, profile="p", run_dir=f"/runs/{name}", pid=1000, pid_create_time=1.0, pgid=1000,
                     host="127.0.0.1", port=port, served_model_name=f"m-{name}", model_id="x", model_path="/m",
                     started_at=1.0, device=device, gpus=gpus if device == "gpu" else (), gpu_memory_utilization=util,
                     cpu_kvcache_bytes=kv, state=state, kind=kind, kv_cache_at=kv_at)


# --- budgets ----------------------------------------------------------------------------------------------------

def test_a_gpu_share_that_fits_beside_the_running_servers_passes():
    snap = nvml_probe.snapshot(fakes.one_h100(used=30 * GIB))
    [b] = gpu_budgets(snap.gpus, 0.2, [run("a", util=0.35)])
    assert b.fits and b.held == 0.35


def test_shares_over_095_are_refused_with_a_suggestion_that_fits():
    snap = nvml_probe.snapshot(fakes.one_h100(used=60 * GIB))
    [b] = gpu_budgets(snap.gpus, 0.5, [run("a", util=0.35), run("b", util=0.3)])
    assert not b.fits_share and b.suggestion == 0.24  # min(0.95 - 0.65, free 20/80 - 0.01) rounded down


def test_the_budget_check_names_each_server_and_what_it_holds():
    facts = make_facts("tiny", runs=[run("chat", util=0.6), run("small", util=0.3)], device="gpu",
                       extra_args=("--gpu-memory-utilization", "0.2"))
    r = one(facts, "budget")
    assert r.status == Status.FAIL
    assert "'chat' holds 0.6 (48.0 GiB)" in r.summary and "'small' holds 0.3" in r.summary
    assert "--gpu-memory-utilization 0.05" in r.hint
    assert [s["name"] for s in r.data["gpus"][0]["servers"]] == ["chat", "small"]


def test_servers_on_another_gpu_and_the_route_do_not_count():
    facts = make_facts("tiny", runs=[run("other", util=0.9, gpus=("GPU-other",)), run("route", kind="route")],
                       device="gpu")
    assert one(facts, "budget").status == Status.OK


def test_a_share_within_095_that_nvml_cannot_give_is_refused_too():
    facts = make_facts("tiny", nvml=fakes.one_h100(used=75 * GIB), device="gpu")  # asks 0.2 of 80 GiB, 5 free
    r = one(facts, "budget")
    assert r.status == Status.FAIL and "NVML shows 5.0 GiB free" in r.summary


def test_cpu_kv_cache_that_does_not_fit_the_ram_names_the_other_servers():
    runs = [run("a", device="cpu", kv=GIB), run("b", device="cpu", kv=2 * GIB, state="starting", kv_at=0.0)]
    text = (REPO / "profiles" / "tiny.toml").read_text().replace('VLLM_CPU_KVCACHE_SPACE = "1"',
                                                                  'VLLM_CPU_KVCACHE_SPACE = "99"')
    facts = make_facts(dists=VLLM_CPU, device="cpu", runs=runs, prof_text=text)
    r = one(facts, "budget")
    assert r.status == Status.FAIL
    assert "'a' (1.0 GiB KV cache, ready)" in r.summary and "'b' (2.0 GiB KV cache, starting)" in r.summary
    # 100 GiB available, less b's 2 + 1.5 GiB still to come, less 1.5 GiB overhead: 95 GiB fits.
    assert "VLLM_CPU_KVCACHE_SPACE=95" in r.hint


def test_cpu_budget_counts_servers_still_starting_against_the_room():
    b = cpu_budget(4 * GIB, 10 * GIB, [run("s", device="cpu", kv=4 * GIB, state="waiting", kv_at=0.0)])
    assert b.pending_bytes == int(5.5 * GIB) and not b.fits and b.suggestion_gib == 3


def test_unset_or_bad_kvcache_space_is_vllms_default():
    assert colocate.cpu_kvcache_bytes(None) == colocate.cpu_kvcache_bytes("x") == 4 * GIB
    assert colocate.cpu_kvcache_bytes("0.5") == GIB // 2


# --- the start lock ---------------------------------------------------------------------------------------------

def test_a_second_holder_sees_who_holds_the_lock_until_it_is_released(tmp_path):
    a = FileStartLock(tmp_path, ("cpu",), LockHolder("alpha", 111, 0.0))
    b = FileStartLock(tmp_path, ("cpu",), LockHolder("beta", 222, 0.0))
    assert a.try_acquire() is None and a.held
    holder = b.try_acquire()
    assert holder is not None and (holder.name, holder.pid, holder.lock) == ("alpha", 111, "cpu") and not b.held
    a.release()
    assert b.try_acquire() is None and b.held
    b.release()


def test_several_gpu_locks_are_taken_all_or_none(tmp_path):
    first = FileStartLock(tmp_path, ("gpu-1",), LockHolder("one", 1, 0.0))
    both = FileStartLock(tmp_path, ("gpu-0", "gpu-1"), LockHolder("tp2", 2, 0.0))
    other = FileStartLock(tmp_path, ("gpu-0",), LockHolder("zero", 3, 0.0))
    assert first.try_acquire() is None
    assert both.try_acquire().name == "one"
    assert other.try_acquire() is None  # gpu-0 was let go when gpu-1 could not be had
    other.release()
    first.release()


def test_lock_names_follow_the_device():
    assert lock_names("cpu", ()) == ("cpu",)
    assert lock_names("gpu", ("GPU-b", "index:0")) == ("gpu-GPU-b", "gpu-index_0")


def test_kv_cache_size_is_read_from_vllms_log_line():
    assert kv_cache_tokens(["(EngineCore pid=1) INFO [kv_cache_utils.py:2327] CPU KV cache size: 2,097,152 tokens, "
                            "Maximum concurrency for 512 tokens per request: 4096.00x"]) == 2097152
    assert kv_cache_tokens(["GPU KV cache size: 1,234 tokens"]) == 1234
    assert kv_cache_tokens(["Using LBHNC KV cache layout."]) is None


class FakeLock:
    """A start lock held by another server until the fake clock passes ``free_at``."""

    def __init__(self, clock, free_at: float) -> None:
        self.clock, self.free_at = clock, free_at
        self.held = False
        self.taken_at: float | None = None
        self.released_at: float | None = None

    def try_acquire(self):
        if self.clock.monotonic() < self.free_at:
            return LockHolder("first", 4242, 0.0, "cpu")
        self.held, self.taken_at = True, self.clock.monotonic()
        return None

    def release(self):
        self.held, self.released_at = False, self.clock.monotonic()


class LockWorld(World):
    def __init__(self, *scripts, free_at=20.0):
        super().__init__(*scripts)
        self.lock = FakeLock(self.clock, free_at)

    def collaborators(self, gpu=False):
        return replace(super().collaborators(gpu), start_lock=self.lock)


def test_a_second_server_waits_for_the_lock_and_lets_go_when_vllm_logs_its_kv_cache():
    world = LockWorld(Script(ready_at=10.0, log=["INFO loading", "CPU KV cache size: 4,096 tokens"]), free_at=20.0)
    life = world.lifecycle()
    stop_at(life, world, 40.0)
    life.run()
    waits = world.of(WaitingForStartLock)
    assert waits and waits[0].holder.name == "first" and waits[0].holder.pid == 4242
    assert world.gens[0].t0 >= 20.0  # spawned only once the other server let go
    [released] = world.of(StartLockReleased)
    assert released.reason == "kv_cache" and released.kv_cache_tokens == 4096 and released.waited_s >= 20.0
    assert world.lock.released_at < world.gens[0].t0 + 1.0  # at the KV line, long before ready (10 s)
    kinds = [type(e) for e in world.events]
    assert kinds.index(StartLockReleased) < kinds.index(Ready)


def test_the_lock_is_let_go_when_the_start_fails_or_when_ready_comes_first():
    world = LockWorld(Script(ready_at=None, exits_at=3.0, exit_code=1), free_at=0.0)
    world.lifecycle().run()
    assert [e.reason for e in world.of(StartLockReleased)] == ["failed"] and not world.lock.held
    world = LockWorld(Script(ready_at=2.0), free_at=0.0)  # no KV line in its log
    life = world.lifecycle()
    stop_at(life, world, 10.0)
    life.run()
    assert [e.reason for e in world.of(StartLockReleased)] == ["ready"]


def test_a_stop_while_waiting_for_the_lock_starts_nothing():
    world = LockWorld(Script(), free_at=1e9)
    life = world.lifecycle()
    stop_at(life, world, 15.0)
    out = life.run()
    assert out.exit_code == 143 and world.gens == [] and world.of(Starting) == []


# --- settle wait ------------------------------------------------------------------------------------------------

def test_a_first_start_waits_until_gpu_memory_stops_falling():
    world = World(Script(ready_at=1.0))
    freeing_until = 6.0  # a server that just died: its 16 GiB drain away over 6 s

    def used():
        t = world.clock.monotonic()
        return world.gpu_other + int(16 * GIB * max(0.0, 1 - t / freeing_until))

    world.gpu_used = used
    life = world.lifecycle(gpu=True)
    stop_at(life, world, 30.0)
    life.run()
    [settling] = world.of(GpuSettling)
    assert settling.release.released and settling.release.waited_s >= 5.0
    assert world.gens[0].t0 >= 5.0


def test_memory_that_never_settles_is_reported_with_its_holders_and_the_wait_is_bounded():
    world = World(Script(ready_at=1.0))
    world.gpu_used = lambda: int(world.clock.monotonic() * GIB)  # something keeps allocating
    life = world.lifecycle(gpu=True, memory_settle_s=10.0)
    life.c.gpu_holders = lambda: ["PID 4242 (python) on GPU 0 70.0 GiB"]
    stop_at(life, world, 30.0)
    life.run()
    [settling] = world.of(GpuSettling)
    assert not settling.release.released and settling.release.holders == ("PID 4242 (python) on GPU 0 70.0 GiB",)
    assert 10.0 <= world.gens[0].t0 < 12.0


# --- sleep ------------------------------------------------------------------------------------------------------

def test_a_sleep_that_frees_too_little_is_flagged():
    ok = SleepReport(1, before_bytes=40 * GIB, after_bytes=4 * GIB, server_bytes=38 * GIB, took_s=0.8)
    bad = SleepReport(1, before_bytes=40 * GIB, after_bytes=33 * GIB, server_bytes=38 * GIB, took_s=0.8)
    assert not ok.too_little and ok.freed_bytes == 36 * GIB
    assert bad.too_little and bad.freed_bytes == 7 * GIB


def test_idle_tracking_does_not_count_vbootss_own_probes():
    t = IdleTracker(60.0, now=0.0)
    t.sample(RequestCounts(5, 0), 0.0)
    for now in (30.0, 60.0, 90.0):
        t.probe_finished()
        t.sample(RequestCounts(5 + now / 30, 0), now)  # one probe per 30 s, nothing else
    assert t.due(90.0)
    t.sample(RequestCounts(9, 0), 95.0)  # a real request
    assert not t.due(100.0) and t.idle_for(100.0) == 5.0
    t.sample(RequestCounts(9, 1), 200.0)  # one in flight keeps it awake
    assert not t.due(200.0)


class SleepyWorld(World):
    """A sleep-mode server: /is_sleeping, /metrics counters (probes count as finished requests), /sleep."""

    def __init__(self, *scripts):
        super().__init__(*scripts)
        self.sleeping = False
        self.finished = 1.0  # the smoke request
        self.external_at: list[float] = []

    def generate(self, url, model, key, timeout):
        self.finished += 1
        return super().generate(url, model, key, timeout)

    def collaborators(self, gpu=False):
        def counts(url, key):
            return RequestCounts(self.finished + sum(1 for t in self.external_at if t <= self.clock.t), 0)

        def sleep(url, key, level):
            self.sleeping = True
            return True

        return replace(super().collaborators(gpu), is_sleeping=lambda url, key: self.sleeping,
                       request_counts=counts, sleep=sleep)


def test_idle_sleep_puts_the_server_to_sleep_and_pauses_the_probes():
    world = SleepyWorld(Script(ready_at=2.0))
    world.external_at = [50.0]
    life = world.lifecycle(liveness_interval_s=10.0, idle_sleep_s=120.0, sleep_check_s=5.0)
    stop_at(life, world, 400.0)
    life.run()
    [slept] = world.of(Slept)
    assert slept.reason == "idle" and slept.level == 1 and slept.idle_s >= 120.0
    # The last outside request came at 50 s: asleep ~120 s later although a probe ran every 10 s meanwhile, and
    # no probe after that (one would wake it, or hang): ~17 probes in all, not ~40.
    assert world.sleeping and 14 <= world.probes <= 19, world.probes


def test_a_server_put_to_sleep_outside_is_followed_and_woken_again():
    world = SleepyWorld(Script(ready_at=2.0))
    life = world.lifecycle(liveness_interval_s=10.0, sleep_check_s=5.0)
    real_sleep = world.clock.sleep

    def sleep(s):
        real_sleep(s)
        world.sleeping = 40.0 <= world.clock.t < 100.0
        if world.clock.t >= 150.0:
            life.request_stop(15)

    world.clock.sleep = sleep
    out = life.run()
    assert out.exit_code == 143 and [e.reason for e in world.of(Slept)] == ["outside"] and len(world.of(Woke)) == 1
    assert world.of(Failed) == []


# --- the route's rules ------------------------------------------------------------------------------------------

def test_routes_follow_ready_servers_and_leave_out_a_server_with_another_key():
    runs = [run("a", port=8001), run("b", port=8002, state="starting"), run("c", port=8003, state="sleeping"),
            run("d", port=8004), run("r", kind="route", port=8080)]
    desired, skipped = route.desired_routes(runs, (), "k1", lambda r: "k2" if r.name == "d" else None)
    assert desired == {"http://127.0.0.1:8001": "m-a", "http://127.0.0.1:8003": "m-c"}
    assert {s.name: s.why for s in skipped} == {"b": "it is starting",
                                                "d": "it was started with another API key than the route's"}
    assert route.desired_routes(runs, ("a",), None)[0] == {"http://127.0.0.1:8001": "m-a"}


def test_reconcile_adds_missing_workers_and_drops_gone_or_renamed_ones():
    change = route.reconcile({"u1": "a", "u2": "b"}, {"u2": "old", "u3": "c"})
    assert change.add == (("u1", "a"), ("u2", "b")) and change.remove == ("u2", "u3")
    assert route.reconcile({"u1": "a"}, {"u1": "a"}) == route.Reconcile((), ())


def test_models_are_answered_in_the_openai_shape_whatever_the_router_says():
    old = route.openai_models(200, b'{"models": ["b", "a"]}')
    assert old["object"] == "list" and [m["id"] for m in old["data"]] == ["a", "b"]
    new = {"object": "list", "data": [{"id": "a", "object": "model"}]}
    assert route.openai_models(200, json.dumps(new).encode()) == new
    assert route.openai_models(503, b"No models available") == {"object": "list", "data": []}


def test_the_front_forwards_only_the_openai_api_and_checks_the_key_there():
    assert route.allowed_path("/v1/chat/completions") and route.allowed_path("/health")
    for path in ("/sleep", "/wake_up", "/collective_rpc", "/metrics", "/v1"):
        assert not route.allowed_path(path), path
    assert route.authorized("/v1/models", "Bearer k", "k") and not route.authorized("/v1/models", "Bearer x", "k")
    assert not route.authorized("/v1/models", None, "k") and route.authorized("/health", None, "k")
    assert route.authorized("/v1/models", None, None)


def test_a_waiting_record_without_a_vllm_process_is_valid_and_stoppable(tmp_path):
    from dataclasses import asdict

    from bootstrap.core.runs import record_from_json
    from bootstrap.core.servers import judge_server

    d = tmp_path / "w"
    rec = replace(run("w", device="cpu"), run_dir=str(d), pid=0, pid_create_time=0.0, pgid=0, state="waiting",
                  supervisor_pid=4242, supervisor_create_time=5.0)
    back = record_from_json(json.loads(json.dumps(asdict(rec))), d)
    assert back.state == "waiting" and back.pid == 0
    assert judge_server(back, lambda pid: None).gone
    with pytest.raises(ValueError, match="process ID"):
        record_from_json(json.loads(json.dumps({**asdict(rec), "state": "ready"})), d)
