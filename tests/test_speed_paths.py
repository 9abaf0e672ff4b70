"""The speed / memory paths compute the same function as the plain model (equality only, no timings).

Tiny networks keep this file well under a minute on 2 shared cores; the benchmarks run the real ones.
"""
from __future__ import annotations

import copy
import importlib.util
import warnings

import pytest
import torch

from nasnet_det.modeling import NASNet, build_nasnet, create_model
from nasnet_det.modeling.inference import fold_batchnorm, optimize_detector_for_inference, optimize_for_inference
from nasnet_det.modeling.memory import disable_memory_saving, enable_memory_saving, memory_saving_enabled

FP32_TOL = 1e-4  # max |diff| relative to max |reference|: BN folding reorders a few float ops
BF16_TOL = 5e-2  # bf16 keeps 8 mantissa bits; errors compound over ~10 cells


def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BN statistics and affines, so folding is really exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
    return model


#: oneDNN Graph fuses bf16 convolutions only where torch's oneDNN has bf16 kernels (AVX512-BF16 / AMX;
#: AVX512 emulation); elsewhere the trace may be refused and the path falls back to the plain forward
NEEDS_BF16_KERNELS = pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(),
                                        reason="this CPU has no oneDNN bf16 kernels (needs AVX512 / AMX)")


def _tiny(genotype: str = "nasnet_a", **kw) -> torch.nn.Module:
    """An ImageNet-skeleton network (stem cells, factorized reductions, skip input) a few MFLOPs big."""
    torch.manual_seed(0)
    kw.setdefault("num_cells", 3)
    kw.setdefault("penultimate_filters", 192 if genotype == "nasnet_a" else 160)
    return _randomize(build_nasnet(genotype, dataset="imagenet", num_classes=10, **kw)).eval()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12))


MODELS = {
    "nasnet_a": lambda: _tiny("nasnet_a"),
    "nasnet_a_skip": lambda: _tiny("nasnet_a", skip_reduction_layer_input=True),
    "pnasnet5": lambda: _tiny("pnasnet5", reduction_style="stride", skip_reduction_layer_input=True),
    "amoebanet_a": lambda: _tiny("amoebanet_a", penultimate_filters=128),
    "cifar": lambda: _randomize(build_nasnet("nasnet_a", dataset="cifar", num_cells=3, penultimate_filters=96,
                                             num_classes=10)).eval(),
}


def _input(model, batch: int = 2) -> torch.Tensor:
    size = 32 if model.config.dataset == "cifar" else 67  # odd size: TF SAME asymmetric pads + odd FR
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


_OPTS = {
    "fold": dict(channels_last=False),  # BN folding (+ the cells' no-grad in-place work, always on)
    "channels_last": dict(fold_bn=False, channels_last=True),  # channels_last
    "in_place": dict(fold_bn=False, channels_last=False),  # only the cells' in-place ReLU / adds
    "all": dict(),  # everything (the default)
}
_CASES = [(n, o) for n in sorted(MODELS) for o in ("fold", "all")] + [
    (n, o) for n in ("nasnet_a_skip", "pnasnet5") for o in ("channels_last", "in_place")]


@pytest.mark.parametrize("name,opts", _CASES, ids=[f"{n}-{o}" for n, o in _CASES])
def test_inference_paths_match_plain(name, opts):
    model = MODELS[name]()
    x = _input(model)
    fast = optimize_for_inference(model, **_OPTS[opts])
    with torch.inference_mode():
        ref, out = model(x), fast(x)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert _rel(out, ref) < FP32_TOL


def test_even_input_and_batch_one():
    model = MODELS["nasnet_a"]()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        assert _rel(optimize_for_inference(model)(x), model(x)) < FP32_TOL


@pytest.mark.parametrize("name", ["nasnet_a_skip", "amoebanet_a", "cifar"])
def test_in_place_work_without_gradients_is_bit_exact(name):
    """The no-grad forward (in-place ReLUs and adds) gives exactly the recording forward's values."""
    model = MODELS[name]()
    x = _input(model)
    recorded = model(x).detach()
    with torch.no_grad():
        assert torch.equal(model(x), recorded)
    with torch.inference_mode():
        assert torch.equal(model(x), recorded)


