"""Scores: one importance value per prunable unit, keyed by the unit's name in the pruning plan.

Every scorer (``importance.py``) returns a :class:`Scores`, and every rule (``select.py``) reads one, whatever
the granularity. The keys are the names :meth:`~xlprune_lib.prune.plan.PruningPlan.unit_names` gives, with the
*original* layer index ``L`` (the same unit keeps its name however many rounds pruned before it):

========================  ==========================================  =======================================
kind                      key                                         tensor
========================  ==========================================  =======================================
``weight``                ``layer.<L>.rel_attn.q`` ... ``.ff.layer_2.weight``  the weight's shape as it is now
``head``                  ``layer.<L>.heads``                         ``(heads of layer L now,)``
``neuron``                ``layer.<L>.neurons``                       ``(FFN neurons of layer L now,)``
``layer``                 ``layer.<L>``                               ``()``
``head+neuron``           both ``layer.<L>.heads`` and ``layer.<L>.neurons``
========================  ==========================================  =======================================

Higher means keep. Entry ``j`` of ``layer.<L>.heads`` is the ``j``-th head the layer has *now*; the plan
translates positions to original indices. A score may be a plain tensor or a trained ``nn.Parameter``
(``learned.py``): rules read its values and never change it.
"""
from __future__ import annotations

from typing import Callable, Iterator, Mapping

import torch

from ..xlnet.structure import ENCODER, KINDS

SCORE_KINDS = KINDS + (ENCODER,)
_SUFFIX = {"head": ".heads", "neuron": ".neurons"}


def unit_name(kind: str, layer: int) -> str:
    """The key of layer ``layer``'s (original index) head, neuron or layer score: ``layer.<L>.heads``,
    ``layer.<L>.neurons`` or ``layer.<L>``. Raises ``ValueError`` for weights (their keys are the weights'
    names) or an unknown kind."""
    if kind == "layer":
        return f"layer.{layer}"
    if kind not in _SUFFIX:
        raise ValueError(f"unit names exist for heads, neurons and layers, not {kind!r}")
    return f"layer.{layer}{_SUFFIX[kind]}"


def layer_of(name: str) -> int:
    """The original layer index in a score or weight name (``layer.3.heads`` -> 3)."""
    return int(name.split(".")[1])


class Scores(Mapping):
    """Scores of one ``kind`` (module docstring), as an ordered read-only mapping ``name -> tensor``.

    The order is the model's: layer by layer, and within a layer the order of the prunable set. ``tensors``
    must be keyed as the module docstring says; the values are kept as given (no copy). Raises
    ``ValueError`` for an unknown kind or a key of another kind.
    """

    def __init__(self, kind: str, tensors: Mapping[str, torch.Tensor]):
        if kind not in SCORE_KINDS:
            raise ValueError(f"scores are of kind {', '.join(SCORE_KINDS)}, not {kind!r}")
        self.kind = kind
        self._tensors = dict(tensors)
        for name in self._tensors:
            if _kind_of(name) not in (ENCODER_PARTS if kind == ENCODER else (kind,)):
                raise ValueError(f"{name!r} is not the name of a {kind} score")

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def __repr__(self) -> str:
        return f"Scores({self.kind!r}, {len(self)} tensors)"

    # --- views --------------------------------------------------------------------------------------------

    def part(self, kind: str) -> "Scores":
        """The heads or the neurons of ``head+neuron`` scores (for any other kind: itself, if ``kind`` is it)."""
        if kind == self.kind:
            return self
        if self.kind != ENCODER or kind not in ENCODER_PARTS:
            raise ValueError(f"{self.kind} scores have no {kind} part")
        return Scores(kind, {n: t for n, t in self._tensors.items() if _kind_of(n) == kind})

    def only(self, names) -> "Scores":
        """These scores restricted to ``names`` (in this order of the mapping). ``KeyError`` for a name not here."""
        names = set(names)
        missing = names - set(self._tensors)
        if missing:
            raise KeyError(f"no score named {sorted(missing)[0]!r}")
        return Scores(self.kind, {n: t for n, t in self._tensors.items() if n in names})

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "Scores":
        """``fn`` applied to every tensor, keys and kind kept."""
        return Scores(self.kind, {n: fn(t) for n, t in self._tensors.items()})

    def per_layer(self) -> list[torch.Tensor]:
        """Head or neuron scores as one 1-D tensor per layer, in layer order (float32, detached)."""
        if self.kind not in ("head", "neuron"):
            raise ValueError(f"per-layer vectors are for head and neuron scores, not {self.kind}")
        return [t.detach().float().reshape(-1) for t in self._tensors.values()]

    def vector(self) -> torch.Tensor:
        """Layer scores as one tensor of shape ``(n_layer now,)`` (float32, detached)."""
        if self.kind != "layer":
            raise ValueError(f"one vector over layers is for layer scores, not {self.kind}")
        return torch.stack([t.detach().float().reshape(()) for t in self._tensors.values()]) if self._tensors \
            else torch.zeros(0)

    def flat(self) -> torch.Tensor:
        """Every entry in mapping order as one 1-D float32 tensor (detached)."""
        parts = [t.detach().float().reshape(-1) for t in self._tensors.values()]
        return torch.cat(parts) if parts else torch.zeros(0)


ENCODER_PARTS = ("head", "neuron")


def _kind_of(name: str) -> str:
    parts = name.split(".")
    if len(parts) < 2 or parts[0] != "layer" or not parts[1].isdigit():
        return "?"
    if len(parts) == 2:
        return "layer"
    if len(parts) == 3 and parts[2] in ("heads", "neurons"):
        return parts[2][:-1]
    return "weight"
