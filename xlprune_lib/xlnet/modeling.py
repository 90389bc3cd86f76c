"""Build, load and save XLNet models (the real ``transformers`` classes; nothing here re-implements XLNet).

XLNet (Yang et al. 2019) is a Transformer-XL encoder (Dai et al. 2019): relative positional attention with the
three per-head biases ``r_w_bias`` (content), ``r_r_bias`` (position) and ``r_s_bias`` (segment), recurrence
memory, and two-stream attention for permutation-LM pretraining. Its attention weights ``q, k, v, o, r`` are
3-D parameters of shape ``(d_model, n_head, d_head)``; later chapters prune along the head axis.

A model after surgery (``surgery.py``) has layers of different widths, which ``XLNetConfig`` cannot describe.
It becomes a ``Pruned*`` model (:func:`record_plan`): the config type ``xlnet-pruned`` records the
``PruningPlan`` that made it. Those classes live in ``modeling_xlnet_pruned.py``, a file that imports nothing
from xlprune and is copied beside the weights of every pruned folder, so the folder also loads without xlprune
(``trust_remote_code=True``). Importing ``xlprune_lib`` registers the type with ``AutoConfig`` /
``AutoModel*``, so ``AutoModelForSequenceClassification.from_pretrained(dir)`` and
``pipeline("text-classification", dir)`` work on a pruned folder without that flag.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import transformers
from safetensors import SafetensorError
from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification,
                          XLNetConfig, XLNetForSequenceClassification, XLNetLMHeadModel, XLNetModel)
from transformers.utils import logging as hf_logging

from .gates import is_gated
from .masks import effective_state_dict
from .modeling_xlnet_pruned import (PRUNED_MODEL_TYPE, PrunedXLNetConfig, PrunedXLNetForSequenceClassification,
                                    PrunedXLNetLMHeadModel, PrunedXLNetModel)
from .structure import XLNetStructure
from ..config import Profile, UserError, atomic_dir, require_hub, set_seed, write_json_atomic

PRUNED_CLASSES = {XLNetModel: PrunedXLNetModel, XLNetLMHeadModel: PrunedXLNetLMHeadModel,
                  XLNetForSequenceClassification: PrunedXLNetForSequenceClassification}


def register_pruned_xlnet() -> None:
    """Make ``xlnet-pruned`` folders loadable through the ``Auto*`` classes (idempotent)."""
    try:
        AutoConfig.register(PRUNED_MODEL_TYPE, PrunedXLNetConfig)
    except ValueError:  # already registered
        return
    AutoModel.register(PrunedXLNetConfig, PrunedXLNetModel)
    AutoModelForCausalLM.register(PrunedXLNetConfig, PrunedXLNetLMHeadModel)
    AutoModelForSequenceClassification.register(PrunedXLNetConfig, PrunedXLNetForSequenceClassification)


def record_plan(model, plan: dict):
    """Turn an XLNet model cut to ``plan`` (``PruningPlan.to_config()``) into its ``Pruned*`` class, with a config
    recording the plan and the widths it leaves (``PruningPlan.finalize`` calls this). Returns ``model``."""
    if not isinstance(model.config, PrunedXLNetConfig):
        fields = {k: v for k, v in model.config.to_dict().items() if k not in ("model_type", "transformers_version")}
        model.config = PrunedXLNetConfig(**fields)
        XLNetStructure.base_of(model).config = model.config
    model.config.pruning_plan = plan
    model.config.heads_per_layer = [len(h) for h in plan["heads"]]
    model.config.inner_per_layer = [len(k) for k in plan["neurons"]]
    model.config.n_layer = len(plan["layers"])
    for plain, pruned in PRUNED_CLASSES.items():
        if type(model) is plain:
            model.__class__ = pruned
    return model


def xlnet_config(profile: Profile, vocab_size: int | None = None, **overrides):
    kwargs = profile.model_kwargs()
    if vocab_size is not None:
        kwargs["vocab_size"] = vocab_size
    kwargs.update(overrides)
    return XLNetConfig(**kwargs)


def build_lm(profile: Profile, vocab_size: int, seed: int):
    """A randomly initialised ``XLNetLMHeadModel`` of the profile's shape (for PLM pretraining)."""
    set_seed(seed)
    return XLNetLMHeadModel(xlnet_config(profile, vocab_size))


def classifier_fields(label_names) -> dict:
    """Config fields of a classifier that downstream consumers read: label names (``id2label`` /
    ``label2id``: pipelines print them) and ``use_mems_eval=False``.

    XLNet's default ``use_mems_eval=True`` makes every eval-mode forward return the recurrence memory
    ``mems`` (per-layer tensors with the batch on axis 1) beside the logits; a batched consumer such as the
    ``text-classification`` pipeline then fails to split the outputs per example. A sentence classifier has no
    use for the memory (Transformer-XL's recurrence serves long documents and generation), so saved
    classifiers never return it.
    """
    names = list(label_names)
    return {"num_labels": len(names), "id2label": dict(enumerate(names)),
            "label2id": {n: i for i, n in enumerate(names)}, "use_mems_eval": False}


