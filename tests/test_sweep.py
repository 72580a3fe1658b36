"""Sweeps: sweep files, points and keys, resuming, Dask (local cluster, SIGKILL and rerun,
an existing scheduler), tables, plots and user mistakes.

Points are tiny learning runs (3 workers, breast cancer, 30-60 steps: a tenth of a second
each); the Dask tests start real worker processes, and every process a test starts is
stopped by a finalizer, also when the test fails.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mixsim.cli import main
from mixsim.report import metrics_csv
from mixsim.sweep import (
    aggregate,
    load_sweep,
    point_key,
    results_table,
    run_point,
    run_sweep,
)

BASE = """\
name: tiny
workers: 3
protocol: {name: sync-ring}
problem: {name: logistic}
data: {name: breast-cancer, batch: 16}
optimizer:
  compressor: {name: top-k, density: 0.2}
  memory: error-feedback
  method: {name: amsgrad, lr: 0.01}
steps: 30
eval_every: 10
"""

SWEEP = """\
name: tiny-sweep
kind: run
base: base.yaml
grid:
  protocol.name: [sync-ring, async-ring]
  optimizer.method.lr: [0.01, 0.03]
zip:
  optimizer.compressor.name: [top-k, rand-k]
  optimizer.compressor.density: [0.2, 0.3]
seeds: 2
overrides: {steps: 30}
"""

#: Dask workers start, import mixsim and load numba's cache in a few seconds; a loaded
#: machine can make that much slower.
STARTUP = 120


def _write(folder: Path, sweep: str = SWEEP, name: str = "sweep.yaml") -> Path:
    (folder / "base.yaml").write_text(BASE)
    path = folder / name
    path.write_text(sweep)
    return path


def _points(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / "points").glob("*.json")}


def _metrics(out: Path) -> dict[str, str]:
    """Each point's metrics as the CSV text a run writes (exact floats)."""
    return {key: metrics_csv(record["rows"]) for key, record in _points(out).items()}


