"""A user's mistake on the command line: one line on stderr naming where (file and line,
or argument), key and value; exit code 2; nothing run, nothing written; never a traceback.

Also what the command line prints when things go right: numbers as a person reads them.
"""

import json
import re

import pytest

from mixsim.cli import main

TINY = """\
name: tiny
workers: 4
data: {name: iris}
steps: 20
eval_every: 10
optimizer: {method: {name: sgd, lr: 0.1}}
"""


def mixsim(argv) -> int:
    """Exit code of ``mixsim argv`` (argparse's own errors exit through SystemExit)."""
    try:
        return main([str(a) for a in argv])
    except SystemExit as exc:
        return exc.code


def one_line_error(capsys, argv, *needles) -> str:
    """Run ``argv``, check it failed with exit 2 and one line holding every needle."""
    code = mixsim(argv)
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


# -- point 1: a valid scenario with measure_mixing false -----------------------------------

def test_summary_line_without_mixing_measure(tiny, tmp_path, capsys):
    assert mixsim(["run", tiny, "--out", tmp_path / "o", "--set",
                   "outputs.measure_mixing=false", "--set", "outputs.plots=false"]) == 0
    out = capsys.readouterr().out
    assert "t_mix not measured (outputs.measure_mixing is false)" in out
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["complete"] and summary["t_mix"] is None


# -- point 28: numbers as a person reads them ------------------------------------------------

def test_summary_line_numbers_are_rounded(tiny, tmp_path, capsys):
    assert mixsim(["run", tiny, "--out", tmp_path / "o", "--set", "outputs.plots=false"]) == 0
    out = capsys.readouterr().out.strip()
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    accuracy = summary["final"]["test_accuracy"]
    assert f"test accuracy {100 * accuracy:.1f}%" in out
    assert repr(accuracy) not in out and "None" not in out
    assert f"t_mix {summary['t_mix']} steps measured (xi 1)" in out


def test_mixing_time_table_prints_integers_whole(capsys):
    # gamma = 1e-12: t_mix = n * ceil(ln(1/2) / ln(1 - gamma)), about 5.5e12 steps.
    assert mixsim(["mixing-time", "slack", "--set", "gamma=1e-12", "--method", "spectral",
                   "--workers", "8"]) == 0
    row = capsys.readouterr().out.splitlines()[-1].split()
    assert re.fullmatch(r"5,5\d\d(,\d{3}){3}", row[1]) and "e+" not in " ".join(row)
    assert row[-1] == "0"  # runs


def test_format_number():
    from mixsim.report import format_number

    assert [format_number(v) for v in (None, 52672900000000.0, 1e7, 36.8, 0.96388888, 2.5e-5,
                                       12345.678, float("inf"))] == [
        "-", "52,672,900,000,000", "10,000,000", "36.8", "0.9639", "2.500e-05", "12,345.7",
        "inf"]


def test_mixing_time_repr_is_short():
    from mixsim import mixing_time

    (result,) = mixing_time("async-ring", workers=4, runs=5, seed=0)
    text = repr(result)
    assert "np.float64" not in text and "samples" not in text and "array" not in text
    assert result.samples.shape == (5,)


# -- point 3: arguments out of range ---------------------------------------------------------

def test_negative_seed_is_an_argument_error(tiny, tmp_path, capsys):
    one_line_error(capsys, ["run", tiny, "--seed", "-1", "--out", tmp_path / "o"],
                   "--seed", "'-1'", ">= 0")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("option", ["--coords", "--starts", "--runs", "--workers"])
def test_mixing_time_counts_must_be_positive(capsys, option):
    one_line_error(capsys, ["mixing-time", "slack", option, "0"], option, "'0'", ">= 1")


def test_python_api_seed_and_coords_checked(tiny):
    import mixsim
    from mixsim.errors import ConfigError

    with pytest.raises(ConfigError, match="seed: -1: must be an integer >= 0"):
        mixsim.run(tiny, seed=-1)
    with pytest.raises(ConfigError, match="d = 0 must be an integer >= 1"):
        mixsim.mixing_time("slack", workers=4, d=0)