def label_names(config) -> list[str]:
    """A classifier's label names in id order, from ``config.id2label`` (``transformers`` calls them ``LABEL_<i>``
    when the folder names none); ``config.num_labels`` of them."""
    return [str(config.id2label.get(i, f"LABEL_{i}")) for i in range(config.num_labels)]


def build_classifier(profile: Profile, vocab_size: int, seed: int, label_names):
    """A randomly initialised ``XLNetForSequenceClassification`` (the no-pretraining baseline) with these
    ``label_names`` (``data.LABEL_NAMES`` for the book's task)."""
    set_seed(seed)
    return XLNetForSequenceClassification(xlnet_config(profile, vocab_size, **classifier_fields(label_names)))


def check_model_dir(path: Path | str) -> Path:
    """A folder that holds a saved model, or a one-line user error saying what is missing."""
    path = Path(path)
    if path.is_file():
        raise UserError(f"{path} is a file; give the model folder that holds config.json and the weights")
    if not path.is_dir():
        raise UserError(f"model directory {path} does not exist")
    if not (path / "config.json").is_file():
        raise UserError(f"{path} is not a saved model (no config.json)")
    if not any(path.glob("*.safetensors")):
        raise UserError(f"{path} holds no safetensors weights")
    return path


def load_classifier(source: str | Path, label_names):
    """``XLNetForSequenceClassification`` from a local folder or a hub name (fails fast without hub access), with
    :func:`classifier_fields` of ``label_names`` (a new classification head when the source is a language
    model)."""
    return _load(XLNetForSequenceClassification, source, **classifier_fields(label_names))


def load_lm(source: str | Path):
    return _load(XLNetLMHeadModel, source)


def _load(cls, source, **kwargs):
    if Path(source).exists() or str(source).startswith((".", "/")):
        source = check_model_dir(source)
    else:
        require_hub(f"model {source!r}")

    hf_logging.disable_progress_bar()  # a bar per checkpoint load is noise, and it would precede error lines
    try:
        return cls.from_pretrained(str(source), **kwargs)
    except (OSError, ValueError, SafetensorError) as exc:
        raise UserError(f"cannot load {cls.__name__} from {source}: {str(exc).splitlines()[0]}") from None


def check_saveable(model) -> None:
    """Refuse (``UserError``) a model that still carries gates: its state holds gate parameters and
    parametrizations that no loader rebuilds. Live ``torch.nn.utils.prune`` masks are fine (they are saved as
    the masked tensors)."""
    if hasattr(model, "l0_gates") or is_gated(model):
        raise UserError("this model still carries gates: call l0.finalize(model) (or leave the unit_gates block) "
                        "before saving")


def save_model(model, tokenizer, out: Path | str, extra_files: dict | None = None, replace: bool = False,
               card=None) -> Path:
    """Save model (safetensors), tokenizer and optional JSON files into ``out`` atomically.

    ``card(folder) -> str``: the model card, called once the weights are in ``folder`` and written as its
    ``README.md``. A pruned model (``xlnet-pruned``) is saved with ``modeling_xlnet_pruned.py`` and ``auto_map``
    beside its weights, so the folder loads without xlprune (``trust_remote_code=True``).

    A model with live ``torch.nn.utils.prune`` masks is saved as the masked tensors (``masks.effective_state_dict``);
    a gated model is refused (:func:`check_saveable`). A sequence classifier is saved with ``use_mems_eval=False``
    (:func:`consumer_ready`). ``out`` must be absent or empty unless ``replace`` (``config.atomic_dir``).
    """
    out = Path(out)
    check_saveable(model)
    with atomic_dir(out, replace=replace) as tmp, _saved_config(model):
        # live masks are saved as the masked tensors, exactly like the model made permanent
        model.save_pretrained(str(tmp), safe_serialization=True, state_dict=effective_state_dict(model))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        if card is not None:
            (tmp / "README.md").write_text(card(tmp))
        for name, payload in (extra_files or {}).items():
            write_json_atomic(tmp / name, payload)
    return out


@contextlib.contextmanager
def _saved_config(model):
    """The config as it is saved (:func:`consumer_ready`); the model in memory is left as it was."""
    before = getattr(model.config, "use_mems_eval", None)
    consumer_ready(model)
    try:
        yield
    finally:
        if before is not None:
            model.config.use_mems_eval = before


def consumer_ready(model):
    """A sequence classifier's config set so that saved folders serve batched consumers (no ``mems`` in the
    outputs, see :func:`classifier_fields`); other models are left as they are. Returns ``model``."""
    if isinstance(model, XLNetForSequenceClassification):
        model.config.use_mems_eval = False
    return model


def saved_class(path: Path | str):
    """``(model class, config)`` that a saved folder's ``config.json`` names (LM head, classifier, pruned, ...)."""
    try:
        config = transformers.AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable config.json ({str(exc).splitlines()[0]})") from None
    arch = (config.architectures or ["XLNetModel"])[0]
    cls = globals().get(arch) if arch.startswith("Pruned") else getattr(transformers, arch, None)
    if cls is None:
        raise UserError(f"{path}: unknown architecture {arch!r}")
    return cls, config


def load_saved(path: Path | str):
    """Load a saved model folder with the class its ``config.json`` names (LM head, classifier, ...)."""
    path = check_model_dir(path)
    return consumer_ready(_load(saved_class(path)[0], path))
