"""Scenario files: a corpus of mistakes, each one line naming file, key and value, exit 2."""

import pytest

from mixsim.cli import main

GOOD = """
name: tiny
seed: 1
workers: 4
protocol: {name: sync-ring}
problem: {name: logistic}
data: {name: breast-cancer, batch: 8}
optimizer:
  method: {name: sgd, lr: 0.1}
steps: 40
eval_every: 20
"""

CORPUS = [
    # (text replacing GOOD's line, or a whole file), needles in the error line
    ("workers: -3", ["workers", "-3", "greater than or equal to 1"]),
    ("workers: four", ["workers", "'four'"]),
    ("steps: 40\nepochs: 2", ["steps or epochs"]),
    ("eval_evry: 20", ["eval_evry", "did you mean 'eval_every'"]),
    ("optimizer:\n  method: {name: sgd, lr: -1}", ["optimizer.method.lr", "-1"]),
    ("optimizer:\n  placement: cloud", ["optimizer.placement", "'cloud'"]),
    ("optimizer:\n  placement: server\n  compressor: {name: top-k, density: 0.1}",
     ["optimizer.placement", "server slot", "sync-ring"]),
    ("optimizer:\n  method: {name: adamm}", ["adamm", "amsgrad"]),
    ("optimizer:\n  compressor: {name: top-q}", ["top-q", "top-k"]),
    ("optimizer:\n  compressor: {name: top-k, k: 100000}", ["k"]),
    ("data: {name: digitz}", ["digitz", "digits"]),
    ("data: {name: libsvm, path: /nonexistent/file.svm}", ["/nonexistent/file.svm"]),
    ("data: {name: digits, partition: {method: dirichlet, alpha: -1}}",
     ["data.partition.alpha", "-1"]),
    ("protocol: {name: sync-rnig}", ["sync-rnig", "sync-ring"]),
    ("protocol: {name: slack, params: {gamma: 7}}", ["params.gamma", "7"]),
    ("problem: {name: logistc}", ["logistc", "logistic"]),
    ("timing:\n  compute: {distribution: gaussian}", ["timing.compute.distribution", "gaussian"]),
    ("timing:\n  compute: {mean: 0}", ["timing.compute.mean", "0"]),
    ("seed: -1", ["seed", "-1"]),
]


def _write(tmp_path, replacement):
    key = replacement.split(":")[0]
    lines = [line for line in GOOD.strip().splitlines()
             if not line.startswith(key + ":") and not (
                 key in ("optimizer",) and line.startswith("  method"))]
    path = tmp_path / "scenario.yaml"
    path.write_text("\n".join(lines) + "\n" + replacement + "\n")
    return path


def test_the_good_scenario_is_valid(tmp_path, capsys):
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    assert main(["validate", str(path)]) == 0
    assert "valid scenario 'tiny'" in capsys.readouterr().out


@pytest.mark.parametrize(("replacement", "needles"), CORPUS,
                         ids=[c[0].splitlines()[-1][:40] for c in CORPUS])
def test_mistakes_give_one_line_and_exit_2(tmp_path, capsys, replacement, needles):
    path = _write(tmp_path, replacement)
    for argv in (["validate", str(path)], ["run", str(path), "--quiet"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert str(path) in err
        for needle in needles:
            assert needle in err, err


def test_missing_file_and_bad_yaml(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("workers: [1, 2\n")
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml:2" in err or "bad.yaml:1" in err


def test_line_numbers_point_at_the_key(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(GOOD.replace("eval_every: 20", "eval_every: 0"))
    assert main(["validate", str(path)]) == 2
    line = GOOD.strip().splitlines().index("eval_every: 20") + 2  # GOOD starts with \\n
    assert f"s.yaml:{line}: eval_every" in capsys.readouterr().err


def test_set_overrides_are_validated(tmp_path, capsys):
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    assert main(["run", str(path), "--set", "optimizer.method.lr=-5", "--quiet"]) == 2
    assert "optimizer.method.lr" in capsys.readouterr().err


def test_relative_paths_are_relative_to_the_scenario_file(tmp_path, monkeypatch, capsys):
    from sklearn.datasets import dump_svmlight_file, load_breast_cancer

    from mixsim.scenario import load_scenario

    folder = tmp_path / "project" / "scenarios"
    (folder / "data").mkdir(parents=True)
    (folder / "protocols").mkdir()
    X, y = load_breast_cancer(return_X_y=True)
    dump_svmlight_file(X[:120], y[:120], str(folder / "data" / "cancer.svm"))
    (folder / "protocols" / "ring.yaml").write_text(
        "name: my-ring\nsummary: ring\nschedule: sync\ncommunication:\n"
        "  - {on: round, op: gossip, args: {group: workers, graph: cycle_graph}}\n")
    (folder / "protocols" / "ring.edges").write_text("0 1\n1 2\n2 3\n3 0\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    data = "{name: libsvm, path: data/cancer.svm, batch: 8}"
    scenario = folder / "relative.yaml"
    scenario.write_text(GOOD.replace("{name: sync-ring}", "{name: protocols/ring.yaml}")
                        .replace("{name: breast-cancer, batch: 8}", data))
    assert main(["validate", str(scenario)]) == 0, capsys.readouterr().err
    resolved = load_scenario(scenario)
    assert resolved.data.path == str(folder / "data" / "cancer.svm")
    assert resolved.protocol.name == str(folder / "protocols" / "ring.yaml")
    # An edge-list file named as a protocol parameter, too.
    scenario.write_text(GOOD.replace("{name: sync-ring}",
                                     "{name: gossip, params: {graph: protocols/ring.edges}}")
                        .replace("{name: breast-cancer, batch: 8}", data))
    assert main(["validate", str(scenario)]) == 0, capsys.readouterr().err
    # A --set value is typed at the shell: relative to the working folder.
    (elsewhere / "mine.svm").write_bytes((folder / "data" / "cancer.svm").read_bytes())
    # (Raw LibSVM features: the loss grows past the divergence ratio; paths are the point.)
    assert main(["run", str(scenario), "--quiet", "--set", "data.path=mine.svm",
                 "--set", "divergence.loss_ratio=null", "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "metrics.csv").is_file()
