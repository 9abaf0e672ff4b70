"""tools/convert_weights.py on checkpoints a user really has (issue 14 items 7 and 14).

A TF-slim checkpoint saved from the ``is_training=False`` graph has no aux head; the converter
must detect that rather than fail, and loading the result into a model built with an aux head
must say how to build the right one.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nasnet_det
from nasnet_det.errors import WeightsError
from nasnet_det.weights import export_tf_variables, load_weights_into

ROOT = Path(__file__).resolve().parents[1]


def test_tf_checkpoint_without_aux_head_converts(tmp_path):
    tf = pytest.importorskip("tensorflow", reason="TF-slim checkpoints are read with tensorflow (tensorflow-cpu)")
    torch.manual_seed(0)
    src = nasnet_det.create_model("nasnet_a_mobile", num_classes=1001, use_aux_head=False)
    variables = export_tf_variables(src)
    assert not any(n.startswith("aux_") for n in variables)
    names = sorted(variables)
    prefix = str(tmp_path / "model.ckpt")
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(variables[n].numpy()) for n in names])
    out = tmp_path / "mobile.safetensors"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "convert_weights.py"), "tf", "--model",
                           "nasnet_a_mobile", "--checkpoint", prefix, "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no aux head" in proc.stdout
    assert oct(out.stat().st_mode & 0o777) == "0o644", "a weights file is for sharing: not 0600"

    with pytest.raises(WeightsError, match="use_aux_head=False"):
        load_weights_into(nasnet_det.create_model("nasnet_a_mobile"), out)
    model = nasnet_det.create_model("nasnet_a_mobile", use_aux_head=False)
    load_weights_into(model, out)
    assert torch.equal(model.cells[0].state_dict()[next(iter(model.cells[0].state_dict()))],
                       src.cells[0].state_dict()[next(iter(src.cells[0].state_dict()))])
