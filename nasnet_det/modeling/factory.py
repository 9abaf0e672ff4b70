"""``resolve_network`` (the one network description: a preset plus overrides), ``create_model``
(a published network by name) and ``build_nasnet`` (any genotype, "N @ P" sized).

Why one resolver: the detector yaml (``MODEL.NASNET.ARCH`` + ``MODEL.NASNET.<KEY>``), pretraining
(``model.arch`` + ``model.overrides``) and the search's children (``child.arch`` +
``child.network`` + the sampled genotype) all describe a network as a preset name plus the fields
that differ, and all turn that into a ``NASNetConfig`` here, with the same checks and errors.
"""
from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any, Callable

from ..config import coerce
from ..errors import ConfigError, NASNetError
from ..space.genotype import Genotype
from ..space.named import resolve_genotype
from .config import MODEL_PRESETS, NASNetConfig
from .network import NASNet

#: What ``resolve_network`` takes besides NASNetConfig fields: P of the paper's "N @ P" sizing,
#: from which ``num_conv_filters`` (F) is derived.
SIZING_KEYS = ("penultimate_filters",)


def list_models() -> list[str]:
    """Names accepted by ``create_model`` and ``resolve_network``: the presets."""
    return sorted(MODEL_PRESETS)


def _normal_cell_width_multiplier(genotype: Genotype) -> int:
    """Output width of the normal cell in units of F (6 for NASNet-A, 5 for PNASNet-5, 4 for AmoebaNet-A)."""
    cell = genotype.normal
    widths = [1, 1]
    for block in cell.blocks:
        widths.append(2 if block.combine == "concat" else 1)
    final = widths[-1]
    return final * len(cell.concat)


def _field_kinds() -> dict[str, tuple[type | None, bool]]:
    """(scalar type or None when not checked here, e.g. the genotype; may it be None) per field."""
    kinds: dict[str, tuple[type | None, bool]] = {}
    for name, hint in typing.get_type_hints(NASNetConfig).items():
        args = typing.get_args(hint) or (hint,)
        scalars = [a for a in args if a is not type(None)]
        kind = scalars[0] if len(scalars) == 1 and scalars[0] in (bool, int, float, str) else None
        kinds[name] = (kind, type(None) in args)
    return kinds


def _unknown(key: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(key, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def resolve_network(arch: str, *, name: Callable[[str], str] | None = None, **overrides: Any) -> NASNetConfig:
    """The ``NASNetConfig`` of preset ``arch`` with ``overrides`` (NASNetConfig fields, or
    ``penultimate_filters`` P: then F = P // (m * rate^R), m the normal cell's output width in
    units of F; NASNet-A: P = 24 F).

    Every mistake is one ``ConfigError`` (a ``GenotypeError`` for the genotype): an unknown preset
    or override key (with the closest known one), a value of the wrong type or out of range.
    ``name(key)`` says how the caller spells a key in messages (``name("arch")`` the preset's).
    """
    spell = name or (lambda key: key)
    if arch not in MODEL_PRESETS:
        raise ConfigError(f"{spell('arch')}: unknown model {arch!r}{_unknown(str(arch), list_models())}; "
                          f"known: {', '.join(list_models())}")
    kinds = _field_kinds()
    known = sorted(kinds) + list(SIZING_KEYS)
    unknown = sorted(k for k in overrides if k not in known)
    if unknown:
        raise ConfigError(f"{spell(unknown[0])}: unknown NASNetConfig field(s) {unknown}"
                          f"{_unknown(unknown[0], known)}; known: {', '.join(known)}")
    fields = dict(MODEL_PRESETS[arch])
    for key, value in overrides.items():
        kind, nullable = kinds.get(key, (int, False))  # SIZING_KEYS are integers
        if value is None and not nullable:
            raise ConfigError(f"{spell(key)}: may not be null")
        fields[key] = value if value is None or kind is None else coerce(value, None, spell(key), "", kind)
    penultimate = fields.pop("penultimate_filters", None)
    try:
        if penultimate is not None and "num_conv_filters" not in overrides:
            genotype = resolve_genotype(fields["genotype"])
            divisor = _normal_cell_width_multiplier(genotype) * fields.get("filter_scaling_rate", 2.0) ** fields.get(
                "num_reduction_layers", 2)
            filters = int(penultimate // divisor)
            if filters < 1:
                raise ConfigError(f"{spell('penultimate_filters')}: {penultimate} gives fewer than 1 filter per op")
            fields["genotype"], fields["num_conv_filters"] = genotype, filters
        return NASNetConfig(**fields)
    except NASNetError:
        raise
    except ValueError as err:  # NASNetConfig's range checks name the field
        field, _, reason = str(err).partition(":")
        raise ConfigError(f"{spell(field) if field in kinds else arch}:{reason}") from None


def create_model(name: str, num_classes: int = 1000, **overrides: Any) -> NASNet:
    """A published network by name, e.g. ``create_model("nasnet_a_large", num_classes=1001)``.

    ``overrides`` replace any ``NASNetConfig`` field (``drop_path_keep_prob=1.0``, ``use_aux_head=False``...).
    ``num_classes`` always applies (default 1000, as the contract says): pass ``num_classes=10`` for
    CIFAR-10 and 1001 for TF checkpoints (class 0 = background).
    """
    return NASNet(resolve_network(name, num_classes=num_classes, **overrides))


def build_nasnet(
    genotype: "str | Path | Genotype",
    dataset: str = "imagenet",
    num_cells: int | None = None,
    penultimate_filters: int | None = None,
    num_classes: int | None = None,
    **overrides: Any,
) -> NASNet:
    """A network for any genotype: ``num_cells`` normal cells (3N) and ``penultimate_filters`` (P).

    The preset NASNet-A Mobile (ImageNet) or NASNet-A CIFAR with its cells replaced by
    ``genotype``; ``overrides`` replace any ``NASNetConfig`` field.
    """
    genotype = resolve_genotype(genotype)
    if dataset not in ("imagenet", "cifar"):
        raise ConfigError(f"dataset: expected 'imagenet' or 'cifar', got {dataset!r}")
    sizing = {k: v for k, v in (("num_cells", num_cells), ("penultimate_filters", penultimate_filters),
                                ("num_classes", num_classes)) if v is not None}
    arch = "nasnet_a_cifar" if dataset == "cifar" else "nasnet_a_mobile"
    return NASNet(resolve_network(arch, genotype=genotype, **sizing, **overrides))
