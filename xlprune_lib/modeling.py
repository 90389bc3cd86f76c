"""Build, load and save XLNet models (the real ``transformers`` classes; nothing here re-implements XLNet).

XLNet (Yang et al. 2019) is a Transformer-XL encoder (Dai et al. 2019): relative positional attention with the
three per-head biases ``r_w_bias`` (content), ``r_r_bias`` (position) and ``r_s_bias`` (segment), recurrence
memory, and two-stream attention for permutation-LM pretraining. Its attention weights ``q, k, v, o, r`` are
3-D parameters of shape ``(d_model, n_head, d_head)``; later chapters prune along the head axis.
"""
from __future__ import annotations

from pathlib import Path

from .config import Profile, UserError, atomic_dir


def xlnet_config(profile: Profile, vocab_size: int | None = None, **overrides):
    from transformers import XLNetConfig

    kwargs = profile.model_kwargs()
    if vocab_size is not None:
        kwargs["vocab_size"] = vocab_size
    kwargs.update(overrides)
    return XLNetConfig(**kwargs)


def build_lm(profile: Profile, vocab_size: int, seed: int):
    """A randomly initialised ``XLNetLMHeadModel`` of the profile's shape (for PLM pretraining)."""
    from transformers import XLNetLMHeadModel

    from .config import set_seed

    set_seed(seed)
    return XLNetLMHeadModel(xlnet_config(profile, vocab_size))


def build_classifier(profile: Profile, vocab_size: int, seed: int, num_labels: int = 2):
    """A randomly initialised ``XLNetForSequenceClassification`` (the no-pretraining baseline)."""
    from transformers import XLNetForSequenceClassification

    from .config import set_seed

    set_seed(seed)
    return XLNetForSequenceClassification(xlnet_config(profile, vocab_size, num_labels=num_labels))


def check_model_dir(path: Path | str) -> Path:
    """A folder that holds a saved model, or a one-line user error saying what is missing."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"model directory {path} does not exist")
    if not (path / "config.json").is_file():
        raise UserError(f"{path} is not a saved model (no config.json)")
    if not any(path.glob("*.safetensors")):
        raise UserError(f"{path} holds no safetensors weights")
    return path


def load_classifier(source: str | Path, num_labels: int = 2):
    """``XLNetForSequenceClassification`` from a local folder or a hub name (fails fast without hub access)."""
    from transformers import XLNetForSequenceClassification

    return _load(XLNetForSequenceClassification, source, num_labels=num_labels)


def load_lm(source: str | Path):
    from transformers import XLNetLMHeadModel

    return _load(XLNetLMHeadModel, source)


def _load(cls, source, **kwargs):
    if Path(source).exists() or str(source).startswith((".", "/")):
        source = check_model_dir(source)
    else:
        from .data import require_hub

        require_hub(f"model {source!r}")
    from safetensors import SafetensorError

    try:
        return cls.from_pretrained(str(source), **kwargs)
    except (OSError, ValueError, SafetensorError) as exc:
        raise UserError(f"cannot load {cls.__name__} from {source}: {str(exc).splitlines()[0]}") from None


def save_model(model, tokenizer, out: Path | str, extra_files: dict | None = None) -> Path:
    """Save model (safetensors), tokenizer and optional JSON files into ``out`` atomically."""
    from .config import write_json_atomic

    out = Path(out)
    with atomic_dir(out) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        for name, payload in (extra_files or {}).items():
            write_json_atomic(tmp / name, payload)
    return out


def load_saved(path: Path | str):
    """Load a saved model folder with the class its ``config.json`` names (LM head, classifier, ...)."""
    import transformers

    path = check_model_dir(path)
    config = transformers.AutoConfig.from_pretrained(str(path))
    arch = (config.architectures or ["XLNetModel"])[0]
    cls = getattr(transformers, arch, None)
    if cls is None:
        raise UserError(f"{path}: unknown architecture {arch!r}")
    return _load(cls, path)
