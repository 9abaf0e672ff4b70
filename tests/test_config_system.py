"""The one config system (nasnet_det/config.py) as search, pretraining and detection see it: one
boolean rule, one override syntax, one unknown-key message, ``--print-config`` in every tool,
saved configs that reload, and one network description (a preset plus overrides)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import nasnet_det  # noqa: F401  (registers the detection plugin)
from nasnet_det.config import to_dict
from nasnet_det.detection.config import load_config as load_detection
from nasnet_det.errors import ConfigError
from nasnet_det.modeling import create_model, resolve_network
from nasnet_det.pretrain import load_config as load_pretrain
from nasnet_det.search import config_from_dict
from nasnet_det.search import load_config as load_search

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "nasnet_demo_synthetic.yaml")

# (loader of (opts) -> config, a boolean key, how to read it back)
SYSTEMS = {
    "search": (lambda opts: load_search(None, opts), "data.flip", lambda c: c.data.flip),
    "pretrain": (lambda opts: load_pretrain(None, opts, check_paths=False), "train.amp", lambda c: c.train.amp),
    "detection": (lambda opts: load_detection(DEMO, opts), "MODEL.NASNET.MEMORY_SAVING",
                  lambda c: c.MODEL.NASNET.MEMORY_SAVING),
}


@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("text, value", [("true", True), ("True", True), ("false", False), ("FALSE", False),
                                         ("yes", True), ("off", False)])
def test_one_boolean_rule_accepts_yaml_booleans_everywhere(system, text, value):
    load, key, read = SYSTEMS[system]
    assert read(load([key, text])) is value


@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("text", ["1", "0", "maybe", "'true'"])
def test_one_boolean_rule_refuses_numbers_and_strings_everywhere(system, text):
    load, key, _ = SYSTEMS[system]
    with pytest.raises(ConfigError, match=f"{key}: expected true/false"):
        load([key, text])


@pytest.mark.parametrize("system", SYSTEMS)
def test_a_quoted_boolean_in_a_file_is_refused_everywhere(system, tmp_path):
    _, key, _ = SYSTEMS[system]
    *sections, name = key.split(".")
    text = "".join(f"{'  ' * i}{s}:\n" for i, s in enumerate(sections)) + f"{'  ' * len(sections)}{name}: 'true'\n"
    path = tmp_path / "bool.yaml"
    path.write_text((f'_BASE_: "{DEMO}"\n' if system == "detection" else "") + text)
    load = {"search": load_search, "pretrain": lambda p: load_pretrain(p, check_paths=False),
            "detection": load_detection}[system]
    with pytest.raises(ConfigError, match=f"bool.yaml.*{key}: expected true/false"):
        load(str(path))


@pytest.mark.parametrize("system, key, suggestion", [("search", "child.epoch", "child.epochs"),
                                                     ("pretrain", "optim.lr_decay_epoch", "optim.lr_decay_epochs"),
                                                     ("detection", "SOLVER.MAX_ITR", "SOLVER.MAX_ITER")])
def test_unknown_key_names_the_closest_one_and_old_style_overrides_say_how(system, key, suggestion):
    load = SYSTEMS[system][0]
    with pytest.raises(ConfigError, match=f"unknown config key '{key}' \\(did you mean '{suggestion}'\\?\\)"):
        load([key, "3"])
    with pytest.raises(ConfigError, match=f"KEY VALUE pairs \\(detectron2 style\\): write '{key} 3'"):
        load([f"{key}=3"])


def test_print_config_of_every_tool_is_yaml_that_reloads(load_tool, capsys, tmp_path):
    search = str(ROOT / "configs" / "search" / "cpu_demo.yaml")
    assert load_tool("search").main(["--config-file", search, "--print-config", "child.epochs", "2"]) == 0
    printed = tmp_path / "search.yaml"
    printed.write_text(capsys.readouterr().out)
    assert load_search(printed).to_dict() == load_search(search, ["child.epochs", "2"]).to_dict()

    pretrain = str(ROOT / "configs" / "pretrain" / "cifar10_small.yaml")
    assert load_tool("pretrain").main(["--config-file", pretrain, "--print-config", "optim.lr", "0.1"]) == 0
    printed = tmp_path / "pretrain.yaml"
    printed.write_text(capsys.readouterr().out)
    assert load_pretrain(printed, check_paths=False).to_dict() == load_pretrain(
        pretrain, ["optim.lr", "0.1"], check_paths=False).to_dict()

    load_tool("train_net").invoke_main(["--config-file", DEMO, "--print-config", "SOLVER.MAX_ITER", "7"])
    printed = tmp_path / "detector.yaml"
    printed.write_text(capsys.readouterr().out)
    assert to_dict(load_detection(str(printed))) == to_dict(load_detection(DEMO, ["SOLVER.MAX_ITER", "7"]))


def test_saved_search_config_and_older_layouts_reload():
    cfg = load_search(ROOT / "configs" / "search" / "cpu_demo.yaml")
    assert config_from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict())), "saved").to_dict() == cfg.to_dict()
    old = cfg.to_dict()  # the layout of a search folder written before child.arch / child.network
    network = old["child"].pop("network")
    del old["child"]["arch"]
    old["child"].update(num_cells=network["num_cells"], filters=network["num_conv_filters"], bn_momentum=0.1,
                        dense_dropout_keep_prob=1.0)
    moved = config_from_dict(old, "old config.yaml")
    assert moved.child.network.num_cells == 1 and moved.child.network.num_conv_filters == 8
    assert load_search(None, ["child.filters", "12"]).child.network.num_conv_filters == 12


def test_one_network_description():
    """A preset plus overrides: the same NASNetConfig from every config, the same errors."""
    assert resolve_network("nasnet_a_large") == create_model("nasnet_a_large").config
    detector = load_detection(str(ROOT / "configs" / "nasnet_a_large_frcnn.yaml"))
    from nasnet_det.detection.split_nasnet import network_config

    assert network_config(detector) == resolve_network("nasnet_a_large", num_classes=0, use_aux_head=False)
    sized = resolve_network("nasnet_a_cifar", num_cells=3, penultimate_filters=96)
    assert (sized.num_cells, sized.num_conv_filters) == (3, 4)
    with pytest.raises(ConfigError, match="model.arch: unknown model 'nasnet_a_larg' \\(did you mean 'nasnet_a_large'"):
        load_pretrain(None, ["model.arch", "nasnet_a_larg"], check_paths=False)
    with pytest.raises(ConfigError, match="MODEL.NASNET.NUM_CELLS: expected an integer"):
        load_detection(DEMO, ["MODEL.NASNET.NUM_CELLS", "three"])
    with pytest.raises(ConfigError, match="child.network.num_conv_filters: must be >= 1"):
        load_search(None, ["child.network.num_conv_filters", "0"])


def test_tool_flags_may_follow_the_overrides():
    """"The same command plus --resume" typed at the end: the flag is a flag, the overrides stay in order."""
    import argparse

    from nasnet_det.config import add_config_arguments, parse_tool_args

    parser = argparse.ArgumentParser()
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--threads", type=int, default=0)
    add_config_arguments(parser)
    args = parse_tool_args(parser, ["--config-file", "c.yaml", "a.b", "1", "--resume", "c.d", "x", "--threads", "2"])
    assert args.resume and args.threads == 2 and args.config_file == "c.yaml"
    assert args.opts == ["a.b", "1", "c.d", "x"]
    args = parse_tool_args(parser, ["a.b", "--x"])  # in a value's place it stays a value
    assert not args.resume and args.opts == ["a.b", "--x"]