def test_bf16_within_its_tolerance():
    model = MODELS["nasnet_a"]()
    x = _input(model)
    fast = optimize_for_inference(model, bf16=True)
    with torch.inference_mode():
        ref, out = model(x), fast(x)
    assert out.dtype == torch.float32
    assert _rel(out, ref) < BF16_TOL


def test_optimized_model_keeps_the_contract():
    model = MODELS["nasnet_a_skip"]()
    fast = optimize_for_inference(model)
    assert type(fast) is NASNet and fast.channels_last_input and not fast.bf16_autocast
    assert not model.channels_last_input  # a copy by default
    # folded BNs are gone, every other key is unchanged
    plain_keys = {k for k in model.state_dict() if ".bn" not in k and "_bn" not in k}
    assert plain_keys <= set(fast.state_dict()) | {k for k in plain_keys if k.endswith(".bias")}
    # a contiguous slice through forward_cells (what the detection heads run)
    x = _input(model)
    k = model.reduction_indices[0] + 2  # past the skip-input cell after the first reduction
    with torch.inference_mode():
        a = model.forward_cells(*model.stem(x), 0, k)
        b = fast.forward_cells(*fast.stem(x), 0, k)
        assert _rel(b[1], a[1]) < FP32_TOL and _rel(b[0], a[0]) < FP32_TOL
        tail_a = model.forward_cells(a[0], a[1], k, None)[1]
        tail_b = fast.forward_cells(a[0], a[1], k, None)[1]
        assert _rel(tail_b, tail_a) < FP32_TOL
        assert _rel(fast.forward_features(x), model.forward_features(x)) < FP32_TOL


def test_fold_batchnorm_counts_and_is_exact_per_module():
    model = MODELS["amoebanet_a"]()  # has the 1x7/7x1 bottleneck op
    ref_model = copy.deepcopy(model)
    n = fold_batchnorm(model)
    assert n == sum(isinstance(m, torch.nn.BatchNorm2d) for m in ref_model.modules())  # every BN folds
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.cells.modules())
    x = _input(model)
    with torch.no_grad():
        assert _rel(model(x), ref_model(x)) < FP32_TOL


def test_training_mode_falls_back_to_plain_cells():
    model = MODELS["nasnet_a"]()
    fast = optimize_for_inference(model, fold_bn=False, channels_last=False)
    fast.train()
    model.train()
    x = _input(model)
    torch.manual_seed(3)
    a = model(x)
    torch.manual_seed(3)
    b = fast(x)
    for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        assert torch.equal(u, v)


# ---------------------------------------------------------------------------------------------------
# Training memory saving
# ---------------------------------------------------------------------------------------------------
def _train_step(model, x, y, seed=7):
    torch.manual_seed(seed)  # drop-path masks and dropout
    out = model(x)
    logits, aux = out if isinstance(out, tuple) else (out, None)
    loss = torch.nn.functional.cross_entropy(logits, y)
    if aux is not None:
        loss = loss + 0.4 * torch.nn.functional.cross_entropy(aux, y)
    loss.backward()
    return loss.detach()


@pytest.mark.parametrize("name", ["nasnet_a", "pnasnet5"])
def test_checkpointing_gives_identical_training_step(name):
    model = MODELS[name]()
    model.config  # noqa: B018 - the network exposes its config
    model.train()
    model.set_drop_path_progress(0.7)  # drop-path active: recomputation must replay the same masks
    for c in model.cells:
        c.drop_path_keep_prob = 0.6
    ckpt = enable_memory_saving(copy.deepcopy(model))
    assert memory_saving_enabled(ckpt) and all(c.grad_checkpointing for c in ckpt.cells)
    assert ckpt.grad_checkpointing  # the full-resolution stem is recomputed too
    assert list(ckpt.state_dict()) == list(model.state_dict())
    x, y = _input(model), torch.tensor([1, 3])
    la, lb = _train_step(model, x, y), _train_step(ckpt, x, y)
    assert torch.equal(la, lb)
    for (n, p), q in zip(model.named_parameters(), ckpt.parameters()):
        assert (p.grad is None) == (q.grad is None), n
        if p.grad is not None:
            assert torch.allclose(p.grad, q.grad, rtol=1e-5, atol=1e-7), n
    for (n, b), c in zip(model.named_buffers(), ckpt.buffers()):  # BN stats updated exactly once
        assert torch.equal(b, c), n
    disable_memory_saving(ckpt)
    assert not memory_saving_enabled(ckpt) and not any(c.grad_checkpointing for c in ckpt.cells)
    assert not ckpt.grad_checkpointing


