"""``resolve_genotype_setting``: the one wording of a bad genotype in a config value."""
from __future__ import annotations

import pytest

from nasnet_det.space import NASNET_A, GenotypeError, resolve_genotype_setting


def test_a_good_value_resolves_like_resolve_genotype():
    assert resolve_genotype_setting("model.genotype", "nasnet_a") is NASNET_A
    assert resolve_genotype_setting("model.genotype", NASNET_A) is NASNET_A


@pytest.mark.parametrize("spec, cause", [("no_such_net", "unknown genotype name"),
                                         ("{tmp}/missing.json", "genotype file not found")])
def test_a_bad_value_names_the_key_and_the_cause(tmp_path, spec, cause):
    spec = spec.format(tmp=tmp_path)
    with pytest.raises(GenotypeError) as err:
        resolve_genotype_setting("MODEL.NASNET.GENOTYPE", spec)
    message = str(err.value)
    assert message.startswith(f"MODEL.NASNET.GENOTYPE={spec!r}: ") and cause in message and "\n" not in message
