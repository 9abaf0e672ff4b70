"""Detector config errors (nasnet_det/detection/config.py load_config): one ConfigError naming
the source (file or command line), the key and the value, for every kind of mistake; and a
hypothesis fuzz of the override parser: random KEY VALUE lists load or raise ConfigError, nothing else.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import nasnet_det.detection  # noqa: F401, I001  (registers the plugin; compat first)

# isort: split
from detectron2.config import get_cfg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nasnet_det.detection.config import add_nasnet_config, load_config
from nasnet_det.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "nasnet_demo_synthetic.yaml")

# (overrides, every piece the message must contain)
BAD_OVERRIDES = [
    (["SOLVER.MAX_ITR", "3"],
     ["command-line", "unknown config key 'SOLVER.MAX_ITR'", "did you mean 'SOLVER.MAX_ITER'"]),
    (["model.nasnet.num_cells", "3"], ["unknown config key", "did you mean 'MODEL.NASNET.NUM_CELLS'"]),
    (["SOLVER.MAX_ITER.X", "3"], ["unknown config key 'SOLVER.MAX_ITER.X'"]),
    (["SOLVER.MAX_ITER", "thirty"], ["SOLVER.MAX_ITER", "'thirty'", "expected an integer"]),
    (["INPUT.FIXED_SIZE_TRAIN", "128"], ["INPUT.FIXED_SIZE_TRAIN", "got 128", "expected a list or tuple"]),
    (["INPUT.FIXED_SIZE_TRAIN", "(128,)"], ["INPUT.FIXED_SIZE_TRAIN", "(128,)", "(height, width)"]),
    (["INPUT.FIXED_SIZE_TEST", "(0, 64)"], ["INPUT.FIXED_SIZE_TEST", "(0, 64)"]),
    (["SOLVER.BASE_LR", "fast"], ["SOLVER.BASE_LR", "'fast'", "expected a number"]),
    (["MODEL.NASNET.MEMORY_SAVING", "1"], ["MODEL.NASNET.MEMORY_SAVING", "expected true/false", "got 1"]),
    (["MODEL.NASNET.NUM_CELLS", "3.5"], ["MODEL.NASNET.NUM_CELLS", "expected an integer", "got 3.5"]),
    (["MODEL.NASNET.ARCH", "nasnet_a_larg"], ["MODEL.NASNET.ARCH", "did you mean 'nasnet_a_large'"]),
    (["MODEL.NASNET.NUM_CELLS", "0"], ["MODEL.NASNET.NUM_CELLS: must be >= 1", "command-line override"]),
    (["MODEL.NASNET.FILTERS", "8"], ["PENULTIMATE_FILTERS and MODEL.NASNET.FILTERS are both set"]),
    (["SOLVER.MAX_ITER", "0"], ["SOLVER.MAX_ITER = 0", "command-line override", "positive integer"]),
    (["SOLVER.MAX_ITER", "-5"], ["SOLVER.MAX_ITER = -5", "positive integer"]),
    (["SOLVER.MAX_ITER", "None"], ["SOLVER.MAX_ITER", "got None"]),
    (["SOLVER.BASE_LR", "-0.1"], ["SOLVER.BASE_LR = -0.1", ">= 0"]),
    (["SOLVER.IMS_PER_BATCH", "0"], ["SOLVER.IMS_PER_BATCH = 0", ">= 1"]),
    (["SOLVER", "3"], ["'SOLVER' is a group of keys"]),
    (["SOLVER.STEPS", "{[]: 1}"], ["SOLVER.STEPS", "cannot be parsed"]),
    (["SOLVER.MAX_ITER"], ["KEY VALUE pairs", "'SOLVER.MAX_ITER' has no value"]),
    (["SOLVER.MAX_ITER", "3", "SOLVER.BASE_LR"], ["KEY VALUE pairs", "3 item(s)"]),
]


@pytest.mark.parametrize("opts,pieces", BAD_OVERRIDES, ids=[" ".join(o) for o, _ in BAD_OVERRIDES])
def test_bad_override_is_one_config_error(opts, pieces):
    with pytest.raises(ConfigError) as err:
        load_config(DEMO, opts)
    message = str(err.value)
    assert "\n" not in message
    for piece in pieces:
        assert piece in message, message


# (yaml text below the demo config as _BASE_, every piece the message must contain)
BAD_FILES = [
    ("SOLVER:\n  MAX_ITR: 3\n", ["unknown config key 'SOLVER.MAX_ITR'", "did you mean 'SOLVER.MAX_ITER'"]),
    ("SOLVER:\n  MAX_ITER: thirty\n", ["SOLVER.MAX_ITER: expected an integer", "'thirty'"]),
    ("INPUT:\n  FIXED_SIZE_TRAIN: 128\n", ["INPUT.FIXED_SIZE_TRAIN: expected a list or tuple", "got 128"]),
    ("SOLVER:\n  MAX_ITER: -3\n", ["SOLVER.MAX_ITER = -3", "positive integer"]),
    ("SOLVER:\n  BASE_LR: -0.5\n", ["SOLVER.BASE_LR = -0.5"]),
    ("SOLVER:\n  IMS_PER_BATCH: 0\n", ["SOLVER.IMS_PER_BATCH = 0"]),
    ("SOLVER: [1\n", ["not a yaml mapping"]),
    ("SOLVER:\n  MAX_ITER: 2020-01-01\n", ["SOLVER.MAX_ITER: expected an integer"]),
]


@pytest.mark.parametrize("text,pieces", BAD_FILES,
                         ids=[t.split(":")[-2].strip() + str(i) for i, (t, _) in enumerate(BAD_FILES)])
def test_bad_yaml_is_one_config_error_naming_the_file(tmp_path, text, pieces):
    path = tmp_path / "bad.yaml"
    path.write_text(f'_BASE_: "{DEMO}"\n{text}')
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    for piece in pieces:
        assert piece in message, message


@pytest.mark.parametrize("content,piece", [(b"- 1\n- 2\n", "not a yaml mapping"), (b"\xff\xfe\x00", "not UTF-8"),
                                           (b'_BASE_: "nope.yaml"\n', "nope.yaml")])
def test_unreadable_yaml_is_one_config_error(tmp_path, content, piece):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="bad.yaml") as err:
        load_config(str(path))
    assert piece in str(err.value)


def test_strict_annotations_key_exists_and_defaults_off():
    assert load_config(DEMO).DATASETS.STRICT_ANNOTATIONS is False
    assert load_config(DEMO, ["DATASETS.STRICT_ANNOTATIONS", "True"]).DATASETS.STRICT_ANNOTATIONS is True


def test_train_net_unknown_key_is_one_error_line():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "train_net.py"), "--config-file", DEMO,
                           "SOLVER.MAX_ITER", "thirty"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "SOLVER.MAX_ITER" in errors[0] and "thirty" in errors[0], proc.stderr[-2000:]


# ------------------------------------------------------------------------------ fuzzing
def _leaf_keys(node, prefix: str = "") -> list[str]:
    """Every dotted key of a config, for the fuzzer to draw from."""
    keys: list[str] = []
    for name, value in node.items():
        keys += _leaf_keys(value, f"{prefix}{name}.") if hasattr(value, "items") else [f"{prefix}{name}"]
    return keys


LEAF_KEYS = sorted(_leaf_keys(add_nasnet_config(get_cfg())))
LITERALS = ["0", "1", "-1", "0.5", "-2.5", "True", "False", "None", "()", "(1,)", "(64, 64)", "[]", "[[1, 2]]",
            "{}", "{'A': 1}", "{[]: 1}", "'x'", "thirty", "cuda", "cpu", "BN", "nasnet_a", "1e999", "nan",
            "((((((((((", "(" * 200 + ")" * 200, "", " ", "\x00", "/", "."]
keys = st.one_of(st.sampled_from(LEAF_KEYS), st.sampled_from(["SOLVER", "MODEL.NASNET", "_BASE_", "", "."]),
                 st.sampled_from(LEAF_KEYS).map(lambda k: k + ".X"), st.text(max_size=20))
values = st.one_of(st.sampled_from(LITERALS), st.text(max_size=20))
pairs = st.lists(st.tuples(keys, values), max_size=4).map(lambda ps: [x for p in ps for x in p])
opts_lists = st.one_of(pairs, pairs.map(lambda o: o + ["SOLVER.MAX_ITER"]))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(opts_lists)
def test_fuzz_overrides_load_or_raise_config_error(opts):
    try:
        cfg = load_config(None, opts)
    except ConfigError as err:
        assert "\n" not in str(err)
    else:
        assert cfg.SOLVER.MAX_ITER > 0