def test_set_grad_checkpointing_is_the_same_switch():
    model = MODELS["nasnet_a"]()
    model.set_grad_checkpointing()
    assert memory_saving_enabled(model) and model.grad_checkpointing
    model.set_grad_checkpointing(False)
    assert not memory_saving_enabled(model)
    enable_memory_saving(model, cells=[1])  # a subset: those cells only, not the stem
    assert [c.grad_checkpointing for c in model.cells] == [i == 1 for i in range(len(model.cells))]
    assert not model.grad_checkpointing


def test_optimizing_a_memory_saving_model_matches_plain():
    model = MODELS["nasnet_a"]()
    fast = optimize_for_inference(enable_memory_saving(copy.deepcopy(model)))
    x = _input(model)
    with torch.inference_mode():
        assert _rel(fast(x), model(x)) < FP32_TOL


def test_checkpointing_is_inert_in_eval_and_no_grad():
    model = MODELS["nasnet_a"]()
    ckpt = enable_memory_saving(copy.deepcopy(model)).eval()
    x = _input(model)
    with torch.no_grad():
        assert torch.equal(ckpt(x), model(x))


@pytest.mark.skipif(importlib.util.find_spec("detectron2") is None, reason="detectron2 is not installed")
def test_detector_stages_match_after_optimizing():
    import nasnet_det.detection  # noqa: F401  (first: registers the plugin and the compat layer)
    # isort: split
    from detectron2.modeling import build_model

    from benchmarks.builders import detector_cfg

    torch.manual_seed(0)
    cfg = detector_cfg("nasnet_mobile", 0)
    cfg.defrost()
    cfg.MODEL.NASNET.NUM_CELLS = 3
    cfg.MODEL.NASNET.PENULTIMATE_FILTERS = 192
    cfg.freeze()
    det = build_model(cfg).eval()
    _randomize(det)
    for m in det.modules():  # FrozenBN buffers too
        if type(m).__name__ == "FrozenBatchNorm2d":
            m.running_var.uniform_(0.5, 1.5)
            m.running_mean.uniform_(-0.5, 0.5)
    ref = copy.deepcopy(det)
    optimize_detector_for_inference(det)
    x = torch.randn(1, 3, 96, 96)
    with torch.inference_mode():
        fa, fb = ref.backbone(x), det.backbone(x)
        for k in fa:
            assert _rel(fb[k], fa[k]) < FP32_TOL
        pooled = torch.randn(3, ref.roi_heads.res5.split_channels[0] + ref.roi_heads.res5.split_channels[1], 9, 9)
        assert _rel(det.roi_heads.res5(pooled), ref.roi_heads.res5(pooled)) < FP32_TOL


COMPILED_TOL = 1e-5  # the compiled path's promise (fp32): inductor reorders a few sums, nothing else


@pytest.mark.slow  # inductor compiles C++ kernels: 20 s to minutes on 2 shared cores
def test_compiled_model_matches_plain_and_a_second_compile_reads_the_disk_cache(tmp_path, monkeypatch):
    from torch._dynamo.utils import counters

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))  # a cold cache of its own
    model = MODELS["cifar"]()
    x = _input(model)
    counters.clear()
    fast = optimize_for_inference(model, compile=True)
    assert type(fast) is NASNet  # still the contract's class: compiled in place
    with torch.inference_mode():
        ref, out = model(x), fast(x)
        assert _rel(fast(x), ref) < COMPILED_TOL  # the second call runs the same compiled graph
    assert _rel(out, ref) < COMPILED_TOL
    assert counters["inductor"]["fxgraph_cache_miss"] >= 1 and counters["inductor"]["fxgraph_cache_hit"] == 0
    assert (tmp_path / "inductor").is_dir()
    # a new process has nothing in memory: Dynamo's reset is the same state, the disk cache is not reset
    torch._dynamo.reset()
    counters.clear()
    again = optimize_for_inference(model, compile=True)
    with torch.inference_mode():
        assert _rel(again(x), ref) < COMPILED_TOL
    assert counters["inductor"]["fxgraph_cache_hit"] >= 1 and counters["inductor"]["fxgraph_cache_miss"] == 0


