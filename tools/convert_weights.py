#!/usr/bin/env python
r"""Convert published NASNet / PNASNet weights into ours, inspect weight files, export to detectron2.

    # timm state dict (a local file, or --timm-pretrained to let timm download it)
    python tools/convert_weights.py timm --model nasnetalarge --checkpoint nasnetalarge.pth \
        --out weights/nasnet_a_large_timm.safetensors
    # Cadene pretrained-models state dict
    python tools/convert_weights.py cadene --model nasnetamobile --checkpoint nasnetamobile-7e03cead.pth \
        --out weights/nasnet_a_mobile_cadene.safetensors
    # TF-slim checkpoint released with the paper (needs tensorflow-cpu; EMA values preferred)
    python tools/convert_weights.py tf --model nasnet_a_mobile --checkpoint nasnet-a_mobile_04_10_2017/model.ckpt \
        --out weights/nasnet_a_mobile_tf.safetensors
    # our weights -> detectron2 MODEL.WEIGHTS for a detection config
    python tools/convert_weights.py export-d2 --weights weights/nasnet_a_mobile_tf.safetensors \
        --config configs/nasnet_a_mobile_frcnn.yaml --out weights/nasnet_a_mobile_d2.pkl
    # what is in a file (metadata, tensor count); refuses unsafe pickles
    python tools/convert_weights.py inspect weights/nasnet_a_mobile_tf.safetensors

Pickled inputs that need more than tensors are refused unless --allow-unsafe-pickle is given.
"""
from __future__ import annotations

import argparse
import sys

# timm / Cadene model names -> (our create_model name, classes of the published weights)
TORCH_PORT_MODELS = {
    "timm": {"nasnetalarge": "nasnet_a_large", "pnasnet5large": "pnasnet5_large"},
    "cadene": {"nasnetalarge": "nasnet_a_large", "nasnetamobile": "nasnet_a_mobile"},
}
TF_MODELS = ("nasnet_a_mobile", "nasnet_a_large", "pnasnet5_mobile", "pnasnet5_large")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("timm", "cadene"):
        s = sub.add_parser(name, help=f"{name} state dict -> ours")
        s.add_argument("--model", required=True, choices=sorted(TORCH_PORT_MODELS[name]))
        s.add_argument("--checkpoint", help="the state dict file (.pth)")
        s.add_argument("--out", required=True, help="output .safetensors")
        s.add_argument("--allow-unsafe-pickle", action="store_true")
        s.add_argument("--num-classes", type=int, default=1000)
        if name == "timm":
            s.add_argument("--timm-pretrained", action="store_true", help="let timm download its weights")
            s.add_argument("--timm-random", action="store_true", help="random timm weights (pipeline checks)")
    s = sub.add_parser("tf", help="TF-slim checkpoint -> ours")
    s.add_argument("--model", required=True, choices=TF_MODELS)
    s.add_argument("--checkpoint", required=True, help="checkpoint prefix, e.g. .../model.ckpt")
    s.add_argument("--out", required=True)
    s.add_argument("--num-classes", type=int, default=1000, choices=(1000, 1001),
                   help="1000 drops TF's background class 0; 1001 keeps it")
    s.add_argument("--no-ema", action="store_true", help="use raw variables even when EMA ones exist")
    s = sub.add_parser("export-d2", help="our weights -> detectron2 MODEL.WEIGHTS (.pkl)")
    s.add_argument("--weights", required=True)
    s.add_argument("--config", required=True, help="the detection config the weights are for")
    s.add_argument("--out", required=True)
    s.add_argument("--allow-unsafe-pickle", action="store_true")
    s.add_argument("opts", nargs="*", help="detectron2 KEY VALUE overrides")
    s = sub.add_parser("inspect", help="print a weights file's metadata")
    s.add_argument("path")
    s.add_argument("--allow-unsafe-pickle", action="store_true")
    return p


def _save(state, model, out, source, report) -> None:
    from nasnet_det.weights import save_weights

    path = save_weights(state, out, model=model, source=source, extra={"conversion": report.summary()})
    print(report.summary())
    print(f"wrote {path}")


def _torch_port(args) -> None:
    import nasnet_det
    from nasnet_det.weights import convert_cadene, convert_timm, load_state_dict

    ours_name = TORCH_PORT_MODELS[args.command][args.model]
    if getattr(args, "timm_pretrained", False) or getattr(args, "timm_random", False):
        import timm

        source = timm.create_model(args.model, pretrained=bool(args.timm_pretrained)).state_dict()
        origin = f"timm {args.model} ({'pretrained' if args.timm_pretrained else 'random'})"
    elif args.checkpoint:
        source, _ = load_state_dict(args.checkpoint, allow_unsafe_pickle=args.allow_unsafe_pickle)
        origin = f"{args.command} {args.model} from {args.checkpoint}"
    else:
        raise SystemExit("error: give --checkpoint (or --timm-pretrained / --timm-random for timm)")
    model = nasnet_det.create_model(ours_name, num_classes=args.num_classes, use_aux_head=False)
    convert = convert_timm if args.command == "timm" else convert_cadene
    state, report = convert(source, model)
    _save(state, model, args.out, origin, report)


def _tf(args) -> None:
    import nasnet_det
    from nasnet_det.weights import convert_tf, read_tf_checkpoint

    variables = read_tf_checkpoint(args.checkpoint)
    # a checkpoint saved from the is_training=False graph has no aux head: build the model to match
    has_aux = any(name.startswith("aux_") for name in variables)
    if not has_aux:
        print("note: the checkpoint has no aux head; converting without one (use_aux_head=False)")
    model = nasnet_det.create_model(args.model, num_classes=args.num_classes, use_aux_head=has_aux)
    state, report = convert_tf(variables, model, source=f"tf-slim {args.checkpoint}", prefer_ema=not args.no_ema)
    _save(state, model, args.out, f"tf-slim {args.model} {args.checkpoint}", report)


def _export(args) -> None:
    from nasnet_det.detection.config import load_config
    from nasnet_det.weights import load_state_dict
    from nasnet_det.weights.export import export_to_detectron2

    cfg = load_config(args.config, args.opts, freeze=False)
    state, _ = load_state_dict(args.weights, allow_unsafe_pickle=args.allow_unsafe_pickle)
    report = export_to_detectron2(state, cfg, args.out)
    print(report.summary())


def _inspect(args) -> None:
    from nasnet_det.weights import load_state_dict

    state, meta = load_state_dict(args.path, allow_unsafe_pickle=args.allow_unsafe_pickle)
    total = sum(v.numel() for v in state.values() if hasattr(v, "numel"))
    print(f"{args.path}: {len(state)} tensors, {total:,} values")
    for k, v in sorted(meta.items()):
        print(f"  {k}: {v if len(v) < 200 else v[:200] + '...'}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from nasnet_det.errors import NASNetError

    handlers = {"timm": _torch_port, "cadene": _torch_port, "tf": _tf, "export-d2": _export, "inspect": _inspect}
    try:
        handlers[args.command](args)
    except NASNetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