# -- point 7: extends cycles -----------------------------------------------------------------

def test_protocol_extending_itself_or_a_cycle(tmp_path, capsys):
    (tmp_path / "self.yaml").write_text(
        f"name: me\nsummary: s\nextends: {tmp_path / 'self.yaml'}\n")
    (tmp_path / "a.yaml").write_text(f"name: a\nsummary: s\nextends: {tmp_path / 'b.yaml'}\n")
    (tmp_path / "b.yaml").write_text(f"name: b\nsummary: s\nextends: {tmp_path / 'a.yaml'}\n")
    one_line_error(capsys, ["validate", tmp_path / "self.yaml"], "extends", "cycle",
                   "self.yaml -> ")
    one_line_error(capsys, ["mixing-time", tmp_path / "a.yaml"], "extends", "cycle",
                   "a.yaml -> ", "b.yaml -> ")


# -- points 2, 9, 12, 16: the file itself ----------------------------------------------------

@pytest.mark.parametrize("command", [["run"], ["validate"], ["sweep", "--serial"],
                                     ["mixing-time"]])
def test_non_utf8_file(tmp_path, capsys, command):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(TINY.encode() + b"# r\xe9sum\xe9\n")
    one_line_error(capsys, [command[0], path, *command[1:]], "latin1.yaml:7", "not UTF-8",
                   "0xe9")


def test_duplicate_key(tmp_path, capsys):
    path = tmp_path / "dup.yaml"
    path.write_text(TINY + "steps: 30\n")
    one_line_error(capsys, ["run", path], "dup.yaml:7", "duplicate key 'steps'",
                   "first on line 4")


def test_yaml11_boolean_words_are_not_booleans(tiny, capsys):
    one_line_error(capsys, ["run", tiny, "--set", "outputs.plots=yes"], "outputs.plots",
                   "'yes'", "valid boolean")
    path = tiny.with_name("yes.yaml")
    path.write_text(TINY + "outputs: {plots: yes}\n")
    one_line_error(capsys, ["validate", path], "yes.yaml:7", "outputs.plots", "'yes'")


def test_alias_bomb_on_the_command_line(tmp_path, capsys):
    from test_yaml import BILLION_LAUGHS

    path = tmp_path / "bomb.yaml"
    path.write_text(BILLION_LAUGHS)
    for command in ("run", "validate", "mixing-time"):
        one_line_error(capsys, [command, path], "bomb.yaml:", "alias bomb")


# -- point 10: booleans and infinities where a number is meant -------------------------------

@pytest.mark.parametrize(("setting", "needles"), [
    ("steps=true", ["steps", "True", "not true/false"]),
    ("workers=false", ["workers", "False"]),
    ("timing.compute.mean=.inf", ["timing.compute.mean", "inf", "finite"]),
    ("timing.links.latency=.inf", ["timing.links.latency", "inf", "finite"]),
    ("optimizer.method.lr=.nan", ["optimizer.method.lr", "nan", "finite"]),
    ("epochs=.inf", ["epochs", "inf", "finite"]),
    ("data.partition.alpha=.inf", ["data.partition.alpha", "inf"]),
])
def test_booleans_and_infinities_refused(tiny, capsys, setting, needles):
    one_line_error(capsys, ["run", tiny, "--set", setting], *needles)


def test_infinite_protocol_parameter_refused(capsys):
    one_line_error(capsys, ["mixing-time", "slack", "--set", "gamma=.inf"], "--set gamma",
                   "inf is not a finite number")


def test_timing_objects_refuse_infinities():
    from mixsim.errors import ConfigError
    from mixsim.timing import ComputeTime, Links

    with pytest.raises(ConfigError, match="timing.compute.mean"):
        ComputeTime(mean=float("inf"))
    with pytest.raises(ConfigError, match="timing.links.latency"):
        Links(latency=float("inf"))


# -- point 11: link overrides ------------------------------------------------------------------

