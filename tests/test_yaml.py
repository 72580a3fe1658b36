"""Reading users' YAML: bounded, UTF-8, no duplicate keys, YAML 1.2 booleans."""

import time

import pytest
import yaml

from mixsim import _yaml
from mixsim.errors import ConfigError, ProtocolError
from mixsim.protocol import load_protocol
from mixsim.scenario import load_scenario

# Nine levels of ten aliases each: 10^9 leaves once expanded, 300 bytes on disk.
BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]\n"
    for i in range(8))


def test_yaml_12_booleans_only():
    assert _yaml.load("on: yes\noff: no\nx: true\ny: False") == {
        "on": "yes", "off": "no", "x": True, "y": False}


@pytest.mark.parametrize("text", ["a: 1\nb: 2\na: 3\n", "{a: 1, a: 2}", "s: {x: 1, x: 1}"])
def test_duplicate_keys_rejected(text):
    with pytest.raises(yaml.YAMLError, match="duplicate key"):
        _yaml.load(text)


def test_merge_keys_and_aliases_still_work():
    text = "base: &b {c: 1, d: 2}\nother: {<<: *b, c: 3}\nsame: *b\n"
    assert _yaml.load(text) == {"base": {"c": 1, "d": 2}, "other": {"c": 3, "d": 2},
                                "same": {"c": 1, "d": 2}}


def test_alias_bomb_rejected_at_once():
    started = time.perf_counter()
    with pytest.raises(yaml.YAMLError, match="alias"):
        _yaml.load(BILLION_LAUGHS)
    assert time.perf_counter() - started < 2


def test_recursive_alias_rejected():
    with pytest.raises(yaml.YAMLError, match="contains it"):
        _yaml.load("a: &x [1, *x]\n")


def test_node_bound_counts_expanded_aliases():
    # Just under the bound with aliases is accepted; one level more is not.
    leaf = "[" + ", ".join(["1"] * 99) + "]"
    ok = f"a: &a {leaf}\nb: [" + ", ".join(["*a"] * (_yaml.MAX_NODES // 100 - 2)) + "]\n"
    assert len(_yaml.load(ok)["b"]) == _yaml.MAX_NODES // 100 - 2
    too_many = f"a: &a {leaf}\nb: [" + ", ".join(["*a"] * (_yaml.MAX_NODES // 100)) + "]\n"
    with pytest.raises(yaml.YAMLError, match=f"more than {_yaml.MAX_NODES} nodes"):
        _yaml.load(too_many)


def test_scenario_file_bombs_and_sizes_one_line(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BILLION_LAUGHS)
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"bomb\.yaml:\d+: not valid YAML \(more than"):
        load_scenario(bomb)
    big = tmp_path / "big.yaml"
    big.write_text("steps: 10\nlist:\n" + "  - 1\n" * 10_000_000)  # 60 MB
    with pytest.raises(ConfigError, match=f"larger than {_yaml.MAX_BYTES} bytes"):
        load_scenario(big)
    assert time.perf_counter() - started < 2


def test_non_utf8_named_with_its_line(tmp_path):
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"name: x\nsteps: 10\n# caf\xe9\n")
    with pytest.raises(ConfigError, match=r"latin\.yaml:3: not UTF-8 text \(byte 0xe9\)"):
        load_scenario(path)
    with pytest.raises(ProtocolError, match=r"latin\.yaml:3: not UTF-8"):
        load_protocol(path)


def test_duplicate_key_in_scenario_names_file_line_and_key(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("steps: 10\nworkers: 2\nsteps: 20\n")
    with pytest.raises(ConfigError, match=r"dup\.yaml:3: .*duplicate key 'steps' \(first on "
                                          r"line 1\)"):
        load_scenario(path)


def test_an_integer_too_long_to_read_is_a_yaml_error():
    with pytest.raises(yaml.YAMLError, match="4300 digits"):
        _yaml.load("steps: " + "9" * 5001 + "\n")
