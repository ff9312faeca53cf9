"""The Prefect flow on a tiny sample, against one session-scoped prefect_test_harness server; the
flow's pure pieces (the clone lock, the thread share, how many members at once) without one."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import yaml

from conftest import ROOT, TINY, TWO, make_repo, set_params, sh, write_sample


@pytest.fixture(scope="session")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness
    with prefect_test_harness(server_startup_timeout=120):
        from prefect.settings import PREFECT_API_URL
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="module")
def flow_repo(tmp_path_factory, mnist, prefect_api):
    """A sample repo with tiny training params and two members committed, and the first flow run
    over it, training both members at once in the one clone."""
    from flows.pipeline import pipeline
    repo = make_repo(tmp_path_factory.mktemp("flow"))
    write_sample(repo / "data/kaggle", mnist, n_train=500, n_test=60)
    set_params(repo, **TINY, **{"ensemble.members": TWO})
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "sample")
    state = pipeline(repo_dir=str(repo), retry_delay_seconds=0, train_concurrency=2, return_state=True)
    return repo, state


def overlap(runs) -> bool:
    """True if every run started before each of the others ended (they ran at the same time)."""
    return max(r.start_time for r in runs) < min(r.end_time for r in runs)


def flow_run_name(state) -> str:
    from prefect import get_client
    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id).name


def experiments(repo) -> dict:
    """{experiment name: its metrics files} from `dvc exp show --json`."""
    shown = json.loads(sh(repo, "dvc", "exp", "show", "--json").stdout)
    return {e["name"]: e["revs"][0]["data"]["metrics"] for rev in shown for e in (rev.get("experiments") or [])}


def task_runs(flow_run_id):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


@pytest.mark.integration
def test_flow_runs_every_stage_then_skips_them(flow_repo):
    from flows import dvc_ops
    from flows.pipeline import pipeline
    repo, state = flow_repo
    assert state.is_completed()
    statuses = state.result()
    assert list(statuses) == dvc_ops.stage_order(repo)
    assert set(statuses.values()) == {"Completed"} and "report" in statuses
    assert {"train@quick-42", "train@quick-7"} <= set(statuses)
    assert (repo / "submission/submission.csv").exists() and (repo / "reports/report.md").exists()
    runs = {r.name: r for r in task_runs(state.state_details.flow_run_id)}
    assert set(runs) == set(statuses) and all(r.state.name == "Completed" for r in runs.values())
    assert overlap([runs["train@quick-42"], runs["train@quick-7"]])   # train_concurrency=2: side by side
    assert sh(repo, "dvc", "status", "--json").stdout.strip() == "{}"   # both recorded in dvc.lock
    assert json.loads((repo / "metrics/evaluate.json").read_text())["ensemble"]["size"] == 2
    assert flow_run_name(state) in experiments(repo)            # the run is recorded

    saved = set(experiments(repo))
    again = pipeline(repo_dir=str(repo), return_state=True)
    assert again.is_completed() and set(again.result().values()) == {"Skipped"}
    assert set(experiments(repo)) == saved                      # nothing changed, nothing saved


def artifacts(state) -> dict:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    return {a.key: a.data for a in arts}


@pytest.mark.integration
def test_artifacts_hold_the_metrics_files_values_and_name_the_experiment(flow_repo):
    repo, state = flow_repo
    by_key = artifacts(state)
    assert set(by_key) == {"digits-metrics", "digits-summary"}
    table = by_key["digits-metrics"]
    [row] = json.loads(table) if isinstance(table, str) else table
    members, ev = (json.loads((repo / f"metrics/{n}.json").read_text()) for n in ("members/quick-42", "evaluate"))
    other = json.loads((repo / "metrics/members/quick-7.json").read_text())
    name = flow_run_name(state)
    assert row == {"experiment": name, "validation_accuracy": ev["accuracy"], "test_accuracy": None,
                   "members": "quick-42, quick-7",
                   "train_seconds": round(members["train_seconds"] + other["train_seconds"], 1),
                   "device": members["device"], "machine": members["machine"],
                   "commit": sh(repo, "git", "rev-parse", "HEAD").stdout.strip()}
    summary = by_key["digits-summary"]
    assert f"Saved as DVC experiment `{name}`" in summary
    assert "Confusion matrix" in summary and "submission.csv" in summary and "dvc metrics diff" in summary


@pytest.mark.integration
def test_overrides_hold_for_one_run_and_each_run_is_an_experiment(flow_repo):
    """Two runs with different overrides: params.yaml untouched, two experiments whose metrics differ
    (one member retrained each time, evaluate with it)."""
    from flows.pipeline import pipeline
    repo, _ = flow_repo
    before = (repo / "params.yaml").read_text()
    names = []
    for epochs in (2, 3):
        state = pipeline(stages=["train@quick-42", "evaluate"], params={"train.presets.quick.epochs": epochs},
                         repo_dir=str(repo), retry_delay_seconds=0, return_state=True)
        assert state.is_completed() and state.result() == {"train@quick-42": "Completed", "evaluate": "Completed"}
        assert (repo / "params.yaml").read_text() == before
        names.append(flow_run_name(state))
    saved = experiments(repo)
    member = "metrics/members/quick-42.json"
    assert [saved[n][member]["data"]["epochs"] for n in names] == [2, 3], json.dumps(saved)[:3000]
    diff = json.loads(sh(repo, "dvc", "metrics", "diff", *names, "--json").stdout)
    assert diff[member]["epochs"] == {"old": 2, "new": 3, "diff": 1}
    assert "metrics/evaluate.json" in diff


FLAKY = """import pathlib, sys
marker = pathlib.Path("attempted")
if not marker.exists():
    marker.touch()
    sys.exit("flaky: first attempt fails")