@pytest.mark.parametrize(("override", "needles"), [
    ("{between: [0, 1], latency: -1}", ["timing.links.overrides.0.latency", "-1"]),
    ("{between: [0, 1], latncy: 1}", ["latncy", "did you mean 'latency'"]),
    ("{between: [0, 9]}", ["timing.links.overrides[0].between", "9", "0 .. 3"]),
    ("{between: [0, server]}", ["timing.links.overrides[0].between", "'server'",
                                "slot groups: none"]),
    ("{between: [0, 1], bandwidth: 0}", ["timing.links.overrides.0.bandwidth", "0"]),
])
def test_link_overrides_checked(tiny, capsys, override, needles):
    one_line_error(capsys, ["run", tiny, "--set", f"timing.links.overrides=[{override}]"],
                   *needles)


def test_link_override_to_the_server_is_used():
    """``between: [w, server]`` reaches the server's links (it used to match nothing)."""
    from mixsim.engine import Simulation
    from mixsim.timing import Links, Timing

    def finish_time(overrides):
        timing = Timing(links=Links(overrides=overrides))
        sim = Simulation("sync-ps", 2, timing=timing, seed=0)
        sim.run(8)
        return sim.env.now

    slow = finish_time([{"between": [0, "server"], "latency": 100.0}])
    assert slow >= 100.0 > finish_time([])


# -- points 13, 14, 15: the right place is named ---------------------------------------------

def test_bad_set_value_names_the_set_argument(tiny, capsys):
    line = one_line_error(capsys, ["run", tiny, "--set", "steps=[1"], "--set steps", "'[1'")
    assert "tiny.yaml" not in line


def test_unknown_key_from_set_names_the_set_argument(tiny, capsys):
    line = one_line_error(capsys, ["run", tiny, "--set", "optimizer.methd.lr=0.1"],
                          "--set optimizer.methd.lr", "optimizer.methd", "unknown key",
                          "did you mean 'method'")
    assert "tiny.yaml" not in line


def test_top_k_out_of_range_names_the_compressor_key(tiny, capsys):
    one_line_error(capsys, ["run", tiny, "--set", "optimizer.compressor={name: top-k, k: 1000}"],
                   "optimizer.compressor.k", "1000")


def test_gossip_graph_blames_the_set_argument(capsys):
    line = one_line_error(capsys, ["mixing-time", "gossip", "--set", "graph=no_such_graph"],
                          "--set graph", "no_such_graph")
    assert "_catalog" not in line and "gossip.yaml" not in line
    one_line_error(capsys, ["mixing-time", "slack", "--set", "gamma=5"], "--set gamma", "5.0")


def test_gossip_graph_in_a_scenario_blames_the_scenario(tiny, capsys):
    tiny.write_text(TINY + "protocol: {name: gossip, params: {graph: no_such_graph}}\n")
    line = one_line_error(capsys, ["run", tiny], "tiny.yaml", "protocol.params.graph",
                          "no_such_graph")
    assert "_catalog" not in line


# -- point 4: output folders that cannot be made -------------------------------------------

def test_out_under_a_file(tiny, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    one_line_error(capsys, ["run", tiny, "--out", tmp_path / "afile" / "sub"], "--out",
                   "afile is a file")


def test_out_in_an_unwritable_place(tiny, tmp_path, capsys, monkeypatch):
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(locked)
                        else real_access(p, mode))
    one_line_error(capsys, ["run", tiny, "--out", locked / "sub"], "--out", "not writable")
    assert list(locked.iterdir()) == []


def test_out_that_mkdir_refuses(tiny, capsys):
    # /proc takes no new folder, even for root.
    one_line_error(capsys, ["run", tiny, "--out", "/proc/mixsim-out/sub"], "--out",
                   "cannot make the folder")


