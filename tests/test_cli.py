"""The command line: the mixing-time contract, list, validate, and user mistakes."""

import json
import subprocess
import sys

import pytest

import mixsim
from mixsim.cli import main

HAND_MADE = """
name: pairs-then-allreduce
summary: Hand-made - AllReduce every third round.
theory: {t_mix: "=3 * n", kind: exact}
schedule: sync
communication:
  - on: round
    every: 3
    op: average
    args: {group: workers}
"""


def test_mixing_time_json_contract(capsys):
    assert main(["mixing-time", "local-step", "--workers", "2", "4", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["protocol"] == "local-step" and payload["method"] == "trace"
    assert payload["results"] == [
        {"workers": 2, "t_mix": 4, "runs": 1, "ci95": None, "xi": 1, "theory": 4,
         "scan": "exact", "failure_probability": 0.0, "xi_kind": "exact", "starts": 2},
        {"workers": 4, "t_mix": 8, "runs": 1, "ci95": None, "xi": 1, "theory": 8,
         "scan": "exact", "failure_probability": 0.0, "xi_kind": "exact", "starts": 4},
    ]


def test_montecarlo_json_has_interval(capsys):
    assert main(["mixing-time", "async-ring", "--workers", "5", "--runs", "12", "--json",
                 "--seed", "1"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["results"]
    assert row["runs"] == 12 and row["ci95"][0] <= row["t_mix"] <= row["ci95"][1]
    assert row["theory"] is None


def test_set_and_plot(tmp_path, capsys):
    png = tmp_path / "t.png"
    assert main(["mixing-time", "slack", "--set", "gamma=0.25", "--workers", "3", "--json",
                 "--plot", str(png)]) == 0
    (row,) = json.loads(capsys.readouterr().out)["results"]
    assert row["t_mix"] == 3 * 3  # ceil(ln .5 / ln .75) = 3
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_hand_made_protocol_file_by_path(tmp_path, capsys):
    path = tmp_path / "mine.yaml"
    path.write_text(HAND_MADE)
    assert main(["validate", str(path)]) == 0
    assert main(["mixing-time", str(path), "--workers", "4", "--json"]) == 0
    out = capsys.readouterr().out.splitlines()[-1]
    assert json.loads(out)["results"][0]["t_mix"] == 12


SIXTEEN = """
name: fixed-16
summary: Gossip on a fixed 16-node graph.
communication:
  - on: round
    op: gossip
    args: {group: workers, graph: hypercube_graph, graph_args: {n: 4}}
"""


def test_validate_takes_workers_for_a_fixed_size_protocol(tmp_path, capsys):
    path = tmp_path / "sixteen.yaml"
    path.write_text(SIXTEEN)
    assert _exit_code(["validate", str(path)]) == 2
    assert "16" in capsys.readouterr().err
    assert main(["validate", str(path), "--workers", "16"]) == 0
    assert "valid protocol 'fixed-16' (16 workers)" in capsys.readouterr().out


def test_validate_a_sweep_file(tmp_path, capsys):
    (tmp_path / "base.yaml").write_text("workers: 3\nsteps: 10\n")
    path = tmp_path / "sweep.yaml"
    path.write_text("name: s\nbase: base.yaml\ngrid: {optimizer.method.lr: [0.1, 0.2]}\n"
                    "seeds: 2\n")
    assert main(["validate", str(path)]) == 0
    assert "valid sweep 's': 4 points" in capsys.readouterr().out
    path.write_text("name: s\nbase: base.yaml\ngrid: {optimizer.method.lr: [0.1, -1]}\n")
    assert _exit_code(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "optimizer.method.lr" in err and "-1" in err


@pytest.mark.parametrize("content", ["seed: -5\n", "seed: 3\nname: partial\neval_every: 0\n"])
def test_validate_takes_a_partial_scenario_for_a_scenario(tmp_path, capsys, content):
    path = tmp_path / "partial.yaml"
    path.write_text(content)
    assert _exit_code(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "protocol" not in err
    assert ("seed: -5" in err) if "-5" in content else ("eval_every: 0" in err)


def test_list_shows_catalog(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "sync-ring" in out and "hybrid" in out


def test_list_is_plain_text_in_whole_sentences(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "``" not in out and ":func:" not in out and ":class:" not in out
    rows = {line.split()[0]: line.split(None, 1)[1] for line in out.splitlines()
            if line.startswith("  ")}
    # Docstrings whose first sentence runs over two lines are shown whole.
    assert rows["rmsprop"] == ("RMSProp in its corrected (monotone v) form: adam_family with "
                               "p = 1/2, b1 = 0.")
    assert rows["bernoulli"].endswith("with probability p_i = min(lambda |g_i|, 1).")
    assert rows["sgd"] == "Plain stochastic gradient descent, x -= lr g."


@pytest.mark.parametrize(("name", "needles"), [
    ("slack", ["protocol slack", "gamma (float, default", "in (0, 1]", "theory: t_mix = "]),
    ("sparse", ["sparse.yaml", "eta (float, default 0.5, in (0, 1])", "base (str"]),
    ("gossip", ["weights (str, default 'metropolis', one of metropolis, uniform, max-degree)",
                "graph_args (dict, default {})"]),
    ("top-k", ["compressor top-k", "top_k(k=None, *, density=None, offsets=None)",
               "density : float, optional"]),
    ("amsgrad", ["optimizer amsgrad", "lr=0.001", "b1, b2 : float"]),
    ("mlp", ["problem mlp", "hidden : sequence of int"]),
    ("libsvm", ["dataset libsvm", "path, n_features, task"]),
    ("error-feedback", ["memory scheme error-feedback", "compressor : Transformation"]),
])
def test_list_name_shows_parameters_defaults_choices_and_theory(capsys, name, needles):
    assert main(["list", name]) == 0
    out = capsys.readouterr().out
    for needle in needles:
        assert needle in out
    assert "``" not in out


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["mixing-time", "sync-rnig"], ["unknown protocol 'sync-rnig'", "did you mean sync-ring",
                                        "allreduce"]),
        (["mixing-time", "slack", "--set", "gama=0.1"], ["--set gama", "slack takes: gamma",
                                                         "did you mean 'gamma'"]),
        (["mixing-time", "slack", "--set", "gamma=2"], ["--set gamma", "2.0", "(0, 1]"]),
        (["mixing-time", "slack", "--set", "gamma=abc"], ["--set gamma", "'abc'"]),
        (["mixing-time", "allreduce", "--workers", "0"], ["workers", "0"]),
        (["mixing-time", "allreduce", "--workers", "x"], ["--workers", "'x'"]),
        (["mixing-time", "async-ring", "--method", "spectral", "--set", "x=1"], ["--set x"]),
        (["mixing-time", "hogwild", "--method", "spectral"], ["spectral", "hogwild"]),
        (["validate", "nowhere.yaml"], ["nowhere.yaml"]),
        (["list", "sync-rnig"], ["'sync-rnig'", "did you mean sync-ring"]),
    ],
)
def test_user_mistakes_give_one_line_and_exit_2(argv, needles, capsys):
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    for needle in needles:
        assert needle in err


def _exit_code(argv) -> int:
    """Exit code of ``mixsim argv`` (argparse's own errors exit through SystemExit)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        ("name: x\nsummary: y\nschedule: sync\ncommunication:\n  - {on: round, op: averge}\n",
         ["communication[0].op", "averge", "average"]),
        ("name: x\nsummary: y\ncommunicaton: []\n",
         ["communicaton", "did you mean 'communication'"]),
        ("name: x\nsummary: [unclosed\n", ["broken.yaml:3:", "not valid YAML"]),
        ("name: x\nsummary: y\nschedule: sync\ncommunication:\n  - {on: sometimes, op: average}\n",
         ["communication.0.on", "sometimes"]),
        ("name: x\nsummary: y\nschedule: sync\ncommunication:\n"
         "  - {on: round, op: gossip, args: {graph: no_such_graph}}\n",
         ["communication[0].args.graph", "no_such_graph"]),
        ("- just\n- a list\n", ["mapping"]),
    ],
)
def test_malformed_protocol_files(tmp_path, capsys, content, needles):
    path = tmp_path / "broken.yaml"
    path.write_text(content)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err
    for needle in needles:
        assert needle in err


def test_console_script_exit_code_and_no_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "mixsim.cli", "mixing-time", "nope", "--json"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("mixsim: error:") and "Traceback" not in result.stderr


def test_a_closed_pipe_ends_quietly():
    # The read end is closed before the command writes anything, so its first write fails
    # (as with `mixsim list | head -1`); it must stop without a traceback.
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)
    result = subprocess.run([sys.executable, "-m", "mixsim.cli", "list"], stdout=write_end,
                            stderr=subprocess.PIPE, text=True, check=False)
    os.close(write_end)
    assert result.returncode == 141
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr


def test_list_names_a_problem_built_elsewhere(capsys):
    # `mixsim list` shows torch among the problems; `mixsim list torch` describes it.
    assert main(["list", "torch"]) == 0
    assert capsys.readouterr().out.startswith("problem torch: a torch.nn.Module")


def test_a_plot_path_that_cannot_be_written_is_refused_before_the_work(tmp_path, capsys):
    for target in (tmp_path, tmp_path / "file.txt" / "x.png"):
        (tmp_path / "file.txt").write_text("a file")
        assert main(["mixing-time", "allreduce", "--workers", "2", "--plot",
                     str(target)]) == 2
        err = capsys.readouterr().err
        assert "--plot" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.parent.glob(f".{tmp_path.name}*"))


#: A synchronous gossip protocol on an edge-list file named relative to its own folder,
#: as a parameter default or as a literal argument. Uniform weights 1/(degree + 1): on the
#: 6-cycle W has second eigenvalue 2/3, two rounds reach 1/2 and t_mix = 6 * 2 = 12; on the
#: complete graph W = 11^T/6 and t_mix = 6 (seed 002's SyncDR, t_mix = n k).
FILE_GRAPH = """\
name: file-graph
summary: synchronous gossip on an edge-list file
schedule: sync
params:
  graph: {type: str, default: ring.edges}
communication:
  - on: round
    op: gossip
    args: {group: workers, graph: GRAPH, weights: uniform}
"""
CYCLE_T_MIX, COMPLETE_T_MIX = 12, 6


def _edge_list(path, edges):
    path.write_text("".join(f"{i} {j}\n" for i, j in edges))


@pytest.fixture
def graph_folders(tmp_path, monkeypatch):
    """``protos/`` holds the protocol files and the 6-cycle ``ring.edges``; the working
    folder ``work/`` holds another ``ring.edges``, the complete graph."""
    protos, work = tmp_path / "protos", tmp_path / "work"
    protos.mkdir()
    work.mkdir()
    _edge_list(protos / "ring.edges", [(i, (i + 1) % 6) for i in range(6)])
    _edge_list(work / "ring.edges", [(i, j) for i in range(6) for j in range(i + 1, 6)])
    (protos / "by-param.yaml").write_text(FILE_GRAPH.replace("GRAPH", '"=graph"'))
    (protos / "literal.yaml").write_text(FILE_GRAPH.replace("GRAPH", "ring.edges"))
    monkeypatch.chdir(work)
    return protos, work


def _t_mix(capsys, argv) -> float:
    assert main(["mixing-time", *argv, "--workers", "6", "--json"]) == 0
    return json.loads(capsys.readouterr().out.splitlines()[-1])["results"][0]["t_mix"]


@pytest.mark.parametrize("name", ["by-param.yaml", "literal.yaml"])
def test_protocol_file_edge_list_is_relative_to_its_folder(graph_folders, capsys, name):
    assert _t_mix(capsys, [f"../protos/{name}"]) == CYCLE_T_MIX


def test_set_graph_is_relative_to_the_working_folder(graph_folders, capsys):
    # The working folder's ring.edges, the complete graph, not the protocol folder's.
    assert _t_mix(capsys, ["../protos/by-param.yaml", "--set", "graph=ring.edges"]) == \
        COMPLETE_T_MIX


def test_scenario_naming_a_protocol_file_reads_its_edge_list(graph_folders, capsys):
    protos, work = graph_folders
    scenarios = work.parent / "scenarios"
    scenarios.mkdir()
    (work / "ring.edges").unlink()  # only the protocol folder's edge list exists
    scenario = scenarios / "s.yaml"
    scenario.write_text("name: s\nworkers: 6\nprotocol: {name: ../protos/literal.yaml}\n"
                        "problem: {name: logistic}\ndata: {name: breast-cancer, batch: 8}\n"
                        "optimizer: {method: {name: sgd, lr: 0.01}}\nsteps: 60\n"
                        "eval_every: 30\n")
    assert main(["validate", str(scenario)]) == 0
    result = mixsim.run(str(scenario))
    assert result.complete and result.rows[-1]["step"] == 60
    assert result.summary["t_mix"] == CYCLE_T_MIX


def test_extends_names_a_file_relative_to_its_folder(graph_folders, capsys):
    protos, _ = graph_folders
    (protos / "wrapper.yaml").write_text("name: wrapper\nsummary: s\nextends: literal.yaml\n")
    assert _t_mix(capsys, ["../protos/wrapper.yaml"]) == CYCLE_T_MIX