@pytest.mark.slow
def test_compiled_cells_match_plain():
    model = MODELS["cifar"]()
    fast = optimize_for_inference(model, compile="cells")
    x = _input(model)
    with torch.inference_mode():
        assert _rel(fast(x), model(x)) < COMPILED_TOL


def test_compiling_cells_raises_dynamo_s_recompile_limit_for_every_cell():
    """All cells share ``Cell.forward``: under dynamo's default limit of 8 compilations per code
    object, cells past the eighth would silently run eagerly (compilation itself is lazy, so this
    costs nothing here)."""
    config = torch._dynamo.config
    saved = config.recompile_limit
    try:
        model = build_nasnet("nasnet_a", dataset="cifar", num_cells=9, penultimate_filters=48, num_classes=10)
        assert len(model.cells) > 8
        optimize_for_inference(model, compile="cells")
        assert config.recompile_limit == saved + 2 * len(model.cells)
        optimize_for_inference(model, compile=False)  # nothing compiled: the limit stays
        assert config.recompile_limit == saved + 2 * len(model.cells)
    finally:
        config.recompile_limit = saved


@pytest.mark.parametrize("name", ["nasnet_a", "nasnet_a_skip", "pnasnet5", "amoebanet_a", "cifar"])
def test_onednn_graph_path_matches_plain(name):
    """compile='onednn': eval calls without gradients run a checked, fused trace per input shape;
    the outputs stay the plain model's (a trace oneDNN Graph computes wrongly is dropped, see below)."""
    model = MODELS[name]()
    fast = optimize_for_inference(model, compile="onednn")
    x = _input(model)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*fused trace for input shape")  # pnasnet5 on torch 2.14
        for _ in range(2):
            assert _rel(fast(x), model(x)) < FP32_TOL
        assert len(fast.fused_graphs) == 1
        assert _rel(fast(x[:1]), model(x[:1])) < FP32_TOL  # a new shape: a second trace
        assert len(fast.fused_graphs) == 2
    assert not torch.jit.onednn_fusion_enabled()  # the process-wide switch is restored


def test_onednn_graph_path_runs_large_batches_in_chunks():
    model = MODELS["cifar"]()
    fast = optimize_for_inference(model, compile="onednn", batch_chunk=2)
    x = _input(model, batch=5)
    with torch.inference_mode():
        assert _rel(fast(x), model(x)) < FP32_TOL
    assert sorted(key[0][0] for key in fast.fused_graphs._graphs) == [1, 2]  # chunks 2, 2, 1: two traces
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="batch_chunk="):
            optimize_for_inference(model, compile="onednn", batch_chunk=bad)


def test_onednn_graph_path_really_fuses():
    model = MODELS["nasnet_a"]()
    fast = optimize_for_inference(model, compile="onednn")
    x = _input(model)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("error")  # NASNet-A's trace passes its check
        fast(x)
        assert "oneDNNFusionGroup" in str(torch.jit.last_executed_optimized_graph())
        assert _rel(fast(x), model(x)) < FP32_TOL


@pytest.mark.parametrize("bf16", [False, pytest.param(True, marks=NEEDS_BF16_KERNELS)])
def test_onednn_graph_trace_that_disagrees_is_dropped_with_a_warning(monkeypatch, bf16):
    """A fault in the fused kernels (injected here, 30 % off; torch 2.14's oneDNN Graph is 16-36 % off
    on some PNASNet-5 wirings) never reaches the caller: a warning, and that shape runs the plain
    forward. In bf16 too, whose check has a wider tolerance."""
    from nasnet_det.modeling.graph_fusion import FusedGraphs

    real_trace = FusedGraphs._trace

    def faulty(model, x):
        graph = real_trace(model, x)
        return lambda inp: graph(inp) * 1.3

    monkeypatch.setattr(FusedGraphs, "_trace", staticmethod(faulty))
    model = MODELS["cifar"]()
    fast = optimize_for_inference(model, compile="onednn", bf16=bf16)
    plain = optimize_for_inference(model, bf16=True) if bf16 else model
    tol = BF16_TOL if bf16 else FP32_TOL
    x = _input(model)
    with torch.inference_mode():
        with pytest.warns(UserWarning, match=r"fused trace for input shape \(2, 3, 32, 32\) is not used: it differs"):
            first = fast(x)
        assert _rel(first, plain(x)) < 1e-6  # the plain forward's own result
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # decided once per shape
            assert _rel(fast(x), model(x)) < tol