def test_plot_out_into_a_file(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    one_line_error(capsys, ["plot", tmp_path, "--metric", "loss", "--x", "seed", "--out",
                            tmp_path / "afile" / "p.png"], "--out", "afile is a file")


# -- point 5: data files -------------------------------------------------------------------

def _data_scenario(tmp_path, data: str):
    path = tmp_path / "data.yaml"
    path.write_text(TINY.replace("data: {name: iris}", f"data: {data}").replace(
        "workers: 4", "workers: 2"))
    return path


def test_empty_libsvm_file(tmp_path, capsys):
    (tmp_path / "empty.svm").write_text("")
    path = _data_scenario(tmp_path, f"{{name: libsvm, path: {tmp_path / 'empty.svm'}}}")
    one_line_error(capsys, ["run", path], "data.path", "empty.svm holds 0 rows")


def test_npz_not_a_zip(tmp_path, capsys):
    (tmp_path / "bad.npz").write_text("not a zip")
    path = _data_scenario(tmp_path, f"{{name: npz, path: {tmp_path / 'bad.npz'}}}")
    one_line_error(capsys, ["run", path], "data.path", "bad.npz is not a .npz file")


def test_npz_with_object_arrays_never_unpickled(tmp_path, capsys, monkeypatch):
    import pickle

    import numpy as np

    np.savez(tmp_path / "obj.npz", X=np.array([[1, 2]] * 6, dtype=object), y=np.arange(6) % 2)
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled"))
    path = _data_scenario(tmp_path, f"{{name: npz, path: {tmp_path / 'obj.npz'}}}")
    one_line_error(capsys, ["run", path], "data.x", "'X'", "Python objects",
                   "never unpickled")


def test_nan_features_are_a_data_error(tmp_path, capsys):
    import numpy as np

    X = np.ones((10, 3))
    X[4, 2] = np.nan
    np.savez(tmp_path / "nan.npz", X=X, y=np.arange(10) % 2)
    path = _data_scenario(tmp_path, f"{{name: npz, path: {tmp_path / 'nan.npz'}}}")
    line = one_line_error(capsys, ["run", path, "--out", tmp_path / "o"], "data.path",
                          "nan.npz", "1 non-finite feature values", "row 4, column 2")
    assert "diverged" not in line and not (tmp_path / "o").exists()


# -- point 6: test_fraction 0 ---------------------------------------------------------------

def test_test_fraction_zero_runs_without_test_metrics(tiny, tmp_path, capsys):
    assert mixsim(["run", tiny, "--out", tmp_path / "o", "--set", "data.test_fraction=0"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" not in out
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["complete"] and summary["final"]["test_accuracy"] is None
    rows = (tmp_path / "o" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 4 and all(row.split(",")[5] == "nan" for row in rows[1:])


# -- point 8: sizes that cannot fit ---------------------------------------------------------

@pytest.mark.parametrize(("argv", "needles"), [
    (["--set", "data={name: synthetic-linear, samples: 100000000000}", "--set",
      "problem.name=least-squares"],
     ["data.samples", "100,000,000,000 samples x 20 features", "TiB", "available"]),
    (["--set", "problem={name: mlp, params: {hidden: [100000, 100000]}}"],
     ["problem.params", "10,000,", "model parameters", "TiB", "available"]),
])
def test_learning_sizes_that_cannot_fit(tiny, capsys, argv, needles):
    one_line_error(capsys, ["run", tiny, *argv], *needles)


def test_mixing_time_sizes_that_cannot_fit(capsys):
    one_line_error(capsys, ["mixing-time", "async-ring", "--workers", "4", "--runs",
                            "100000000"], "runs", "100,000,000 runs", "GiB", "available")
    one_line_error(capsys, ["mixing-time", "allreduce", "--method", "trace", "--workers",
                            "100000000"], "workers", "100,000,000 slots", "GiB")


def test_sweep_point_too_large_says_why():
    from mixsim.sweep import run_point

    outcome = run_point("run", {"workers": 2, "data": {"name": "iris"},
                                "problem": {"name": "mlp", "params": {"hidden": [100000] * 2}}})
    assert outcome["status"] == "failed"
    assert "problem.params" in outcome["error"] and "need at least" in outcome["error"]


def test_sweep_grid_that_cannot_fit(tiny, tmp_path, capsys):
    path = tmp_path / "huge.yaml"
    path.write_text(f"name: huge\nbase: {tiny}\ngrid:\n  optimizer.method.lr: "
                    f"[{', '.join(str(0.001 * i) for i in range(1, 1001))}]\n"
                    "seeds: 1000000000\n")
    one_line_error(capsys, ["sweep", path, "--serial"], "huge.yaml", "grid",
                   "1,000,000,000,000 sweep points", "available")


# -- points 23, 24: divergence ----------------------------------------------------------------

def test_loss_far_above_the_initial_one_is_divergence(tmp_path, capsys):
    path = tmp_path / "hot.yaml"
    path.write_text(TINY.replace("lr: 0.1", "lr: 1.0e6").replace("data: {name: iris}",
                                                                  "data: {name: digits}"))
    assert mixsim(["run", path, "--out", tmp_path / "o"]) == 3
    line = capsys.readouterr().err.splitlines()[-1]
    assert "diverged at step 10" in line and "times the initial loss" in line
    assert "divergence.loss_ratio" in line
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["complete"] is False and summary["stopped_at_step"] == 10
    # Off: only a non-finite value stops a run.
    assert mixsim(["run", path, "--set", "divergence.loss_ratio=null", "--quiet"]) == 0
    capsys.readouterr()


def test_divergence_ratio_checked(tiny, capsys):
    one_line_error(capsys, ["run", tiny, "--set", "divergence.loss_ratio=0.5"],
                   "divergence.loss_ratio", "0.5", "greater than 1")


def test_divergence_leaves_one_line_on_stderr(tmp_path, capfd):
    import warnings

    path = tmp_path / "overflow.yaml"
    path.write_text("workers: 4\nproblem: {name: least-squares}\n"
                    "data: {name: synthetic-linear, batch: null}\n"
                    "optimizer: {method: {name: sgd, lr: 1.0e6}}\nsteps: 200\neval_every: 5\n"
                    "divergence: {loss_ratio: null}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a warning would be raised, not kept
        assert mixsim(["run", path, "--out", tmp_path / "o"]) == 3
    err = [line for line in capfd.readouterr().err.splitlines()
           if not line.startswith("mixsim: compiling")]
    assert len(err) == 1 and "diverged at step" in err[0], err
    assert (tmp_path / "o" / "curves.png").exists()


# -- point 29: strict JSON -----------------------------------------------------------------

def test_summary_is_strict_json(tiny, tmp_path):
    import mixsim as api

    api.run(tiny, out=tmp_path / "o")
    text = (tmp_path / "o" / "summary.json").read_text()
    assert "Infinity" not in text and "NaN" not in text

    def refuse(constant):
        raise ValueError(constant)

    summary = json.loads(text, parse_constant=refuse)
    assert summary["scenario"]["timing"]["links"]["bandwidth"] == "inf"


# -- point 31: the first run says it is compiling ---------------------------------------------

KERNEL = """\
import numba


@numba.njit(cache=True)
def twice(x):
    return 2 * x
"""


def _fresh_kernel(tmp_path, name):
    import importlib.util

    path = tmp_path / "kernel.py"
    if not path.exists():
        path.write_text(KERNEL)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.twice


def test_compilation_is_announced_once_and_not_on_a_cache_hit(tmp_path):
    import io

    from mixsim._numba import COMPILE_NOTICE, announce_compilation

    first, second = io.StringIO(), io.StringIO()
    with announce_compilation(first):
        assert _fresh_kernel(tmp_path, "kernel_a")(3) == 6
        assert _fresh_kernel(tmp_path, "kernel_b")(1.5) == 3.0  # a second compilation
    assert first.getvalue() == COMPILE_NOTICE + "\n"
    with announce_compilation(second):
        assert _fresh_kernel(tmp_path, "kernel_c")(3) == 6  # loaded from the cache
    assert second.getvalue() == ""


def test_command_line_announces_compilation(tmp_path, capsys, monkeypatch):
    import mixsim.cli as cli
    from mixsim._numba import COMPILE_NOTICE

    def compiling_command(args):
        _fresh_kernel(tmp_path, "kernel_cli")(2)
        return 0

    monkeypatch.setattr(cli, "_cmd_list", compiling_command)
    assert mixsim(["list"]) == 0
    assert capsys.readouterr().err == COMPILE_NOTICE + "\n"
