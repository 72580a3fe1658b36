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