def _exit_code(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


# -- sweep files and points -----------------------------------------------------------------

def test_points_are_grid_times_zip_times_seeds(tmp_path):
    sweep = load_sweep(_write(tmp_path))
    assert sweep.axes == ["protocol.name", "optimizer.method.lr", "optimizer.compressor.name",
                          "optimizer.compressor.density"]
    assert len(sweep.points) == 2 * 2 * 2 * 2
    first = sweep.points[0]
    assert first.axes == {"protocol.name": "sync-ring", "optimizer.method.lr": 0.01,
                          "optimizer.compressor.name": "top-k",
                          "optimizer.compressor.density": 0.2}
    assert first.seed == 0 and first.config["seed"] == 0 and first.config["steps"] == 30
    assert {(p.axes["optimizer.compressor.name"], p.axes["optimizer.compressor.density"])
            for p in sweep.points} == {("top-k", 0.2), ("rand-k", 0.3)}
    assert len({p.key for p in sweep.points}) == len(sweep.points)
    # The key depends on the configuration only: the same point from an inline base, under
    # another scenario name and sweep name, has the same key.
    inline = SWEEP.replace("base: base.yaml", "base:\n" + "".join(
        f"  {line}\n" for line in BASE.replace("name: tiny", "name: other").splitlines()))
    again = load_sweep(_write(tmp_path, inline.replace("tiny-sweep", "renamed"), "b.yaml"))
    assert [p.key for p in again.points] == [p.key for p in sweep.points]
    assert point_key("run", first.config) == first.key


def test_serial_sweep_resumes_and_records_failures(tmp_path):
    sweep_file = _write(tmp_path, SWEEP.replace("[0.01, 0.03]", "[0.01, 1.0e+30]"))
    out = tmp_path / "out"
    outcome = run_sweep(sweep_file, out)
    # Only running finds that the points at lr 1e30 diverge: they are recorded as failed,
    # with the error.
    assert (outcome.total, outcome.done, outcome.failed) == (16, 8, 8)
    records = _points(out)
    assert len(records) == 16
    failed = [r for r in records.values() if r["status"] == "failed"]
    assert len(failed) == 8 and all("diverged at step" in r["error"] for r in failed)
    done = [r for r in records.values() if r["status"] == "done"]
    assert all(r["rows"][-1]["step"] == 30 and r["summary"]["complete"] for r in done)
    before = {p.name: p.read_bytes() for p in (out / "points").iterdir()}
    again = run_sweep(sweep_file, out)
    assert (again.skipped, again.done, again.failed) == (16, 0, 8)
    assert {p.name: p.read_bytes() for p in (out / "points").iterdir()} == before
    retried = run_sweep(sweep_file, out, retry_failed=True)
    assert (retried.skipped, retried.done, retried.failed) == (8, 0, 8)
    columns, table = results_table(out)
    assert columns[:7] == ["point", "status", "protocol.name", "optimizer.method.lr",
                           "optimizer.compressor.name", "optimizer.compressor.density", "seed"]
    assert len(table) == 16 and {r["status"] for r in table} == {"done", "failed"}
    assert (out / "results.csv").read_text().count("\n") == 17


def test_aggregate_mean_and_t_interval(tmp_path):
    from scipy import stats

    out = tmp_path / "out"
    run_sweep(_write(tmp_path, SWEEP.replace("seeds: 2", "seeds: 3")), out)
    _, table = results_table(out)
    columns, groups = aggregate(out)
    assert len(groups) == 8 and all(g["seeds"] == 3 and g["failed"] == 0 for g in groups)
    assert "loss_mean" in columns and "seed" not in columns
    group = groups[0]
    losses = [r["loss"] for r in table
              if all(r[k] == group[k] for k in ("protocol.name", "optimizer.method.lr",
                                                 "optimizer.compressor.name"))]
    low, high = stats.t.interval(0.95, 2, loc=sum(losses) / 3, scale=stats.sem(losses))
    assert group["loss_mean"] == pytest.approx(sum(losses) / 3)
    assert (group["loss_low"], group["loss_high"]) == pytest.approx((low, high))
    png = tmp_path / "lr.png"
    assert main(["plot", str(out), "--metric", "loss", "--x", "optimizer.method.lr",
                 "--group", "protocol.name", "--out", str(png), "--logx"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curves = tmp_path / "steps.png"
    assert main(["plot", str(out), "--metric", "loss", "--x", "step", "--rows", "all",
                 "--group", "protocol.name", "--out", str(curves)]) == 0
    assert curves.stat().st_size > 0


def test_mixing_time_sweep(tmp_path):
    sweep_file = _write(tmp_path, """\
name: rings
kind: mixing-time
protocol: async-ring
workers: [3, 4]
runs: 6
grid:
  protocol: [async-ring, sync-ring]
seeds: [0, 5]
""")
    out = tmp_path / "out"
    assert main(["sweep", str(sweep_file), "--out", str(out), "--serial", "--quiet"]) == 0
    _, table = results_table(out)
    assert len(table) == 2 * 2 * 2  # protocols x seeds x workers
    from mixsim.mixing import mixing_time

    serial = mixing_time("async-ring", [3, 4], runs=6, seed=5)
    rows = [r for r in table if r["protocol"] == "async-ring" and r["seed"] == 5]
    assert [r["t_mix"] for r in rows] == [s.t_mix for s in serial]
    _, groups = aggregate(out)
    ring = [g for g in groups if g["protocol"] == "sync-ring"]
    exact = [r.t_mix for r in mixing_time("sync-ring", [3, 4], method="trace")]
    assert [(g["workers"], g["t_mix_mean"], g["seeds"]) for g in ring] == \
        [(3, exact[0], 2), (4, exact[1], 2)]
    assert ring[0]["t_mix_low"] == ring[0]["t_mix_high"] == exact[0]  # no spread
    png = tmp_path / "t.png"
    assert main(["plot", str(out), "--metric", "t_mix", "--x", "workers", "--group",
                 "protocol", "--out", str(png)]) == 0
    # workers as an axis: one point per number of workers, the same values.
    by_n = _write(tmp_path, """\
name: rings-by-n
kind: mixing-time
protocol: async-ring
runs: 6
grid: {workers: [3, 4]}
seeds: [5]
""", "by_n.yaml")
    run_sweep(by_n, tmp_path / "by_n")
    _, split = results_table(tmp_path / "by_n")
    assert [(r["workers"], r["t_mix"]) for r in split] == [(3, serial[0].t_mix),
                                                           (4, serial[1].t_mix)]


@pytest.mark.parametrize(
    ("sweep", "needles"),
    [
        (SWEEP.replace("grid:", "gird:"), ["sweep.yaml:4", "gird", "did you mean 'grid'"]),
        (SWEEP.replace("[0.01, 0.03]", "[0.01, -1]"),
         ["sweep.yaml:6: optimizer.method.lr: -1", "optimizer.method.lr=-1"]),
        (SWEEP.replace("[top-k, rand-k]", "[top-k]"), ["sweep.yaml", "zip", "equal lengths"]),
        (SWEEP.replace("protocol.name: [sync-ring", "protocol.name: [sync-rnig"),
         ["sweep.yaml:5", "sync-rnig", "did you mean sync-ring"]),
        (SWEEP.replace("protocol.name:", "protocol.nmae:"),
         ["sweep.yaml:5", "protocol.nmae", "did you mean 'name'"]),
        (SWEEP.replace("base.yaml", "missing.yaml"), ["missing.yaml", "no such base"]),
        (SWEEP.replace("seeds: 2", "seeds: two"), ["sweep.yaml:10", "seeds", "'two'"]),
        (SWEEP.replace("overrides: {steps: 30}", "overrides: {steps: 0}"),
         ["sweep.yaml:11: steps: 0: Input should be greater than or equal to 1"]),
        (SWEEP.replace("kind: run", "kind: run\nruns: 5"), ["sweep.yaml:3", "runs",
                                                             "mixing-time"]),
        (SWEEP.replace("[0.2, 0.3]", "[0.2, 7]"),
         ["sweep.yaml:9: optimizer.compressor.density", "7", "optimizer.compressor.density=7"]),
        (SWEEP.replace("[top-k, rand-k]", "[top-k, rnad-k]"),
         ["sweep.yaml:8: optimizer.compressor.name", "rnad-k", "rand-k"]),
        (SWEEP.replace("{steps: 30}", "{steps: 30, optimizer.method.name: amsgard}"),
         ["sweep.yaml:11: optimizer.method.name", "amsgard", "amsgrad"]),
    ],
)
def test_user_mistakes_give_one_line_and_exit_2(tmp_path, capsys, sweep, needles):
    path = _write(tmp_path, sweep)
    assert _exit_code(["sweep", str(path), "--serial", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and err.startswith("mixsim: error:")
    for needle in needles:
        assert needle in err
    assert not (tmp_path / "o").exists()  # validated before anything ran or was written


#: Mistakes only building a point's learner finds: a placement the protocol lacks, a top-k
#: ``k`` above the model's dimension (breast cancer's logistic model has 30 parameters).
_BUILD_MISTAKES = [
    (SWEEP.replace("protocol.name: [sync-ring, async-ring]", "protocol.name: [sync-ps, sync-ring]")
     .replace("{steps: 30}", "{steps: 30, optimizer.placement: server}"),
     ["sweep.yaml:11: optimizer.placement", "'server'", "sync-ring has none",
      "protocol.name='sync-ring'"]),
    (SWEEP.replace("optimizer.compressor.density: [0.2, 0.3]", "optimizer.compressor.k: [31, 4]")
     .replace("{steps: 30}", "{steps: 30, optimizer.compressor.density: null}"),
     ["sweep.yaml:9: optimizer.compressor.k", "got 31", "optimizer.compressor.name='top-k'",
      "optimizer.compressor.k=31"]),
]


@pytest.mark.parametrize(("sweep", "needles"), _BUILD_MISTAKES)
@pytest.mark.parametrize("command", ["sweep", "validate"])
def test_every_point_is_built_before_any_runs(tmp_path, capsys, sweep, needles, command):
    path = _write(tmp_path, sweep)
    argv = ["sweep", str(path), "--serial", "--out", str(tmp_path / "o")] \
        if command == "sweep" else ["validate", str(path)]
    assert _exit_code(argv) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.count("\n") == 1 and "Traceback" not in err and err.startswith("mixsim: error:")
    assert str(path) in err and "(at point " in err and "seed" not in err
    for needle in needles:
        assert needle in err
    assert captured.out == "" and not (tmp_path / "o").exists()  # no point ran


def test_each_distinct_configuration_is_built_once(tmp_path, monkeypatch):
    from mixsim import learning

    built = []
    real = learning._Learner

    def counting(scenario, source):
        built.append(scenario.seed)
        return real(scenario, source)

    monkeypatch.setattr(learning, "_Learner", counting)
    sweep = load_sweep(_write(tmp_path, SWEEP.replace("seeds: 2", "seeds: 3")))
    # 24 points, 8 configurations that differ in more than the seed: 8 learners built.
    assert len(sweep.points) == 24 and len(built) == 8


#: AllReduce after every third synchronous round: t_mix = 3 n exactly (BRIEF, AllReduce).
EVERY_THIRD = """\
name: every-third
summary: AllReduce every third round.
schedule: sync
communication:
  - {on: round, every: 3, op: average, args: {group: workers}}
"""


def test_paths_in_a_sweep_file_are_relative_to_its_folder(tmp_path, monkeypatch):
    folder = tmp_path / "sweeps"
    folder.mkdir()
    (folder / "every-third.yaml").write_text(EVERY_THIRD)
    runs = _write(folder, "name: p\nbase: base.yaml\n"
                  "grid: {protocol.name: [sync-ring, every-third.yaml]}\n", "runs.yaml")
    mixing = _write(folder, "name: m\nkind: mixing-time\nprotocol: every-third.yaml\n"
                    "workers: [4]\n", "mixing.yaml")
    monkeypatch.chdir(tmp_path)  # not the sweeps' folder
    names = [p.config["protocol"]["name"] for p in load_sweep(runs).points]
    assert names == ["sync-ring", str(folder / "every-third.yaml")]
    assert run_sweep(mixing, tmp_path / "out").failed == 0
    (row,) = results_table(tmp_path / "out")[1]
    assert row["t_mix"] == 3 * 4


def test_plot_names_allowed_metrics_and_axes(tmp_path, capsys):
    out = tmp_path / "out"
    run_sweep(_write(tmp_path, SWEEP.replace("seeds: 2", "seeds: 1")), out)
    assert _exit_code(["plot", str(out), "--metric", "los", "--x", "step"]) == 2
    assert "'los'" in capsys.readouterr().err
    assert _exit_code(["plot", str(out), "--metric", "loss", "--x", "lr"]) == 2
    assert "optimizer.method.lr" in capsys.readouterr().err


# -- hostile files and sweeps ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../escaped-name", "ABSOLUTE", "a/b", "..", ".hidden", ""])
def test_a_sweep_name_is_a_plain_folder_name(tmp_path, capsys, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    name = name.replace("ABSOLUTE", str(tmp_path / "absolute"))
    path = _write(tmp_path, SWEEP.replace("name: tiny-sweep", f"name: {json.dumps(name)}"))
    assert _exit_code(["sweep", str(path), "--serial"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sweep.yaml:1: name:" in err and "plain folder" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "absolute").exists()
    assert not (tmp_path.parent / "escaped-name").exists()
    assert not (tmp_path / "results.csv").exists()


def test_a_second_sweep_into_a_held_folder_says_who_holds_it(tmp_path, capsys):
    from mixsim.sweep import folder_lock

    path = _write(tmp_path, SWEEP.replace("seeds: 2", "seeds: 1"))
    out = tmp_path / "out"
    out.mkdir()
    with folder_lock(out):
        assert _exit_code(["sweep", str(path), "--serial", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"process {os.getpid()} on " in err
        assert str(out) in err
        assert not (out / "points").exists() or not list((out / "points").iterdir())
    # Released: the sweep runs.
    assert _exit_code(["sweep", str(path), "--serial", "--out", str(out), "--quiet"]) == 0
    assert len(_points(out)) == 8


def test_a_held_folder_is_refused_by_another_process(tmp_path, spawned):
    path = _write(tmp_path, SWEEP.replace("seeds: 2", "seeds: 1"))
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from mixsim.sweep import folder_lock\n"
         f"with folder_lock({str(out)!r}):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, start_new_session=True)
    spawned.append(holder)
    assert holder.stdout.readline() == "held\n"
    second = subprocess.run(_mixsim("sweep", str(path), "--serial", "--out", str(out)),
                            capture_output=True, text=True, timeout=STARTUP, check=False)
    assert second.returncode == 2
    assert f"process {holder.pid} on " in second.stderr and second.stderr.count("\n") == 1
    assert not (out / "points").exists() or not list((out / "points").iterdir())


def test_mixing_time_workers_are_checked_before_anything_runs(tmp_path, capsys):
    path = _write(tmp_path, """\
name: zero
kind: mixing-time
protocol: sync-ring
workers: [0, 4]
""")
    assert _exit_code(["sweep", str(path), "--serial", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "workers" in err and "0" in err
    assert not (tmp_path / "o").exists()


def test_mixing_time_sizes_a_protocol_cannot_take_fail_before_anything_runs(tmp_path, capsys):
    (tmp_path / "sixteen.yaml").write_text("""\
name: fixed-16
summary: Gossip on a fixed 16-node graph.
communication:
  - on: round
    op: gossip
    args: {group: workers, graph: hypercube_graph, graph_args: {n: 4}}
""")
    path = _write(tmp_path, f"""\
name: sizes
kind: mixing-time
protocol: {tmp_path / "sixteen.yaml"}
workers: [16, 4]
""")
    assert _exit_code(["sweep", str(path), "--serial", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sweep.yaml:4: workers:" in err and "workers=4" in err
    assert not (tmp_path / "o").exists()


def test_point_files_carry_a_checksum_and_changes_are_recomputed(tmp_path, capsys):
    path = _write(tmp_path, SWEEP.replace("seeds: 2", "seeds: 1").replace(
        "optimizer.method.lr: [0.01, 0.03]", "optimizer.method.lr: [0.01]").replace(
        "protocol.name: [sync-ring, async-ring]", "protocol.name: [sync-ring]"))
    out = tmp_path / "out"
    assert _exit_code(["sweep", str(path), "--serial", "--out", str(out), "--quiet"]) == 0
    files = sorted((out / "points").glob("*.json"))
    assert len(files) == 2
    original = _metrics(out)
    edited, damaged = files
    record = json.loads(edited.read_text())
    record["rows"][-1]["loss"] = 0.0  # a hand edit, still valid JSON
    edited.write_text(json.dumps(record, sort_keys=True) + "\n")
    damaged.write_text(damaged.read_text()[:100])
    _, table = results_table(out)
    assert {r["point"]: r["status"] for r in table} == {edited.stem: "invalid",
                                                        damaged.stem: "invalid"}
    assert all(r.get("loss") is None for r in table)  # an edited value is not reported
    assert "checksum" in next(r["error"] for r in table if r["point"] == edited.stem)
    assert _exit_code(["sweep", str(path), "--serial", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "2 computed now" in captured.out
    lines = captured.err.splitlines()
    assert len(lines) == 2
    assert edited.stem[:12] in captured.err and damaged.stem[:12] in captured.err
    assert "checksum mismatch" in captured.err and "not valid JSON" in captured.err
    assert _metrics(out) == original  # recomputed: the same rows


def test_a_point_file_copied_under_another_key_is_recomputed(tmp_path, capsys):
    path = _write(tmp_path, SWEEP.replace("seeds: 2", "seeds: 1").replace(
        "protocol.name: [sync-ring, async-ring]", "protocol.name: [sync-ring]"))
    out = tmp_path / "out"
    assert _exit_code(["sweep", str(path), "--serial", "--out", str(out), "--quiet"]) == 0
    original = _metrics(out)
    first, second = sorted((out / "points").glob("*.json"))[:2]
    second.write_bytes(first.read_bytes())  # a valid record, under the other point's name
    _, table = results_table(out)
    assert next(r for r in table if r["point"] == second.stem)["status"] == "invalid"
    assert _exit_code(["sweep", str(path), "--serial", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "1 computed now" in captured.out and f"holds point {first.stem!r}" in captured.err
    assert _metrics(out) == original


def test_a_folder_in_place_of_a_point_file_is_one_line_before_any_point_runs(tmp_path,
                                                                            capsys):
    path = _write(tmp_path, SWEEP.replace("seeds: 2", "seeds: 1").replace(
        "protocol.name: [sync-ring, async-ring]", "protocol.name: [sync-ring]"))
    out = tmp_path / "out"
    assert _exit_code(["sweep", str(path), "--serial", "--out", str(out), "--quiet"]) == 0
    first, *others = sorted((out / "points").glob("*.json"))
    first.unlink()
    first.mkdir()
    before = {other: other.stat().st_mtime_ns for other in others}
    assert _exit_code(["sweep", str(path), "--serial", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert first.name in err and "is not a file" in err
    assert {other: other.stat().st_mtime_ns for other in others} == before
    assert not list((out / "points").glob(".*.tmp"))


@pytest.mark.parametrize(("name", "make"), [
    ("results.csv", "folder"), ("aggregate.csv", "folder"), ("sweep.json", "folder"),
    ("points", "file"), (".", "file")])
def test_something_else_where_the_sweep_writes_is_one_line_before_any_point_runs(
        tmp_path, capsys, name, make):
    path = _write(tmp_path, SWEEP.replace("seeds: 2", "seeds: 1"))
    out = tmp_path / "out"
    target = out / name if name != "." else out
    target.parent.mkdir(parents=True, exist_ok=True)
    if make == "folder":
        target.mkdir()
    else:
        target.write_text("x")
    assert _exit_code(["sweep", str(path), "--serial", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and str(target) in err
    assert not (out.is_dir() and list((out / "points").glob("*.json")))


def test_a_damaged_manifest_is_one_line(tmp_path, capsys):
    path = _write(tmp_path, SWEEP.replace("seeds: 2", "seeds: 1").replace(
        "protocol.name: [sync-ring, async-ring]", "protocol.name: [sync-ring]"))
    out = tmp_path / "out"
    assert _exit_code(["sweep", str(path), "--serial", "--out", str(out), "--quiet"]) == 0
    for text in ("garbage", '{"points": 5}'):
        (out / "sweep.json").write_text(text)
        assert _exit_code(["plot", str(out), "--metric", "loss", "--x",
                           "optimizer.method.lr", "--out", str(tmp_path / "p.png")]) == 2
        err = capsys.readouterr().err
        assert "sweep.json is damaged" in err and len(err.strip().splitlines()) == 1


def test_a_diverged_point_keeps_its_rows_as_mixsim_run_does(tmp_path):
    base = BASE.replace("{name: amsgrad, lr: 0.01}", "{name: sgd, lr: 1.0e+30}").replace(
        "{name: logistic}", "{name: least-squares}")
    (tmp_path / "diverge.yaml").write_text(base + "outputs: {plots: false}\n")
    single = tmp_path / "single"
    assert _exit_code(["run", str(tmp_path / "diverge.yaml"), "--out", str(single),
                       "--quiet"]) == 3
    kept = (single / "metrics.csv").read_text()
    sweep = _write(tmp_path, "name: d\nbase: diverge.yaml\n", "d.yaml")
    out = tmp_path / "out"
    outcome = run_sweep(sweep, out)
    assert outcome.failed == 1
    (record,) = _points(out).values()
    assert record["status"] == "failed" and "diverged at step" in record["error"]
    assert metrics_csv(record["rows"]) == kept and record["summary"]["complete"] is False
    (row,) = results_table(out)[1]
    assert row["status"] == "failed" and row["step"] == record["rows"][-1]["step"]
    assert "diverged" in row["error"]


def test_plotting_a_sweep_with_no_result_fails_without_a_file(tmp_path, capsys):
    out = tmp_path / "out"
    # Every point diverges when it runs.
    run_sweep(_write(tmp_path, SWEEP.replace("seeds: 2", "seeds: 1").replace(
        "[0.01, 0.03]", "[1.0e+30, 3.0e+30]")), out)
    png = tmp_path / "empty.png"
    assert _exit_code(["plot", str(out), "--metric", "loss", "--x", "optimizer.method.lr",
                       "--out", str(png)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nothing to plot" in err and "8 failed" in err
    assert not png.exists()


def test_mixing_time_sweep_plot_draws_the_interval_it_labels(tmp_path):
    from matplotlib.collections import LineCollection

    from mixsim.mixing import mixing_time
    from mixsim.sweep import _sweep_figure

    out = tmp_path / "out"
    run_sweep(_write(tmp_path, """\
name: ring
kind: mixing-time
protocol: async-ring
workers: [4, 6]
runs: 12
""", "m.yaml"), out)
    measured = mixing_time("async-ring", [4, 6], runs=12, seed=0)
    fig = _sweep_figure(out, metric="t_mix", x="workers")
    (ax,) = fig.axes
    assert "95% interval" in ax.get_ylabel()
    (bars,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    drawn = sorted((seg[:, 0].min(), seg[:, 1].min(), seg[:, 1].max())
                   for seg in bars.get_segments())
    expected = [(r.workers, *r.ci95) for r in measured]
    assert [d[0] for d in drawn] == [e[0] for e in expected]
    assert [d[1:] for d in drawn] == [pytest.approx(e[1:], rel=1e-12) for e in expected]


# -- Dask -----------------------------------------------------------------------------------

def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL a process started with ``start_new_session=True`` and all it started."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


@pytest.fixture
def spawned():
    """Processes a test starts (in their own session); all killed at the end."""
    processes = []
    yield processes
    for process in processes:
        _kill_group(process)


def _mixsim(*argv) -> list[str]:
    return [sys.executable, "-m", "mixsim.cli", *argv]


def test_local_cluster_gives_the_serial_results(tmp_path):
    sweep_file = _write(tmp_path)
    serial, local = tmp_path / "serial", tmp_path / "local"
    run_sweep(sweep_file, serial)
    assert main(["sweep", str(sweep_file), "--out", str(local), "--workers", "2",
                 "--quiet"]) == 0
    assert _metrics(local) == _metrics(serial) and len(_metrics(local)) == 16
    assert (local / "results.csv").read_bytes() == (serial / "results.csv").read_bytes()
    # And a point computed directly in this process gives the same rows.
    record = next(iter(_points(local).values()))
    assert metrics_csv(run_point("run", record["config"])["rows"]) == \
        metrics_csv(record["rows"])


def test_sigkill_mid_sweep_then_rerun_completes_exactly(tmp_path, spawned):
    sweep_file = _write(tmp_path, SWEEP.replace("[0.01, 0.03]", "[0.01, 0.02, 0.03]")
                        .replace("seeds: 2", "seeds: 4").replace("steps: 30", "steps: 60"))
    expected = {p.key for p in load_sweep(sweep_file).points}
    assert len(expected) == 48
    out = tmp_path / "out"
    command = _mixsim("sweep", str(sweep_file), "--out", str(out), "--workers", "1",
                      "--quiet")
    first = subprocess.Popen(command, cwd=tmp_path, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    spawned.append(first)
    deadline = time.monotonic() + STARTUP
    while not list((out / "points").glob("*.json")):
        assert first.poll() is None, first.stderr.read().decode()
        assert time.monotonic() < deadline, "no point finished in time"
        time.sleep(0.02)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL
    _kill_group(first)  # its Dask workers, if any outlived it
    survived = {p.name: p.read_bytes() for p in (out / "points").glob("*.json")}
    assert 1 <= len(survived) < len(expected)
    assert all(json.loads(text)["status"] == "done" for text in survived.values())

    second = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True,
                            timeout=STARTUP + 60, check=False, start_new_session=True)
    assert second.returncode == 0, second.stderr
    records = _points(out)
    assert set(records) == expected
    assert all(r["status"] == "done" and r["rows"][-1]["step"] == 60 for r in records.values())
    assert all((out / "points" / name).read_bytes() == text for name, text in survived.items())
    assert not [p for p in (out / "points").iterdir() if p.suffix != ".json"]
    _, table = results_table(out)
    assert sorted(r["point"] for r in table) == sorted(expected)


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """A ``dask scheduler`` and a ``dask worker`` on loopback, as separate processes."""
    folder = tmp_path_factory.mktemp("cluster")
    address_file = folder / "scheduler.json"
    common = {"cwd": folder, "start_new_session": True, "stdout": subprocess.DEVNULL,
              "stderr": subprocess.DEVNULL}
    processes = []
    try:
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
             "--port", "0", "--no-dashboard", "--scheduler-file", str(address_file)],
            **common))
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file",
             str(address_file), "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
             "--local-directory", str(folder)], **common))
        deadline = time.monotonic() + STARTUP
        address = None
        while address is None:
            assert all(p.poll() is None for p in processes), "the Dask cluster did not start"
            assert time.monotonic() < deadline, "no scheduler file"
            time.sleep(0.1)
            try:  # the scheduler may be half-way through writing it
                address = json.loads(address_file.read_text())["address"]
            except (OSError, ValueError, KeyError):
                pass
        from distributed import Client

        with Client(address, timeout=STARTUP) as client:
            client.wait_for_workers(1, timeout=STARTUP)
        yield address
    finally:
        for process in processes:
            _kill_group(process)


def test_sweep_through_a_scheduler_gives_the_serial_results(tmp_path, scheduler):
    sweep_file = _write(tmp_path)
    serial, remote = tmp_path / "serial", tmp_path / "remote"
    run_sweep(sweep_file, serial)
    result = subprocess.run(
        _mixsim("sweep", str(sweep_file), "--out", str(remote), "--scheduler", scheduler),
        cwd=tmp_path, capture_output=True, text=True, timeout=STARTUP, check=False)
    assert result.returncode == 0, result.stderr
    assert "16 points (16 computed now" in result.stdout
    assert _metrics(remote) == _metrics(serial) and len(_metrics(remote)) == 16
    assert (remote / "aggregate.csv").read_bytes() == (serial / "aggregate.csv").read_bytes()


def test_mixing_time_runs_on_a_scheduler_give_the_serial_json(scheduler, capsys):
    argv = ["mixing-time", "async-ring", "--workers", "4", "6", "--runs", "20", "--json"]
    assert main(argv) == 0
    serial = capsys.readouterr().out
    assert main([*argv, "--scheduler", scheduler]) == 0
    assert capsys.readouterr().out == serial
    argv = ["compare", "async-ps", "sync-ring", "--workers", "4", "--runs", "10", "--json"]
    assert main(argv) == 0
    serial = capsys.readouterr().out
    assert main([*argv, "--scheduler", scheduler]) == 0
    assert capsys.readouterr().out == serial