pathlib.Path("flaky.out").write_text("ok")
"""


@pytest.fixture
def failing_repo(tmp_path):
    """A repository whose stages fail for real: `flaky` on its first attempt only, `broken` always."""
    sh(tmp_path, "git", "init", "-q")
    sh(tmp_path, "dvc", "init", "-q")
    (tmp_path / "flaky.py").write_text(FLAKY)
    (tmp_path / "params.yaml").write_text("{}\n")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "flaky": {"cmd": "python flaky.py", "deps": ["flaky.py"], "outs": ["flaky.out"]},
        "broken": {"cmd": "python -c \"import sys; sys.exit('broken: disk full')\"", "deps": ["flaky.py"]}}}))
    return tmp_path


@pytest.mark.integration
def test_a_stage_that_fails_once_is_retried_and_succeeds(failing_repo, prefect_api):
    from flows.pipeline import pipeline
    state = pipeline(stages=["flaky"], repo_dir=str(failing_repo), retry_delay_seconds=0,
                     save_experiment=False, return_state=True)
    assert state.is_completed() and state.result() == {"flaky": "Completed"}
    [run] = task_runs(state.state_details.flow_run_id)
    assert run.run_count == 2
    assert (failing_repo / "flaky.out").read_text() == "ok"
    assert "flaky" in yaml.safe_load((failing_repo / "dvc.lock").read_text())["stages"]


@pytest.mark.integration
def test_persistent_failure_fails_the_flow_with_the_stage_error(failing_repo, prefect_api):
    from flows.pipeline import pipeline
    state = pipeline(stages=["broken"], repo_dir=str(failing_repo), retries=1, retry_delay_seconds=0,
                     save_experiment=False, return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match=r"(?s)stage broken failed:.*broken: disk full"):
        state.result()
    [run] = task_runs(state.state_details.flow_run_id)
    assert run.run_count == 2


@pytest.mark.integration
def test_invalid_data_fails_at_once_without_retries(tmp_path, mnist, prefect_api):
    from flows.pipeline import pipeline
    repo = make_repo(tmp_path)
    write_sample(repo / "data/kaggle", mnist, n_train=50, n_test=5)
    lines = (repo / "data/kaggle/test.csv").read_text().splitlines()
    lines[2] = "-3" + lines[2][1:]
    (repo / "data/kaggle/test.csv").write_text("\n".join(lines) + "\n")
    state = pipeline(stages=["ingest", "validate"], params={"data.source": "kaggle"}, repo_dir=str(repo),
                     retries=3, retry_delay_seconds=0, return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match=r"column pixel0: 1 value outside 0\.\.255 \(rows 2\)"):
        state.result()
    runs = {r.name: r for r in task_runs(state.state_details.flow_run_id)}
    assert runs["validate"].run_count == 1 and runs["validate"].state.is_failed()


@pytest.mark.integration
def test_unknown_param_override_is_rejected_before_anything_runs(flow_repo):
    from digits.params import ParamsError
    from flows.pipeline import pipeline
    repo, _ = flow_repo
    before = (repo / "params.yaml").read_text()
    with pytest.raises(ParamsError, match="unknown key 'train.presets.quick.epoch'"):
        pipeline(params={"train.presets.quick.epoch": 3}, repo_dir=str(repo))
    assert (repo / "params.yaml").read_text() == before


@pytest.mark.integration
def test_deployments_register_with_schedule_and_pools(prefect_api):
    from prefect import get_client
    env = os.environ | {"PREFECT_API_URL": prefect_api, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    for pool in ("cpu", "gpu"):
        subprocess.run(["prefect", "work-pool", "create", pool, "--type", "process", "--overwrite"],
                       cwd=ROOT, env=env, check=True, capture_output=True)
    proc = subprocess.run(["prefect", "--no-prompt", "deploy", "--all"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with get_client(sync_client=True) as client:
        deps = {d.name: d for d in client.read_deployments()}
    assert {"nightly", "on-demand", "train-gpu"} <= set(deps)
    nightly = deps["nightly"]
    assert nightly.work_pool_name == "gpu" and deps["on-demand"].work_pool_name == "cpu"
    assert deps["train-gpu"].work_pool_name == "gpu"
    [sched] = nightly.schedules
    assert sched.schedule.cron == "0 2 * * *" and sched.schedule.timezone == "UTC" and sched.active
    assert nightly.parameters == {"train_on": "local", "update_branch": "main", "promote": True}
    assert nightly.pull_steps[0]["prefect.deployments.steps.set_working_directory"]["directory"] == "{{ $DIGITS_REPO_DIR }}"
    for name in ("nightly", "on-demand"):        # one run at a time per clone; the next one queues
        assert deps[name].global_concurrency_limit.limit == 1
        assert deps[name].concurrency_options.collision_strategy.value == "ENQUEUE"
    assert deps["train-gpu"].global_concurrency_limit is None   # members run side by side


def project_with_clones(tmp_path, members: dict, names) -> list:
    """An origin repository (the tiny params, `members`, the project's .gitignore, a folder DVC
    remote) committed, and one clone of it per name: (origin, {name: clone})."""
    origin = make_repo(tmp_path / "origin")
    set_params(origin, **TINY, **{"ensemble.members": members})
    shutil.copy(ROOT / ".gitignore", origin / ".gitignore")     # as a clone of the project has it
    sh(origin, "dvc", "remote", "add", "-d", "shared", str(tmp_path / "dvc-remote"))
    sh(origin, "git", "add", "-A")
    sh(origin, "git", "commit", "-qm", "project")
    clones = {name: tmp_path / name for name in names}
    for clone in clones.values():
        sh(tmp_path, "git", "clone", "-q", str(origin), str(clone))
    return origin, clones


@pytest.mark.integration
def test_members_train_side_by_side_on_the_gpu_pool_through_dvc_remote(tmp_path, mnist, prefect_api):
    """Three process workers (one of pool cpu, two of pool gpu, each with its own clone, --limit 1)
    and a folder DVC remote: the pipeline on the cpu worker sends each of two members to the gpu
    pool as its own flow run; both run at once, and the caller ends with both models, the merged
    dvc.lock (`dvc status` clean) and the ensemble's metrics."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.deployments import run_deployment
    origin, clones = project_with_clones(tmp_path, TWO, ("cpu-worker", "gpu-worker-1", "gpu-worker-2"))
    cpu_clone = clones["cpu-worker"]
    write_sample(cpu_clone / "data/kaggle", mnist, n_train=400, n_test=40)   # only the cpu side has data

    env = os.environ | {"PREFECT_API_URL": prefect_api,
                        "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
                        "PYTHONPATH": str(ROOT)}
    for pool in ("cpu", "gpu"):
        subprocess.run(["prefect", "work-pool", "create", pool, "--type", "process", "--overwrite"],
                       cwd=ROOT, env=env, check=True, capture_output=True)
    subprocess.run(["prefect", "--no-prompt", "deploy", "--all"], cwd=ROOT, env=env, check=True, capture_output=True)
    workers = [subprocess.Popen(["prefect", "worker", "start", "--pool", name.split("-")[0], "--limit", "1"],
                                env=env | {"DIGITS_REPO_DIR": str(clone)}, stdout=open(tmp_path / f"{name}.log", "w"),
                                stderr=subprocess.STDOUT)
               for name, clone in clones.items()]
    try:
        run = run_deployment("digits-pipeline/on-demand", parameters={"train_on": "gpu"}, timeout=900,
                             as_subflow=False)
    finally:
        for w in workers:
            w.terminate()
        for w in workers:   # a worker slow to stop (seen once, SQLite busy) is not what this test checks
            try:
                w.wait(30)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()
    logs = "".join((tmp_path / f"{name}.log").read_text() for name in clones)
    assert run.state.is_completed(), f"{run.state}\n{logs[-4000:]}"
    # each member ran as its own flow run of the train deployment, at the same time
    with get_client(sync_client=True) as client:
        remote = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(any_=["train@quick-42", "train@quick-7"])))
    remote = [r for r in remote if r.state.is_completed() and r.start_time >= run.start_time]
    assert sorted(r.name for r in remote) == ["train@quick-42", "train@quick-7"]
    assert overlap(remote), [(r.name, r.start_time, r.end_time) for r in remote]
    # each gpu clone trained one member (its checkpoints) and never had the raw data
    trained = {name: sorted(p.name for p in (clones[name] / "checkpoints").iterdir() if p.is_dir())
               for name in ("gpu-worker-1", "gpu-worker-2")}
    assert sorted(sum(trained.values(), [])) == ["quick-42", "quick-7"], trained
    assert not any((clones[name] / "data/raw").exists() for name in trained)
    # and each gpu clone is as it was: its own params.yaml and no dvc.lock, metrics or .gitignore left
    for name in trained:
        assert sh(clones[name], "git", "status", "--porcelain", "--untracked-files=all").stdout == "", name
        assert (clones[name] / "params.yaml").read_bytes() == (origin / "params.yaml").read_bytes()
    # the cpu clone got both models through the remote, the merged lock and the ensemble's metrics
    for member in TWO:
        assert (cpu_clone / "models" / f"{member}.keras").exists()
    assert sh(cpu_clone, "dvc", "status", "--json").stdout.strip() == "{}"
    assert json.loads((cpu_clone / "metrics/evaluate.json").read_text())["ensemble"]["size"] == 2
    assert (cpu_clone / "submission/submission.csv").exists()
    # the cpu worker's run is an experiment, pushed to the git remote it was cloned from
    assert sh(origin, "git", "for-each-ref", "refs/exps").stdout.strip()


