"""The genotype layer: JSON round trips, validation messages that name the field, SearchSpace."""
from __future__ import annotations

import json
import random

import pytest

from nasnet_det.space import (
    AMOEBANET_A,
    DARTS_V2,
    NASNET_A,
    PAPER_OPS,
    PNASNET_5,
    Block,
    CellSpec,
    Genotype,
    GenotypeError,
    SearchSpace,
    get_genotype,
    list_genotypes,
    resolve_genotype,
    unused_states,
)

NAMED = [NASNET_A, PNASNET_5, AMOEBANET_A, DARTS_V2]


@pytest.mark.parametrize("genotype", NAMED, ids=lambda g: g.name)
def test_json_round_trip_text_and_file(genotype, tmp_path):
    assert Genotype.from_json(genotype.to_json()) == genotype
    path = tmp_path / "g.json"
    genotype.to_json(path)
    assert Genotype.from_json(path) == genotype
    assert Genotype.from_json(str(path)) == genotype
    assert resolve_genotype(str(path)) == genotype
    assert resolve_genotype(genotype.name) is genotype


def test_named_genotypes_registered_and_match_tf_encoding():
    assert {"nasnet_a", "pnasnet5", "amoebanet_a", "darts_v2"} <= set(list_genotypes())
    assert NASNET_A.normal.concat == (1, 2, 3, 4, 5, 6)
    assert NASNET_A.reduce.concat == (3, 4, 5, 6)
    assert NASNET_A.reduce.blocks[3] == Block((3, 2), ("identity", "avg_pool_3x3"))
    assert PNASNET_5.normal == PNASNET_5.reduce
    assert AMOEBANET_A.normal.concat == (1, 3, 4, 6)
    assert AMOEBANET_A.reduce.blocks[3].ops == ("sep_conv_3x3", "conv_1x7_7x1")


def _dict():
    return json.loads(NASNET_A.to_json())


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d["normal"]["blocks"][2]["ops"].__setitem__(1, "conv_9x9"), "normal.blocks[2].ops[1]"),
        (lambda d: d["reduce"]["blocks"][0]["inputs"].__setitem__(0, 2), "reduce.blocks[0].inputs[0]"),
        (lambda d: d["normal"]["blocks"][4]["inputs"].__setitem__(1, -1), "normal.blocks[4].inputs[1]"),
        (lambda d: d["normal"]["blocks"][1].__setitem__("combine", "mul"), "normal.blocks[1].combine"),
        (lambda d: d["normal"].__setitem__("concat", [3, 2]), "normal.concat"),
        (lambda d: d["normal"].__setitem__("concat", [1, 9]), "normal.concat[1]"),
        (lambda d: d["normal"].__setitem__("concat", []), "normal.concat"),
        (lambda d: d["reduce"].__setitem__("blocks", []), "reduce.blocks"),
        (lambda d: d["reduce"]["blocks"][0].__setitem__("inputs", [0, 1, 1]), "reduce.blocks[0].inputs"),
        (lambda d: d.__setitem__("num_blocks", 4), "normal.blocks"),
        (lambda d: d.pop("reduce"), "reduce"),
        (lambda d: d.__setitem__("colour", 1), "colour"),
    ],
)
def test_validation_error_names_the_field(mutate, field):
    data = _dict()
    mutate(data)
    with pytest.raises(GenotypeError) as info:
        Genotype.from_json(json.dumps(data))
    assert field in str(info.value)


def test_wrong_block_count_against_search_space():
    with pytest.raises(GenotypeError, match="expected 4 blocks, got 5"):
        NASNET_A.validate(num_blocks=4)
    with pytest.raises(GenotypeError, match="normal.blocks"):
        SearchSpace(num_blocks=4).encode(NASNET_A)


def test_bad_json_path_and_text(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(GenotypeError, match="nope.json"):
        Genotype.from_json(missing)
    with pytest.raises(GenotypeError, match="nope.json"):
        resolve_genotype(str(missing))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(GenotypeError, match="not valid JSON"):
        Genotype.from_json(bad)
    with pytest.raises(GenotypeError, match="unknown genotype name"):
        get_genotype("nasnet_z")


def test_constructor_validates():
    cell = CellSpec((Block((0, 1), ("identity", "teleport")),), (2,))
    with pytest.raises(GenotypeError, match=r"normal.blocks\[0\].ops\[1\]: unknown op 'teleport'"):
        Genotype(normal=cell, reduce=NASNET_A.reduce)


def test_unused_states_rule():
    blocks = (Block((0, 1), ("identity", "identity")), Block((2, 0), ("identity", "identity")))
    assert unused_states(blocks) == (3,)
    assert CellSpec.from_blocks(blocks).concat == (3,)


def test_search_space_decode_encode_round_trip():
    space = SearchSpace()
    sizes = space.decision_sizes()
    assert len(sizes) == space.num_decisions == 50
    assert sizes[:10] == [2, 2, 13, 13, 2, 3, 3, 13, 13, 2]
    assert space.decision_kinds()[:5] == ["input", "input", "op", "op", "combine"]
    rng = random.Random(0)
    for _ in range(20):
        decisions = [rng.randrange(n) for n in sizes]
        genotype = space.decode(decisions, name="x")
        assert space.encode(genotype) == decisions
        assert Genotype.from_json(genotype.to_json()) == genotype
        assert genotype.normal.concat == unused_states(genotype.normal.blocks)


def test_search_space_errors():
    space = SearchSpace(num_blocks=2, ops=PAPER_OPS[:3])
    with pytest.raises(GenotypeError, match="expected 20 decisions"):
        space.decode([0] * 19)
    bad = [0] * 20
    bad[2] = 3
    with pytest.raises(GenotypeError, match=r"decisions\[2\]"):
        space.decode(bad)
    with pytest.raises(GenotypeError, match="not in this search space"):
        SearchSpace(num_blocks=5, ops=PAPER_OPS[:3]).encode(NASNET_A)
    with pytest.raises(GenotypeError, match="search space ops"):
        SearchSpace(ops=("warp",))
    with pytest.raises(GenotypeError, match="num_blocks"):
        SearchSpace(num_blocks=0)