@NEEDS_BF16_KERNELS
def test_onednn_graph_path_in_bf16():
    """compile='onednn' with bf16=True: the trace records the autocast casts, so the fused kernels run in
    bf16 (not float32: the result differs from the float32 one by more than float32 reordering does);
    float32 out, within bf16's tolerance of the plain model and of the eager bf16 path."""
    from nasnet_det.modeling.graph_fusion import BF16_TOLERANCE

    model = MODELS["nasnet_a"]()
    fast = optimize_for_inference(model, compile="onednn", bf16=True)
    eager = optimize_for_inference(model, bf16=True)
    assert fast.fused_graphs.tolerance == BF16_TOLERANCE
    x = _input(model)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("error")  # the bf16 trace passes its check
        out = fast(x)
        out = fast(x)
        graph = str(torch.jit.last_executed_optimized_graph())
        assert "oneDNNFusionGroup" in graph and "BFloat16" in graph
        ref = model(x)
        assert out.dtype == torch.float32 and len(fast.fused_graphs) == 1
        assert _rel(out, ref) < BF16_TOL and _rel(out, eager(x)) < BF16_TOL
        assert _rel(out, ref) > 1e-5


def test_onednn_graph_trace_that_fails_is_dropped_but_a_wrong_input_still_raises(monkeypatch):
    from nasnet_det.modeling.graph_fusion import FusedGraphs

    def failing(model, x):
        raise RuntimeError("bad optional access")  # what oneDNN Graph raised on a cloned identity state

    monkeypatch.setattr(FusedGraphs, "_trace", staticmethod(failing))
    model = MODELS["cifar"]()
    fast = optimize_for_inference(model, compile="onednn")
    x = _input(model)
    with torch.inference_mode():
        with pytest.warns(UserWarning, match="is not used: bad optional access"):
            assert _rel(fast(x), model(x)) < FP32_TOL
        with pytest.raises(RuntimeError, match="channels"):  # the plain model's own error, not a warning
            fast(torch.randn(2, 4, 32, 32))


def test_onednn_graph_path_leaves_training_gradients_and_copies_alone():
    model = MODELS["nasnet_a"]()
    fast = optimize_for_inference(model, compile="onednn")
    x = _input(model)
    assert _rel(fast(x).detach(), model(x).detach()) < FP32_TOL  # gradients recorded: the plain forward
    assert len(fast.fused_graphs) == 0
    with torch.no_grad():
        fast(x)
    twin = copy.deepcopy(fast)
    assert len(twin.fused_graphs) == 0 and len(fast.fused_graphs) == 1  # traces hold the old weights
    assert list(twin.state_dict()) == list(fast.state_dict())
    fast.train()
    with torch.no_grad():
        fast(x)
    assert len(fast.fused_graphs) == 1


def test_compile_mode_is_checked():
    with pytest.raises(ValueError, match="compile='graph'"):
        optimize_for_inference(MODELS["cifar"](), compile="graph")
    with pytest.raises(ValueError, match="compile_options=.*without compile"):
        optimize_for_inference(MODELS["cifar"](), compile_options={"cpp_wrapper": True})
    with pytest.raises(ValueError, match="compile_options=.*without compile"):
        optimize_for_inference(MODELS["cifar"](), compile="onednn", compile_options={"cpp_wrapper": True})
    with pytest.raises(ValueError, match="compile='onednn' fuses whole-network forward calls"):
        optimize_detector_for_inference(torch.nn.Sequential(MODELS["cifar"]()), compile="onednn")


def test_rejects_non_nasnet():
    with pytest.raises(TypeError):
        optimize_for_inference(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError):
        enable_memory_saving(torch.nn.Linear(2, 2))


def test_published_mobile_smoke():
    """The real NASNet-A Mobile at a small input: all fast paths together agree with the plain model."""
    torch.manual_seed(0)
    model = _randomize(create_model("nasnet_a_mobile", use_aux_head=False)).eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.inference_mode():
        assert _rel(optimize_for_inference(model)(x), model(x)) < FP32_TOL