# A stage that holds its run open: it records its pid, then waits for a `release` file (both in
# $HOLD_DIR) and writes the epochs it read from params.yaml, so a test can tell which params it ran with.
HOLD = """import os, pathlib, time, yaml
signals = pathlib.Path(os.environ["HOLD_DIR"])
epochs = yaml.safe_load(open("params.yaml"))["train"]["presets"]["quick"]["epochs"]
(signals / "started").write_text(str(os.getpid()))
deadline = time.time() + 120
while not (signals / "release").exists() and time.time() < deadline:
    time.sleep(0.1)
pathlib.Path("hold.out").write_text(str(epochs))
"""


@pytest.fixture
def held_repo(tmp_path, monkeypatch):
    """A committed repository with the project's params.yaml and one stage, `hold` (HOLD), that
    depends on train.presets.quick.epochs; $HOLD_DIR is a folder outside it."""
    repo, signals = tmp_path / "repo", tmp_path / "signals"
    repo.mkdir()
    signals.mkdir()
    monkeypatch.setenv("HOLD_DIR", str(signals))
    sh(repo, "git", "init", "-q")
    sh(repo, "git", "config", "user.email", "ci@example.com")
    sh(repo, "git", "config", "user.name", "ci")
    sh(repo, "dvc", "init", "-q")
    shutil.copy(ROOT / "params.yaml", repo / "params.yaml")
    (repo / "hold.py").write_text(HOLD)
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"hold": {
        "cmd": "python hold.py", "deps": ["hold.py"], "params": ["train.presets.quick.epochs"],
        "outs": [{"hold.out": {"cache": False}}]}}}))
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "hold")
    return repo, signals


