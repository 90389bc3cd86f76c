"""The pruning plan: what survives of a model, in the original model's indices, as one object.

Every way of pruning in this library ends in the same question: which weights, heads, FFN neurons and layers
are kept? A :class:`PruningPlan` is the answer, and the only one: one-shot, iterative, gradual, encoder-budget
and L0 pruning produce a plan (``select.py``); masks, surgery, saving, loading, reports and the distributed
check consume one.

Indices are those of the model *before any pruning* (distiller's thinning recipes keep indices too, but of
the shape at the time; here they never shift). Layer ``L``, head ``h`` and neuron ``j`` always mean the same
unit, however many rounds removed units before them, so a plan saved in a model's config says exactly which
original units survive, and loading replays it (``modeling.PrunedXLNetConfig.pruning_plan``).

Weight masks are keyed by parameter name with the original layer index, ``layer.<L>.rel_attn.q`` (the
prunable set of ``XLNetStructure``), and have the shape that tensor has once the plan's heads and neurons are
removed: entry ``[:, j, :]`` of a projection belongs to head ``heads[L][j]``. ``True`` keeps.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Mapping

import torch
from torch.nn.utils import prune

from ..xlnet import surgery
from ..xlnet.masks import attach, current_weight
from ..xlnet.modeling import record_plan
from ..xlnet.structure import ENCODER, XLNetStructure
from .scores import unit_name

PLAN_FIELD = "pruning_plan"      # the config field that carries :meth:`PruningPlan.to_config`


def _kept(values) -> tuple[int, ...]:
    return tuple(sorted({int(v) for v in values}))


@dataclass(frozen=True, eq=False)
class PruningPlan:
    """What is kept, in original indices.

    ``n_layer``, ``n_head``, ``d_inner``: the original model's sizes. ``layers``: original indices of the layers
    kept. ``heads[L]`` / ``neurons[L]``: for every original layer ``L`` (kept or not), the original indices of
    its heads / FFN neurons kept. ``weights``: keep-masks (bool) of prunable weights by name (module
    docstring); a tensor without a mask is kept whole. ``values``: new values for prunable weights by name, of
    the shape the tensor has once the plan's units are removed (a method that reconstructs what it keeps, such
    as a rescaled neuron or SparseGPT's update of the weights it keeps); a tensor without one keeps its values.
    Masked entries stay zero whatever ``values`` holds there.
    """

    n_layer: int
    n_head: int
    d_inner: int
    layers: tuple[int, ...]
    heads: tuple[tuple[int, ...], ...]
    neurons: tuple[tuple[int, ...], ...]
    weights: Mapping[str, torch.Tensor] = field(default_factory=dict)
    values: Mapping[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "layers", _kept(self.layers))
        object.__setattr__(self, "heads", tuple(_kept(h) for h in self.heads))
        object.__setattr__(self, "neurons", tuple(_kept(n) for n in self.neurons))
        object.__setattr__(self, "weights", MappingProxyType({k: v.bool() for k, v in dict(self.weights).items()}))
        object.__setattr__(self, "values", MappingProxyType({k: v.detach() for k, v in dict(self.values).items()}))
        self.validate()

    # --- construction --------------------------------------------------------------------------------

    @classmethod
    def dense(cls, n_layer: int, n_head: int, d_inner: int) -> "PruningPlan":
        """Everything kept."""
        return cls(n_layer, n_head, d_inner, tuple(range(n_layer)), (tuple(range(n_head)),) * n_layer,
                   (tuple(range(d_inner)),) * n_layer)

    @classmethod
    def of(cls, model, weights: bool = True) -> "PruningPlan":
        """The plan ``model`` realises now: its structure from its config (a dense model: everything) and, with
        ``weights``, a keep-mask for every prunable weight that has pruned entries (a live
        ``torch.nn.utils.prune`` mask, or exact zeros written into the weight).

        Raises ``ValueError`` if the model's shapes disagree with its config's plan.
        """
        cfg = model.config
        recorded = getattr(cfg, PLAN_FIELD, None)
        if recorded:
            plan = cls.from_config(recorded)
        else:   # an unpruned model, or a folder pruned before plans were recorded (widths only: the first ones)
            n_head, d_inner = cfg.n_head, cfg.d_inner
            s = XLNetStructure(model)
            widths = (s.unit_counts("head"), s.unit_counts("neuron"))
            n = len(s.layers)
            plan = cls(n, n_head, d_inner, tuple(range(n)), tuple(tuple(range(h)) for h in widths[0]),
                       tuple(tuple(range(k)) for k in widths[1]))
        plan.check_model(model)
        if not weights:
            return plan
        masks = {}
        for name, (module, attr) in zip(plan.names(), XLNetStructure(model).prunable()):
            keep = _keep_mask(module, attr)
            if not bool(keep.all()):
                masks[name] = keep
        return replace(plan, weights=masks)

    @classmethod
    def from_config(cls, data: Mapping) -> "PruningPlan":
        """Inverse of :meth:`to_config`. Raises ``ValueError`` on a malformed record."""
        try:
            layers = [int(x) for x in data["layers"]]
            n_layer, n_head, d_inner = int(data["n_layer"]), int(data["n_head"]), int(data["d_inner"])
            heads = [tuple(range(n_head))] * n_layer
            neurons = [tuple(range(d_inner))] * n_layer
            for L, h, k in zip(layers, data["heads"], data["neurons"], strict=True):
                heads[L], neurons[L] = tuple(h), tuple(k)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"malformed {PLAN_FIELD} record: {exc}") from None
        return cls(n_layer, n_head, d_inner, tuple(layers), tuple(heads), tuple(neurons))

    # --- what it says ---------------------------------------------------------------------------------

    def validate(self) -> None:
        """Raise ``ValueError`` unless every index is in range and there is one entry per original layer."""
        if min(self.n_layer, self.n_head, self.d_inner) < 1:
            raise ValueError("a plan needs n_layer, n_head and d_inner >= 1")
        if len(self.heads) != self.n_layer or len(self.neurons) != self.n_layer:
            raise ValueError(f"a plan lists heads and neurons for each of the {self.n_layer} original layers")
        if not self.layers:
            raise ValueError("a plan must keep at least one layer")
        for what, values, size in (("layer", [self.layers], self.n_layer), ("head", self.heads, self.n_head),
                                   ("neuron", self.neurons, self.d_inner)):
            bad = [v for vs in values for v in vs if not 0 <= v < size]
            if bad:
                raise ValueError(f"{what} index {bad[0]} out of range [0, {size})")

    def names(self) -> list[str]:
        """Names of the prunable weights of the kept layers, in ``XLNetStructure.prunable()`` order."""
        parts = [f"rel_attn.{n}" for n in XLNetStructure.PROJECTIONS] + \
                [f"ff.{s}.{n}" for s, n in XLNetStructure.FFN_MATRICES]
        return [f"layer.{L}.{p}" for L in self.layers for p in parts]

    def unit_names(self, kind: str) -> list[str]:
        """The keys of ``kind`` scores on a model that realises this plan (``scores.py``), in the model's order:
        :meth:`names` for weights, ``layer.<L>.heads`` / ``.neurons`` / ``layer.<L>`` per kept layer, and both
        heads and neurons for ``head+neuron``. Raises ``ValueError`` for an unknown kind."""
        if kind == "weight":
            return self.names()
        if kind == ENCODER:
            return [unit_name(k, L) for k in ("head", "neuron") for L in self.layers]
        return [unit_name(kind, L) for L in self.layers]

    def widths(self) -> tuple[list[int], list[int]]:
        """Heads and neurons per kept layer (what the pruned config's ``heads_per_layer`` / ``inner_per_layer`` say)."""
        return [len(self.heads[L]) for L in self.layers], [len(self.neurons[L]) for L in self.layers]

    def is_dense(self) -> bool:
        """Nothing removed: every layer, head, neuron and weight kept."""
        return self == PruningPlan.dense(self.n_layer, self.n_head, self.d_inner)

    def keeps_every_unit(self) -> bool:
        """Every layer, head and neuron kept (weights may be masked): the model keeps its plain XLNet class."""
        return self.to_config() == PruningPlan.dense(self.n_layer, self.n_head, self.d_inner).to_config()

    def removed(self) -> dict:
        """What is gone, in original indices: ``{"layers": [...], "heads": {L: [...]}, "neurons": {L: [...]},
        "weights": {name: pruned entries}}`` (only non-empty entries; JSON-ready with string keys)."""
        out = {"layers": [L for L in range(self.n_layer) if L not in self.layers], "heads": {}, "neurons": {},
               "weights": {k: int((~v).sum()) for k, v in self.pruned_weights().items()}}
        for kind, kept, size in (("heads", self.heads, self.n_head), ("neurons", self.neurons, self.d_inner)):
            for L, k in enumerate(kept):
                gone = sorted(set(range(size)) - set(k))
                if gone and L in self.layers:
                    out[kind][str(L)] = gone
        return out

    def removed_since(self, start: "PruningPlan") -> dict:
        """The layers, heads and neurons this plan removes that ``start`` still had (the format of
        :meth:`removed`, without weights): what one pruning step did, in original indices."""
        before, after = start.removed(), self.removed()
        out = {"layers": sorted(set(after["layers"]) - set(before["layers"]))}
        for kind in ("heads", "neurons"):
            out[kind] = {L: gone for L, units in after[kind].items()
                         if (gone := sorted(set(units) - set(before[kind].get(L, []))))}
        return out

    def to_config(self) -> dict:
        """The structural plan as a JSON-ready dict (the weight masks stay in the saved weights as zeros):
        ``{"n_layer", "n_head", "d_inner", "layers": [L...], "heads": [[h...] per kept layer], "neurons": [...]}``."""
        return {"n_layer": self.n_layer, "n_head": self.n_head, "d_inner": self.d_inner, "layers": list(self.layers),
                "heads": [list(self.heads[L]) for L in self.layers],
                "neurons": [list(self.neurons[L]) for L in self.layers]}

    def digest(self) -> str:
        """SHA-256 of the structure and every weight mask: equal digests, equal plans (the check that every
        process of a distributed run pruned the same units)."""
        h = hashlib.sha256(json.dumps(self.to_config(), sort_keys=True).encode())
        pruned = self.pruned_weights()
        for name in sorted(pruned):
            mask = pruned[name]
            h.update(name.encode() + str(tuple(mask.shape)).encode())
            h.update(mask.reshape(-1).to(torch.uint8).numpy().tobytes())
        for name in sorted(self.values):
            value = self.values[name].float().contiguous()
            h.update(b"value" + name.encode() + str(tuple(value.shape)).encode() + value.cpu().numpy().tobytes())
        return h.hexdigest()

    def __eq__(self, other) -> bool:
        if not isinstance(other, PruningPlan):
            return NotImplemented
        mine, theirs = self.pruned_weights(), other.pruned_weights()
        return self.to_config() == other.to_config() and mine.keys() == theirs.keys() and all(
            torch.equal(v, theirs[k]) for k, v in mine.items()) and self.values.keys() == other.values.keys() and all(
            torch.equal(v, other.values[k]) for k, v in self.values.items())

    def pruned_weights(self) -> dict:
        """The weight masks that remove something (an all-True mask keeps its tensor whole: it says the tensor is
        masked, which :meth:`apply_masks` needs to line the parameters up as every earlier masking did, and nothing else)."""
        return {k: v for k, v in self.weights.items() if not bool(v.all())}

    __hash__ = None

    # --- deriving plans -------------------------------------------------------------------------------

    def without(self, kind: str, removal) -> "PruningPlan":
        """This plan with more units removed. ``removal`` names units *as the pruned model has them now*: for
        ``"head"`` / ``"neuron"`` ``{position of a kept layer: [position of a unit in it]}``, for ``"layer"``
        ``[positions of kept layers]``. Weight masks of the affected tensors are sliced alike. Raises
        ``ValueError`` on an index out of range or when every layer would go."""
        if kind == "layer":
            gone = {self._layer_at(p) for p in removal}
            if len(gone) >= len(self.layers):
                raise ValueError("a plan must keep at least one layer")
            weights = {k: v for k, v in self.weights.items() if int(k.split(".")[1]) not in gone}
            values = {k: v for k, v in self.values.items() if int(k.split(".")[1]) not in gone}
            return replace(self, layers=tuple(L for L in self.layers if L not in gone), weights=weights, values=values)
        if kind not in ("head", "neuron"):
            raise ValueError(f"units are heads, neurons or layers, not {kind!r}")
        kept = list(self.heads if kind == "head" else self.neurons)
        weights, values = dict(self.weights), dict(self.values)
        for position, units in dict(removal).items():
            L = self._layer_at(position)
            now = kept[L]
            drop = {int(u) for u in units}
            if any(not 0 <= u < len(now) for u in drop):
                raise ValueError(f"{kind} position out of range for layer {L} with {len(now)} {kind}s")
            stay = [j for j in range(len(now)) if j not in drop]
            kept[L] = tuple(now[j] for j in stay)
            for sliced in (weights, values):
                for name in [n for n in sliced if n.startswith(f"layer.{L}.") and _unit_axis(n)[0] == kind]:
                    sliced[name] = sliced[name].index_select(_unit_axis(name)[1], torch.tensor(stay, dtype=torch.long))
        field_name = "heads" if kind == "head" else "neurons"
        return replace(self, **{field_name: tuple(kept)}, weights=weights, values=values)

    def with_weights(self, masks: Mapping[str, torch.Tensor]) -> "PruningPlan":
        """This plan with weight keep-masks (by name) replaced or added."""
        unknown = set(masks) - set(self.names())
        if unknown:
            raise ValueError(f"no prunable weight {sorted(unknown)[0]!r} in this plan")
        return replace(self, weights={**self.weights, **masks})

    def with_values(self, values: Mapping[str, torch.Tensor]) -> "PruningPlan":
        """This plan with new values (by name) for weights it keeps, replaced or added (see the class docstring)."""
        unknown = set(values) - set(self.names())
        if unknown:
            raise ValueError(f"no prunable weight {sorted(unknown)[0]!r} in this plan")
        return replace(self, values={**self.values, **values})

    def _layer_at(self, position: int) -> int:
        if not 0 <= int(position) < len(self.layers):
            raise ValueError(f"layer position {position} out of range: {len(self.layers)} layers are kept")
        return self.layers[int(position)]

    # --- applying it ------------------------------------------------------------------------------------

    def check_model(self, model) -> None:
        """Raise ``ValueError`` unless ``model`` has exactly the layers and widths this plan keeps."""
        s = XLNetStructure(model)
        widths = self.widths()
        if (s.unit_counts("head"), s.unit_counts("neuron")) != widths:
            raise ValueError(f"the model's widths (heads {s.unit_counts('head')}, neurons "
                             f"{s.unit_counts('neuron')}) do not match the plan's (heads {widths[0]}, "
                             f"neurons {widths[1]})")

    def apply_masks(self, model) -> None:
        """Mask ``model`` to this plan with ``torch.nn.utils.prune`` (in place, live masks, nothing removed).

        ``model`` must realise a plan this one refines (the same layers; a superset of its units): removed heads
        and neurons are masked in the prunable tensors that carry them (a head's slices of ``q, k, v, o, r``,
        a neuron's ``layer_1`` row and ``layer_2`` column: with its slice of ``o`` or its column of ``layer_2``
        at zero, the unit adds nothing, exactly as if removed), weights by their masks. Masks stack on live
        ones, so sparsity only grows. The plan's ``values`` are written into the kept entries first (into
        ``w_orig`` where a mask is live). Raises ``ValueError`` for a plan that drops a layer the model still
        has (a layer cannot be masked: use :meth:`apply_surgery`).
        """
        now = PruningPlan.of(model, weights=False)
        if now.layers != self.layers:
            raise ValueError("this plan drops layers the model still has; only apply_surgery() removes layers")
        self._check_values(model, now)
        target = self._masks_on(now, model)
        for name, module, attr in named_weights(model, now):
            if name in self.values:
                _write(module, attr, self._on_model(now, model, name, self.values[name], 0.0))
            keep = target.get(name)
            # every tensor the plan has a mask for is masked, all-True ones included, in the order of the prunable
            # set: the model's parameters (``w_orig``) then line up as after every earlier masking
            if keep is not None:
                attach(module, attr, keep.to(_device(module, attr)))

    def apply_surgery(self, model) -> None:
        """Make ``model`` this plan for good (in place): drop its layers, remove its heads and neurons by
        surgery, write its ``values`` into the weights it keeps and its weight masks into the weights as zeros,
        and, when units are gone, record the plan in
        the config (the model becomes an ``xlnet-pruned`` one, which saves and reloads with exactly these
        units; a plan that only masks weights leaves the plain XLNet class).

        ``model`` must realise a plan this one refines. Raises ``ValueError`` otherwise.
        """
        now = PruningPlan.of(model, weights=False)
        gone = [p for p, L in enumerate(now.layers) if L not in self.layers]
        if set(self.layers) - set(now.layers):
            raise ValueError("the plan keeps layers the model no longer has")
        self._check_values(model, now)
        surgery.drop_layers(model, gone)
        for kind, mine, theirs in (("head", self.heads, now.heads), ("neuron", self.neurons, now.neurons)):
            removal = {}
            for p, L in enumerate(self.layers):
                if set(mine[L]) - set(theirs[L]):
                    raise ValueError(f"the plan keeps {kind}s of layer {L} the model no longer has")
                removal[p] = [j for j, u in enumerate(theirs[L]) if u not in mine[L]]
            (surgery.prune_heads if kind == "head" else surgery.prune_neurons)(model, removal)
        with torch.no_grad():   # weight masks become zeros; live masks on tensors the plan has none for stay live
            for name, module, attr in named_weights(model, self):
                keep = self.weights.get(name)
                if name in self.values:
                    _write(module, attr, self.values[name])
                if keep is None:
                    continue
                if prune.is_pruned(module) and hasattr(module, f"{attr}_orig"):
                    prune.remove(module, attr)
                getattr(module, attr).mul_(keep.to(getattr(module, attr).device, getattr(module, attr).dtype))
        if not self.keeps_every_unit() or getattr(model.config, PLAN_FIELD, None):
            record_plan(model, self.to_config())   # units gone (or gone before): an ``xlnet-pruned`` model

    def _check_values(self, model, now: "PruningPlan") -> None:
        """Raise ``ValueError`` before anything changes unless every value has the shape its weight has once this
        plan's units are removed (``model`` realises ``now``)."""
        where = {n: (m, a) for n, m, a in named_weights(model, now)}
        for name, value in self.values.items():
            if name not in where:
                raise ValueError(f"a new value for {name!r}, a weight the model does not have")
            module, attr = where[name]
            shape = list(getattr(module, attr).shape)
            kind, axis = _unit_axis(name)
            L = int(name.split(".")[1])
            shape[axis] = len(self.heads[L] if kind == "head" else self.neurons[L])
            if list(value.shape) != shape:
                raise ValueError(f"a new value of shape {tuple(value.shape)} for {name}, which the plan leaves "
                                 f"{tuple(shape)}")

    def _masks_on(self, now: "PruningPlan", model) -> dict:
        """Keep-masks, by name, over the prunable tensors of ``model`` (which realises ``now``) that express this
        plan: removed units' slices are ``False``, this plan's weight masks fill the slices of the units kept."""
        out = {}
        for name, module, attr in named_weights(model, now):
            kind = _unit_axis(name)[0]
            L = int(name.split(".")[1])
            fewer = len(self.heads[L] if kind == "head" else self.neurons[L]) < \
                len(now.heads[L] if kind == "head" else now.neurons[L])
            keep = self.weights.get(name)
            if keep is None and not fewer:
                continue
            if keep is None:
                shape = list(getattr(module, attr).shape)
                axis = _unit_axis(name)[1]
                keep = torch.ones(shape[:axis] + [len(self.heads[L] if kind == "head" else self.neurons[L])] +
                                  shape[axis + 1:], dtype=torch.bool)
            out[name] = self._on_model(now, model, name, keep, False)
        return out

    def _on_model(self, now: "PruningPlan", model, name: str, tensor: torch.Tensor, fill) -> torch.Tensor:
        """``tensor`` (one of this plan's masks or values, the shape the weight has once the plan's units are
        gone) spread over the weight ``name`` of ``model``, which realises ``now``: the slices of units this plan
        removes hold ``fill``. Raises ``ValueError`` when the plan keeps a unit the model no longer has."""
        module, attr = dict((n, (m, a)) for n, m, a in named_weights(model, now))[name]
        L = int(name.split(".")[1])
        kind, axis = _unit_axis(name)
        mine, theirs = (self.heads[L], now.heads[L]) if kind == "head" else (self.neurons[L], now.neurons[L])
        where = {u: j for j, u in enumerate(theirs)}
        if any(u not in where for u in mine):
            raise ValueError(f"the plan keeps {kind}s of layer {L} the model no longer has")
        shape = list(getattr(module, attr).shape)
        full = torch.full(shape, fill, dtype=tensor.dtype)
        full.index_copy_(axis, torch.tensor([where[u] for u in mine], dtype=torch.long), tensor.cpu())
        return full


# --- helpers -----------------------------------------------------------------------------------------------

def named_weights(model, plan: "PruningPlan | None" = None) -> list[tuple[str, torch.nn.Module, str]]:
    """``(name, module, attr)`` of every weight of the prunable set (``XLNetStructure.prunable``), named as the
    plan names it (``layer.<L>.rel_attn.q``, ``L`` the original layer index; :meth:`PruningPlan.names`).
    ``plan``: the plan ``model`` realises, when it is already known."""
    plan = plan if plan is not None else PruningPlan.of(model, weights=False)
    return [(name, module, attr) for name, (module, attr) in zip(plan.names(), XLNetStructure(model).prunable())]


def _write(module, attr: str, value: torch.Tensor) -> None:
    """Write ``value`` into the trainable tensor behind ``module.attr`` (``attr_orig`` while a mask is live)."""
    target = getattr(module, f"{attr}_orig", None)
    target = target if target is not None else getattr(module, attr)
    if tuple(value.shape) != tuple(target.shape):
        raise ValueError(f"a new value of shape {tuple(value.shape)} for a weight of shape {tuple(target.shape)}")
    with torch.no_grad():
        target.copy_(value.to(target.device, target.dtype))

def _keep_mask(module, attr: str) -> torch.Tensor:
    """The keep-mask of one prunable weight as the forward pass sees it: its live mask, else its nonzeros."""
    mask = getattr(module, f"{attr}_mask", None)
    w = current_weight(module, attr).detach()
    return (mask.bool() & (w != 0)) if mask is not None else (w != 0)


def _device(module, attr: str):
    return getattr(module, attr).device


def _unit_axis(name: str) -> tuple[str, int]:
    """The unit kind a prunable weight is sliced by, and its axis (projections: heads on axis 1; ``layer_1``:
    neurons on axis 0; ``layer_2``: neurons on axis 1)."""
    if ".rel_attn." in name:
        return "head", 1
    return "neuron", 0 if ".layer_1." in name else 1
