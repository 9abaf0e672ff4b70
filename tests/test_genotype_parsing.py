"""Genotype JSON parsing under hostile input: one GenotypeError naming the file and field, nothing else.

The hypothesis tests feed arbitrary JSON-like values and mutated valid genotypes to the parser; the
only allowed outcomes are a valid ``Genotype`` or a ``GenotypeError`` (never a TypeError,
RecursionError, KeyError, ...).
"""
from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nasnet_det.errors import GenotypeError
from nasnet_det.space import NASNET_A, Genotype, SearchSpace, resolve_genotype

VALID = NASNET_A.to_dict()


def _one_line_error(call, *args) -> str:
    with pytest.raises(GenotypeError) as info:
        call(*args)
    message = str(info.value)
    assert "\n" not in message and len(message) < 2000, message
    return message


def test_binary_file_is_one_error_naming_the_file(tmp_path):
    path = tmp_path / "weights.json"
    path.write_bytes(b"\x80\x81\xff\x00PK\x03\x04" * 50)
    message = _one_line_error(resolve_genotype, str(path))
    assert str(path) in message and "not a JSON text file" in message


@pytest.mark.parametrize("field, value, expect", [
    ("ops", ["sep_conv_3x3", ["sep_conv_5x5"]], "normal.blocks[0].ops[1]: unknown op ['sep_conv_5x5']"),
    ("ops", [{"op": 1}, "sep_conv_3x3"], "normal.blocks[0].ops[0]: unknown op {'op': 1}"),
    ("combine", ["add"], "normal.blocks[0].combine: unknown combine op ['add']"),
    ("combine", {"add": True}, "normal.blocks[0].combine: unknown combine op"),
    ("inputs", [[0], 1], "normal.blocks[0].inputs[0]: input index [0] out of range"),
])
def test_unhashable_values_name_the_field(tmp_path, field, value, expect):
    data = copy.deepcopy(VALID)
    data["normal"]["blocks"][0][field] = value
    path = tmp_path / "g.json"
    path.write_text(json.dumps(data))
    message = _one_line_error(Genotype.from_json, path)
    assert message.startswith(f"{path}: ") and expect in message


def test_unhashable_concat_and_name(tmp_path):
    data = copy.deepcopy(VALID)
    data["reduce"]["concat"] = [3, [4], "x"]
    assert "reduce.concat[1]: state index [4] out of range" in _one_line_error(Genotype.from_dict, data)
    data = copy.deepcopy(VALID)
    data["name"] = {"deep": [1]}
    assert "genotype: name: expected a string" in _one_line_error(Genotype.from_dict, data)


def test_default_concat_with_unhashable_inputs():
    """Found by the fuzzer: without ``concat``, the default (unused states) must not hash bad inputs."""
    data = copy.deepcopy(VALID)
    del data["normal"]["concat"]
    data["normal"]["blocks"][3]["inputs"] = [[1], 0]
    assert "normal.blocks[3].inputs[0]: input index [1] out of range" in _one_line_error(Genotype.from_dict, data)


def test_very_deep_nesting_is_one_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"normal": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert "nested too deeply" in _one_line_error(Genotype.from_json, path)
    deep: object = "x"
    for _ in range(100_000):  # built without recursion, so json.loads is not what fails here
        deep = [deep]
    data = copy.deepcopy(VALID)
    data["normal"]["blocks"][1]["ops"] = deep
    assert "normal.blocks[1].ops: expected 2 ops" in _one_line_error(Genotype.from_dict, data)


def test_fewer_blocks_than_the_paper_space_parse_but_the_search_space_refuses(tmp_path):
    """B is free in the parser (DARTS-V2 has 4 blocks); the B=5 search space and ``num_blocks`` check it."""
    data = copy.deepcopy(VALID)
    for cell in ("normal", "reduce"):
        data[cell] = {"blocks": data[cell]["blocks"][:3]}
    three = Genotype.from_dict(data)
    assert three.normal.num_blocks == three.reduce.num_blocks == 3
    with pytest.raises(GenotypeError, match="normal.blocks: expected 5 blocks, got 3"):
        SearchSpace().encode(three)
    message = _one_line_error(Genotype.from_dict, {**data, "num_blocks": 5})
    assert "normal.blocks: expected 5 blocks, got 3" in message
    assert "num_blocks: expected an integer >= 1" in _one_line_error(Genotype.from_dict, {**data, "num_blocks": "5"})


def test_names_no_file_can_have_are_unknown_genotypes():
    assert "genotype file not found" in _one_line_error(resolve_genotype, "a\x00b.json")
    assert "unknown genotype name" in _one_line_error(resolve_genotype, "x" * 5000)


# --------------------------------------------------------------------------------------------
# fuzzing
# --------------------------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 12) | st.floats(allow_nan=True) | st.text(max_size=8)
    | st.sampled_from(["sep_conv_3x3", "identity", "add", "concat", "blocks", "inputs", "ops"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["name", "normal", "reduce", "num_blocks", "blocks", "concat", "inputs", "ops",
                         "combine", "x"]) | st.text(max_size=4), children, max_size=5),
    max_leaves=30,
)


def _paths(value, prefix=()):
    """Every (path, value) inside a JSON-like value, the root included."""
    yield prefix, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from _paths(child, prefix + (key,))


def _parses_or_genotype_error(data) -> None:
    try:
        Genotype.from_dict(data)
    except GenotypeError as err:
        assert "\n" not in str(err)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_fuzz_arbitrary_json_values(value):
    _parses_or_genotype_error(value)
    _parses_or_genotype_error({"normal": value, "reduce": value})
    _parses_or_genotype_error({"normal": {"blocks": [value]}, "reduce": VALID["reduce"]})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutated_valid_genotypes(data):
    genotype = copy.deepcopy(VALID)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p, _ in _paths(genotype) if p]
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        parent = genotype
        for key in path[:-1]:
            parent = parent[key]
        if data.draw(st.booleans()):
            parent[path[-1]] = data.draw(json_values)
        else:
            del parent[path[-1]]
    _parses_or_genotype_error(genotype)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40) | st.binary(max_size=40).map(lambda b: b.decode("latin-1")))
def test_fuzz_json_text(text):
    try:
        Genotype.from_json("{" + text)
    except GenotypeError as err:
        assert "\n" not in str(err)