def epochs(repo) -> int:
    return yaml.safe_load((repo / "params.yaml").read_text())["train"]["presets"]["quick"]["epochs"]


def start_held_run(repo, signals, prefect_api, *args) -> subprocess.Popen:
    """`python -m flows.pipeline --stages hold ARGS` in `repo`, in its own process group; returns
    once its hold stage has started (the run holds the clone, its overrides written)."""
    env = os.environ | {"PREFECT_API_URL": prefect_api, "PYTHONPATH": str(ROOT),
                        "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    proc = subprocess.Popen([sys.executable, "-m", "flows.pipeline", "--stages", "hold", *args], cwd=repo,
                            env=env, stdout=open(signals / "run.log", "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + 180
    while not (signals / "started").exists():
        assert proc.poll() is None and time.time() < deadline, (signals / "run.log").read_text()[-3000:]
        time.sleep(0.2)
    return proc


def flow_run_logs(state, wait: float = 15) -> str:
    """The messages of a flow run's logs on the server (they arrive in batches: wait for some)."""
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    deadline = time.time() + wait
    with get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(
                any_=[state.state_details.flow_run_id])))
            text = "\n".join(log.message for log in logs)
            if "Finished in state" in text or time.time() > deadline:
                return text
            time.sleep(0.5)


