"""The options of ``actwh variant``: the one declaration of its flags and of
``Warehouse.variant``'s keywords (see ``Options`` in :mod:`actwh.arguments`). Nothing here
imports torch."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from actwh.arguments import Options, device_option, option
from actwh.errors import BadInput, arg


@dataclass
class VariantOptions(Options):
    """A derived model's recipe: exactly one of ``subtract``, ``unalign``, ``control_of`` (the
    model it derives from, ``base``, is the method's argument)."""

    subtract: str | None = option(
        None,
        "Subtract scale × DIRECTION from layer --layer's MLP output (paper §3.3).",
        metavar="DIRECTION",
    )
    unalign: str | None = option(
        None,
        "Scale the key vectors of the -k neurons whose write points most along DIRECTION by "
        "--scale (paper §6).",
        metavar="DIRECTION",
    )
    control_of: str | None = option(
        None,
        "A control for an un-aligned VARIANT: as many keys, in the same layers, chosen at "
        "random (--seed), same scale, same base.",
        metavar="VARIANT",
    )
    scale: float | None = option(None, "α for --subtract; s for --unalign.")
    layer: int | None = option(None, "--subtract: the layer (default: the last).", at_least=0)
    k: int = option(7, "--unalign: how many neurons.", aliases=("-k",), at_least=1)
    per_layer: int | None = option(
        100,
        "--unalign: rank among each layer's best N first (the paper's code).",
        at_least=1,
    )
    run: str | None = option(
        None,
        "--unalign: rank neurons by the cosine of their mean write m̄·v in this run (needed for "
        "gated MLPs, whose coefficients are signed; GPT-2 ranks by the cosine of v).",
    )
    keys: str = option(
        "cosine",
        "--unalign: which neurons: cosine (the paper's rule, by --run's mean write) or "
        "selectivity:LABELS (the neurons of --run that write the direction most on toxic "
        "contexts, e.g. selectivity:score:profanity; query selectivity).",
    )
    one_sided: bool = option(
        False,
        "--unalign: scale m_i only where it writes toward the direction (sign(m_i) = "
        "sign⟨v_i, d⟩), for gated MLPs whose coefficients are signed.",
    )
    seed: int = option(0, "--control-of: the random seed.", at_least=0)
    match: Literal["scale", "write"] = option(
        "scale",
        "--control-of: scale the random keys by the same factor, or by a factor per layer that "
        "adds as much write (mean |m|·‖v‖ in the variant's --run, times s − 1) as the edit.",
    )
    device: str = device_option()

    def check_applies(self, recipe: str) -> None:
        """Refuse an option given that the recipe does not use (``--one-sided`` with
        ``--subtract``, ``--scale`` with ``--control-of``): it would be silently ignored."""
        for f in fields(self):
            if f.name not in _USES[recipe] | {"subtract", "unalign", "control_of", "device"}:
                if getattr(self, f.name) != f.default:
                    raise BadInput(f"{arg(f.name)} does not apply to {arg(recipe)}")


# The options each recipe uses (a control takes its edit's scale, keys and sides).
_USES = {
    "subtract": {"scale", "layer"},
    "unalign": {"scale", "k", "per_layer", "run", "keys", "one_sided"},
    "control_of": {"seed", "match"},
}
