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
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification,
                          XLNetConfig, XLNetForSequenceClassification, XLNetLMHeadModel, XLNetModel)
from transformers.utils import logging as hf_logging

from .gates import is_gated
from .masks import effective_state_dict
from .modeling_xlnet_pruned import (PRUNED_MODEL_TYPE, PrunedXLNetConfig, PrunedXLNetForSequenceClassification,
                                    PrunedXLNetLMHeadModel, PrunedXLNetModel)
from .structure import XLNetStructure
from ..config import Profile, UserError, atomic_dir, damaged, read_json, require_hub, set_seed, write_json_atomic

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
    recording the plan and the widths it leaves (``PruningPlan.apply_surgery`` calls this). Returns ``model``."""
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


# What xlprune works on: XLNet, plain or pruned, as an encoder, a language model or a sequence classifier.
XLNET_TYPES = ("xlnet", PRUNED_MODEL_TYPE)
SUPPORTED = {cls.__name__: pruned.__name__ for cls, pruned in PRUNED_CLASSES.items()}
CLASSIFIERS = ("XLNetForSequenceClassification", "PrunedXLNetForSequenceClassification")
# A tokenizer is read from one of these (the fast tokenizer's JSON first); the JSON files beside them are read too.
TOKENIZER_FILES = ("tokenizer.json", "spiece.model")
TOKENIZER_JSON = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


def require_classifier(model) -> None:
    """Raise ``UserError`` unless ``model`` is a sequence classifier (plain or pruned): gradient scores and
    accuracy need labels to differentiate, which a PLM checkpoint does not have."""
    if not isinstance(model, XLNetForSequenceClassification):
        raise UserError(f"pruning needs a fine-tuned XLNetForSequenceClassification, got {type(model).__name__} "
                        "(its loss on labelled examples gives the gradients and the accuracy)")


def check_supported(path: Path | str, classifier: bool = False, tokenizer: bool = False) -> Path:
    """The model folder ``path`` if xlprune can work on it, checked before any work; else a one-line
    ``UserError``. Every command that takes a model folder passes through here (``load_saved`` for any model;
    prune, iterate, export and finetune's ``--init`` with their needs).

    Checks, in order: the folder holds ``config.json`` and safetensors weights (:func:`check_model_dir`);
    ``config.json`` is readable JSON (``config.read_json``: "<file> is damaged (...)"); it describes an XLNet
    (model type ``xlnet`` or ``xlnet-pruned``, one of the classes in :data:`SUPPORTED`), else "<folder> holds a
    BertForSequenceClassification (model type 'bert'); xlprune supports XLNet ..."; with ``classifier``, a
    sequence classifier; every weight file's header is intact (:func:`check_weights`); with ``tokenizer``, the
    tokenizer's files are there and readable (:func:`check_tokenizer_files`).
    """
    path = check_model_dir(path)
    cfg = read_json(path / "config.json")
    model_type = cfg.get("model_type")
    arch = (cfg.get("architectures") or ["XLNetModel"])[0]
    if model_type not in XLNET_TYPES or arch not in (*SUPPORTED, *SUPPORTED.values()):
        raise UserError(f"{path} holds {_a(arch)} (model type {model_type!r}); xlprune supports XLNet: "
                        f"{', '.join(SUPPORTED)} (model type 'xlnet') and their pruned form ({PRUNED_MODEL_TYPE})")
    if classifier and arch not in CLASSIFIERS:
        raise UserError(f"{path} holds {_a(arch)} (model type {model_type!r}); this command needs a fine-tuned "
                        f"sequence classifier: XLNetForSequenceClassification ({', '.join(XLNET_TYPES)})")
    check_weights(path)
    if tokenizer:
        check_tokenizer_files(path)
    return path


def _a(name: str) -> str:
    """``name`` with its article, as read aloud ("an XLNetLMHeadModel", "a BertModel")."""
    return f"{'an' if name[:1] in 'AEIOUX' else 'a'} {name}"


def check_weights(path: Path | str) -> None:
    """Every ``*.safetensors`` file in the folder ``path`` opens and its header covers the file exactly (a
    truncated or foreign file fails here: "<file> is damaged (...)"). The tensors themselves are not read."""
    for file in sorted(Path(path).glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as f:
                f.keys()
        except (SafetensorError, OSError, ValueError) as exc:
            raise damaged(file, exc) from None


def load_tensors(path: Path | str, hint: str = "") -> dict:
    """``safetensors.torch.load_file(path)``; a damaged file is a one-line ``UserError`` naming it."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise damaged(path, exc, hint) from None


def check_tokenizer_files(path: Path | str) -> None:
    """The folder ``path`` holds a tokenizer (``tokenizer.json`` or ``spiece.model``) and its files are intact.

    Without either file ``AutoTokenizer`` silently builds a 9-token tokenizer, so a folder without them is
    refused, naming the files that would do. Each JSON file of :data:`TOKENIZER_JSON` present is read
    (``config.read_json``); ``spiece.model``, when it is what the tokenizer is read from (no
    ``tokenizer.json``), is parsed with SentencePiece. Raises ``UserError``.
    """
    path = Path(path)
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise UserError(f"{path} has no tokenizer (neither {' nor '.join(TOKENIZER_FILES)}); save it beside the "
                        "model: tokenizer.save_pretrained(folder)")
    for name in TOKENIZER_JSON:
        if (path / name).is_file():
            read_json(path / name)
    spiece = path / "spiece.model"
    if spiece.is_file() and not (path / "tokenizer.json").is_file():
        import sentencepiece  # the [train] extra: only a SentencePiece tokenizer needs it (the core loads no tokenizer)

        try:
            sentencepiece.SentencePieceProcessor(model_file=str(spiece))
        except (RuntimeError, OSError) as exc:
            raise damaged(spiece, exc) from None


def load_classifier(source: str | Path, label_names):
    """``XLNetForSequenceClassification`` from a local folder or a hub name (fails fast without hub access), with
    :func:`classifier_fields` of ``label_names`` (a new classification head when the source is a language
    model)."""
    return load_pretrained(XLNetForSequenceClassification, source, **classifier_fields(label_names))


def load_pretrained(cls, source, **kwargs):
    """``cls.from_pretrained(source, **kwargs)`` from a local folder (checked first: config, weights) or a hub
    name (fails fast without hub access). Raises ``UserError`` in one line for what cannot be loaded."""
    if Path(source).exists() or str(source).startswith((".", "/")):
        source = check_model_dir(source)
    else:
        require_hub(f"model {source!r}")
    if isinstance(source, Path):
        check_weights(source)          # a damaged file named here, not as transformers' header error
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
        raise UserError("this model still carries gates: call l0.prune_with_gates(model) (or leave the unit_gates block) "
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
    """``(model class, config)`` that a saved folder's ``config.json`` names (LM head, classifier, pruned, ...).
    A folder xlprune does not support, or a damaged one, is refused first (:func:`check_supported`)."""
    path = check_supported(path)
    try:
        config = transformers.AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError, TypeError, KeyError) as exc:   # JSON, but not a config transformers can build
        raise damaged(path / "config.json", exc) from None
    arch = (config.architectures or ["XLNetModel"])[0]
    cls = globals().get(arch) if arch.startswith("Pruned") else getattr(transformers, arch, None)
    return cls, config


def load_saved(path: Path | str):
    """Load a saved model folder with the class its ``config.json`` names (LM head, classifier, ...). Raises
    ``UserError`` for a folder that is missing, damaged or not an XLNet (:func:`check_supported`)."""
    path = check_model_dir(path)
    return consumer_ready(load_pretrained(saved_class(path)[0], path))