@pytest.mark.integration
def test_overlapping_runs_in_one_clone_wait_for_each_other_and_keep_params(held_repo, prefect_api):
    """Run A (with an override) holds the clone; run B, started meanwhile, fails naming A when it
    may not wait, and otherwise waits for A, then runs with the original params. params.yaml ends
    byte-identical and both runs are recorded as experiments."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    from flows import dvc_ops
    from flows.pipeline import pipeline
    repo, signals = held_repo
    before, original = (repo / "params.yaml").read_bytes(), epochs(repo)
    a = start_held_run(repo, signals, prefect_api, "--set", "train.presets.quick.epochs=99")
    try:
        assert epochs(repo) == 99                            # A's override is in force
        holder = (repo / dvc_ops.CLONE_LOCK).read_text()
        assert f"(pid {a.pid} on " in holder
        a_name = re.search(r"flow run (\S+)", holder).group(1)

        hasty = pipeline(stages=["hold"], repo_dir=str(repo), clone_wait_seconds=1, return_state=True)
        assert hasty.is_failed()
        with pytest.raises(dvc_ops.CloneBusy, match=rf"{re.escape(str(repo))} is in use by flow run {a_name} \(pid {a.pid} "
                                                    r".*gave up after waiting 1 s \(clone_wait_seconds"):
            hasty.result()
        assert epochs(repo) == 99                            # it touched nothing

        threading.Timer(3, (signals / "release").touch).start()
        patient = pipeline(stages=["hold"], repo_dir=str(repo), clone_wait_seconds=120, return_state=True)
        assert a.wait(60) == 0, (signals / "run.log").read_text()[-3000:]
    finally:
        if a.poll() is None:
            os.killpg(a.pid, signal.SIGKILL)
    assert patient.is_completed() and patient.result() == {"hold": "Completed"}
    assert (repo / "params.yaml").read_bytes() == before
    assert (repo / "hold.out").read_text() == str(original)     # B ran after A, with the original params
    assert f"is in use by flow run {a_name}" in flow_run_logs(patient)
    with get_client(sync_client=True) as client:
        [a_run] = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[a_name])))
        b_run = client.read_flow_run(patient.state_details.flow_run_id)
    assert a_run.state.is_completed() and b_run.start_time < a_run.end_time   # B waited while A ran
    assert {a_name, b_run.name} <= set(experiments(repo))                     # both runs recorded


def test_a_command_started_under_the_clone_lock_holds_it_until_it_exits(tmp_path):
    """A stage that outlives its flow run (the run's process killed) keeps the clone locked: the
    next run waits for the stage, not only for the run."""
    import logging

    from flows import dvc_ops
    (tmp_path / ".dvc").mkdir()
    log = logging.getLogger("test")
    with dvc_ops.clone_lock(tmp_path, "flow run A", 0, log):
        stage = dvc_ops.popen([sys.executable, "-c", "import sys; sys.stdin.read()"], tmp_path, stdin=subprocess.PIPE)
    try:
        with pytest.raises(dvc_ops.CloneBusy, match=r"is in use by .*gave up after waiting 0 s"):
            with dvc_ops.clone_lock(tmp_path, "flow run B", 0, log):
                pass
    finally:
        stage.communicate(b"")                               # the stage ends
    with dvc_ops.clone_lock(tmp_path, "flow run B", 0, log):
        assert (tmp_path / dvc_ops.CLONE_LOCK).read_text() == "flow run B\n"
    assert not dvc_ops._HELD_LOCKS
    done = dvc_ops.run([sys.executable, "-c", "pass"], tmp_path)   # outside the lock: nothing inherited
    assert done.returncode == 0


def test_thread_share_divides_the_cores_and_keeps_the_users_counts(monkeypatch):
    from flows import dvc_ops
    names = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
    for cores, at_once, share in [(2, 2, "1"), (2, 3, "1"), (8, 2, "4"), (8, 1, "8")]:
        monkeypatch.setattr(dvc_ops.os, "cpu_count", lambda: cores)
        assert dvc_ops.thread_share(at_once, environ={}) == dict.fromkeys(names, share)
    assert dvc_ops.thread_share(2, environ={names[0]: "3"}) == {names[0]: "3", names[1]: "4"}


def test_members_at_once_are_capped_by_the_members_and_all_go_to_the_work_pool():
    from flows.pipeline import at_once
    assert at_once(2, 1, None) == 1                 # the default pipeline: one member, all cores, under DVC
    assert at_once(2, 5, None) == 2 and at_once(1, 5, None) == 1 and at_once(0, 3, None) == 1
    assert at_once(2, 5, "digits-train-remote/train-gpu") == 5


def test_a_remote_members_deadline_doubles_on_each_retry():
    from flows.remote_train import deadline
    assert [deadline(60, attempt) for attempt in (1, 2, 3)] == [60, 120, 240]
    assert deadline(60, 0) == 60                    # outside a task run Prefect counts 0 runs
    assert deadline(None, 2) is None                # no deadline: wait for the run to end


@pytest.mark.integration
def test_a_stage_beside_others_runs_on_its_share_of_the_cores(tmp_path, monkeypatch):
    """repro_stage with outside_lock=2 runs the stage's command outside DVC with TensorFlow's
    thread counts set to half the cores, then records it in dvc.lock."""
    from flows import dvc_ops
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        monkeypatch.delenv(name, raising=False)
    sh(tmp_path, "git", "init", "-q")
    sh(tmp_path, "dvc", "init", "-q")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"member": {
        "cmd": 'echo "$TF_NUM_INTRAOP_THREADS $TF_NUM_INTEROP_THREADS" > threads.txt',
        "outs": [{"threads.txt": {"cache": False}}]}}}))
    lines = []
    dvc_ops.repro_stage(tmp_path, "member", False, lines.append, outside_lock=2)
    share = max(1, os.cpu_count() // 2)
    assert (tmp_path / "threads.txt").read_text() == f"{share} {share}\n"
    assert sh(tmp_path, "dvc", "status", "--json").stdout.strip() == "{}"     # recorded in dvc.lock


def test_overrides_are_undone_and_a_bad_one_changes_nothing(tmp_path):
    """params.yaml holds the overrides inside the block only, byte for byte as before after it;
    an override the typed params reject is an error naming its key, and leaves no journal."""
    import logging

    from digits.params import ParamsError
    from flows import dvc_ops
    before = (ROOT / "params.yaml").read_bytes()
    (tmp_path / "params.yaml").write_bytes(before)
    with dvc_ops.overridden_params(tmp_path, {"train.presets.quick.epochs": 24}):
        assert yaml.safe_load((tmp_path / "params.yaml").read_text())["train"]["presets"]["quick"]["epochs"] == 24
        assert (tmp_path / dvc_ops.JOURNAL / "params.yaml").read_bytes() == before
    assert (tmp_path / "params.yaml").read_bytes() == before and not (tmp_path / dvc_ops.JOURNAL / "params.yaml").exists()
    with pytest.raises(ParamsError, match="unknown key 'train.presets.quick.epoch'"):
        with dvc_ops.overridden_params(tmp_path, {"train.presets.quick.epoch": 24}):
            pass
    assert (tmp_path / "params.yaml").read_bytes() == before
    (tmp_path / "params.yaml").write_text("edited by a killed run\n")           # a run killed in the block
    (tmp_path / dvc_ops.JOURNAL).mkdir(parents=True, exist_ok=True)
    (tmp_path / dvc_ops.JOURNAL / "params.yaml").write_bytes(before)
    assert dvc_ops.recover(tmp_path, logging.getLogger("test")) == ["params.yaml"]
    assert (tmp_path / "params.yaml").read_bytes() == before and not (tmp_path / dvc_ops.JOURNAL).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".dvc", "params.yaml"]      # no temporary files left


def test_a_failed_metrics_diff_says_so_and_an_empty_one_is_empty(tmp_path, monkeypatch):
    from flows import dvc_ops
    done = lambda rc, out="", err="": subprocess.CompletedProcess([], rc, stdout=out, stderr=err)
    monkeypatch.setattr(dvc_ops, "run", lambda *a, **k: done(0))
    assert dvc_ops.metrics_diff_md(tmp_path) == ""
    monkeypatch.setattr(dvc_ops, "run", lambda *a, **k: done(0, "| Path | Metric |\n"))
    assert dvc_ops.metrics_diff_md(tmp_path) == "| Path | Metric |"
    monkeypatch.setattr(dvc_ops, "run", lambda *a, **k: done(255, err="ERROR: unexpected error - no HEAD\n"))
    assert dvc_ops.metrics_diff_md(tmp_path) == ("(`dvc metrics diff` failed with exit status 255: "
                                                 "ERROR: unexpected error - no HEAD)")


def test_a_lock_whose_run_has_ended_says_so(tmp_path):
    """The lock names a flow run of this machine whose process is gone while a command it started
    holds the lock: the waiting run's message says that process has ended. A live holder, or one
    on another machine, is named as it is."""
    import logging

    from flows import dvc_ops
    (tmp_path / ".dvc").mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    here = socket.gethostname()
    for pid, host, ended in [(gone.pid, here, True), (os.getpid(), here, False), (gone.pid, "elsewhere", False)]:
        who = f"flow run A (pid {pid} on {host}, since 2026-12-02 10:00:00 UTC)"
        with dvc_ops.clone_lock(tmp_path, who, 0, logging.getLogger("test")):
            stage = dvc_ops.popen([sys.executable, "-c", "import sys; sys.stdin.read()"], tmp_path, stdin=subprocess.PIPE)
        (tmp_path / dvc_ops.CLONE_LOCK).write_text(who + "\n")    # as a killed run leaves it (no clean exit)
        try:
            with pytest.raises(dvc_ops.CloneBusy) as busy:
                with dvc_ops.clone_lock(tmp_path, "flow run B", 0, logging.getLogger("test")):
                    pass
        finally:
            stage.communicate(b"")
        tail = "; that process has ended, a command it started still holds the lock" if ended else ""
        assert f"is in use by {who}{tail}; gave up after waiting 0 s" in str(busy.value)


@pytest.mark.integration
def test_a_killed_run_leaves_its_overrides_and_the_next_run_restores_them_first(held_repo, prefect_api):
    """A run killed (SIGKILL, all its processes) while its overrides are in params.yaml leaves
    them and its journal; the next run in the clone restores params.yaml before anything else,
    says so, and runs with the original params."""
    from flows import dvc_ops
    from flows.pipeline import pipeline
    repo, signals = held_repo
    before, original = (repo / "params.yaml").read_bytes(), epochs(repo)
    killed = start_held_run(repo, signals, prefect_api, "--set", "train.presets.quick.epochs=99")
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    stage_pid, deadline = int((signals / "started").read_text()), time.time() + 30
    while os.path.exists(f"/proc/{stage_pid}") and time.time() < deadline:     # its stage went with it
        time.sleep(0.1)
    assert epochs(repo) == 99                                            # the overrides stayed behind
    assert (repo / dvc_ops.JOURNAL / "params.yaml").read_bytes() == before   # with the original
    (signals / "release").touch()
    state = pipeline(stages=["hold"], repo_dir=str(repo), save_experiment=False, return_state=True)
    assert state.is_completed() and state.result() == {"hold": "Completed"}
    assert (repo / "params.yaml").read_bytes() == before
    assert (repo / "hold.out").read_text() == str(original)
    assert not (repo / dvc_ops.JOURNAL).exists()
    assert f"restored params.yaml of {repo} as it was before an interrupted run" in flow_run_logs(state)


@pytest.mark.integration
def test_a_remote_member_past_its_deadline_is_cancelled_and_fails_naming_it(prefect_api, monkeypatch):
    """A member's flow run that no worker takes (or one whose worker died: it stays Running) is
    cancelled at its deadline and the member fails with a message naming it and the deadline."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
    from prefect.states import Running

    from flows import remote_train
    from flows.dvc_ops import StageFailed
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("digits-train-remote")
        deployment_id = client.create_deployment(flow_id=flow_id, name="no-worker")
    with pytest.raises(StageFailed, match=r"train@quick-7: flow run \S+ of digits-train-remote/no-worker did "
                                          r"not finish within 1 s \(attempt 1; member_timeout_seconds=1 s, doubled on "
                                          r"each retry; it was Scheduled\); cancelled it"):
        remote_train.run_member("digits-train-remote/no-worker", "train@quick-7", {"stage": "train@quick-7"}, 1)
    with get_client(sync_client=True) as client:
        [left] = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id])))
        assert left.state.is_cancelled()                     # no worker will pick it up later
        stuck = client.create_flow_run_from_deployment(deployment_id, state=Running())

    def still_running(*args, **kwargs):
        with get_client(sync_client=True) as client:
            return client.read_flow_run(stuck.id)
    monkeypatch.setattr("prefect.deployments.run_deployment", still_running)
    with pytest.raises(StageFailed, match=r"train@quick-42: .* within 120 s \(attempt 2; member_timeout_seconds=60 s, "
                                          r"doubled on each retry; it was Running\); cancelled it"):
        remote_train.run_member("digits-train-remote/no-worker", "train@quick-42", {}, 60, attempt=2)
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(stuck.id).state.type.value == "CANCELLING"   # its worker would stop it


