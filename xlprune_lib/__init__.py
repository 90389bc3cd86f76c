"""xlprune_lib: pruning XLNet, the library behind the book.

One concept per module (see the design notes): ``config`` (profiles, paths, seeds), ``data`` (corpus, hub
loaders, tokenizer), ``modeling`` (build / load / save), ``pretrain`` (permutation LM), ``finetune``
(classification), ``report`` (parameter tables, provenance), ``plots`` (house style), ``runs`` (cached runs),
``importance`` (pruning scores), ``masks`` (torch.nn.utils.prune masks), ``surgery`` (removing heads, neurons,
layers),
``book`` (papermill execution), ``cli`` (the ``xlprune`` command).
"""
import warnings

# tqdm.auto warns once per kernel that ipywidgets is missing; progress bars are off in notebooks anyway.
warnings.filterwarnings("ignore", message="IProgress not found")

__version__ = "0.1.0"

# Pruned models (layers of different widths) are saved with model type ``xlnet-pruned``; registering it here
# lets ``AutoModelForSequenceClassification.from_pretrained`` and ``pipeline`` load them after ``import xlprune_lib``.
from .xlnet.modeling import register_pruned_xlnet  # noqa: E402

register_pruned_xlnet()