# Prepended to tasks/train.py in one worker's clone: the member's training there records its pid,
# then holds until the test kills that worker.
HELD_TRAINING = """import os as _os, pathlib as _pathlib, time as _time
_pathlib.Path({started!r}).write_text(str(_os.getpid()))
_time.sleep(900)
"""


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a process and every process under it (its flow runs may have sessions of their own)."""
    import psutil
    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for p in tree:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()
    psutil.wait_procs(tree, timeout=30)


@pytest.mark.integration
def test_a_worker_killed_mid_member_fails_it_at_its_deadline_and_the_other_worker_retrains_it(
        tmp_path, mnist, prefect_api):
    """Worker A (pool gpu) takes the member's flow run and dies (SIGKILL, its flow run too) while
    training; worker B starts. The run, left Running, is cancelled at member_timeout_seconds and
    the member fails naming it and the deadline; the pipeline's retry sends it again and B trains
    it: the caller ends with the member's lock entry and model, and B's clone as it was."""
    import psutil
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId, FlowRunFilterName

    from flows.pipeline import pipeline
    # A starts training about 25 s after dispatch on a 2-core EPYC; the retry on B gets twice the
    # deadline: room for a CPU 3x slower
    member, deadline_s = "quick-42", 90
    _, clones = project_with_clones(tmp_path, {member: TWO[member]}, ("caller", "gpu-a", "gpu-b"))
    caller, a_clone, b_clone = clones.values()
    write_sample(caller / "data/kaggle", mnist, n_train=400, n_test=40)
    started = tmp_path / "a-training-started"
    train_py = a_clone / "tasks/train.py"
    train_py.write_text(HELD_TRAINING.format(started=str(started)) + train_py.read_text())

    env = os.environ | {"PREFECT_API_URL": prefect_api, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
                        "PREFECT_WORKER_QUERY_SECONDS": "2",
                        "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    for pool in ("cpu", "gpu"):         # `deploy --all` needs both
        subprocess.run(["prefect", "work-pool", "create", pool, "--type", "process", "--overwrite"],
                       cwd=ROOT, env=env, check=True, capture_output=True)
    proc = subprocess.run(["prefect", "--no-prompt", "deploy", "--all"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("digits-train-remote/train-gpu")

    def member_runs() -> list:
        """This test's flow runs of the train deployment (not those of earlier tests), oldest first."""
        with get_client(sync_client=True) as client:
            found = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=[deployment.id]),
                name=FlowRunFilterName(any_=[f"train@{member}"])))
        return sorted((r for r in found if r.id not in earlier), key=lambda r: r.created)
    earlier = set()
    earlier = {r.id for r in member_runs()}

    def start_worker(name: str) -> subprocess.Popen:
        return subprocess.Popen(["prefect", "worker", "start", "--pool", "gpu", "--limit", "1", "--name", name],
                                env=env | {"DIGITS_REPO_DIR": str(clones[name])},
                                stdout=open(tmp_path / f"{name}.log", "w"), stderr=subprocess.STDOUT)

    def logs() -> str:
        return "".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(tmp_path.glob("*.log")))

    workers, seen = {"gpu-a": start_worker("gpu-a")}, {}

    def kill_a_mid_training_then_start_b():
        limit = time.time() + deadline_s                # A must take the run before the deadline
        while not started.exists():
            if time.time() > limit:
                seen["error"] = f"worker A never started training within {deadline_s} s\n{logs()}"
                return
            time.sleep(0.2)
        [run] = member_runs()
        seen["first"], seen["first_state"] = run, run.state.type.value
        kill_tree(workers["gpu-a"])
        seen["a_gone"] = not psutil.pid_exists(int(started.read_text()))
        workers["gpu-b"] = start_worker("gpu-b")

    monitor = threading.Thread(target=kill_a_mid_training_then_start_b, daemon=True)
    monitor.start()
    try:
        state = pipeline(stages=["ingest", "validate", "convert", "split", "intake", "train"], repo_dir=str(caller),
                         train_on="gpu", retries=1, retry_delay_seconds=0, retry_jitter_factor=0,
                         member_timeout_seconds=deadline_s, save_experiment=False, return_state=True)
        monitor.join(3 * deadline_s + 60)
    finally:
        for w in workers.values():
            kill_tree(w)
    assert "error" not in seen, seen.get("error")
    assert seen["first_state"] == "RUNNING" and seen["a_gone"], seen
    assert state.is_completed(), f"{state}\n{logs()}"
    # the member failed at its deadline, naming itself, the run and the deadline; then was retried
    first = seen["first"]
    assert re.search(rf"train@{member}: flow run {re.escape(first.name)} of digits-train-remote/train-gpu did not "
                     rf"finish within {deadline_s} s \(attempt 1; member_timeout_seconds={deadline_s} s, doubled on each "
                     r"retry; it was Running\); cancelled it"
                     r".* - Retry 1/1 will start", flow_run_logs(state)), flow_run_logs(state)
    runs = member_runs()
    assert [r.id for r in runs][:1] == [first.id] and len(runs) == 2, [(r.name, r.state) for r in runs]
    assert runs[0].state.type.value in ("CANCELLING", "CANCELLED"), runs[0].state
    assert runs[1].state.is_completed(), runs[1].state
    # A took the first run, B the second: their worker logs say so, and B's clone has the checkpoints
    assert str(runs[0].id) in (tmp_path / "gpu-a.log").read_text(), logs()
    assert str(runs[1].id) in (tmp_path / "gpu-b.log").read_text(), logs()
    assert (b_clone / "checkpoints" / member).is_dir() and not (a_clone / "checkpoints" / member).exists()
    assert sh(b_clone, "git", "status", "--porcelain", "--untracked-files=all").stdout == ""
    # the caller has the member's lock entry and model
    assert f"train@{member}" in yaml.safe_load((caller / "dvc.lock").read_text())["stages"]
    assert (caller / "models" / f"{member}.keras").exists()
