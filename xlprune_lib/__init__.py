"""xlprune_lib: pruning XLNet, the library behind the book.

Subpackages, each one concept, each importing only from those before it (docs/architecture.md):
``xlnet`` (the model's structure, loading and saving, surgery, masks, gates), ``measure`` (tables, sizes,
intervals), ``train`` (data, warm start, pretraining, fine-tuning, the run cache), ``prune`` (scores,
threshold rules, the ``PruningPlan``, L0 gates, schedules), ``deploy`` (model cards, ONNX export and int8,
benchmarks, 2:4 on sparse tensor cores), ``loops`` (one-shot, iterative, gradual, distributed pruning), ``book`` (chapter execution,
reference results, figures); ``config`` and ``cli`` (the ``xlprune`` command) at the top.
"""
import warnings

# tqdm.auto warns once per kernel that ipywidgets is missing; progress bars are off in notebooks anyway.
warnings.filterwarnings("ignore", message="IProgress not found")

__version__ = "0.1.0"

# Pruned models (layers of different widths) are saved with model type ``xlnet-pruned``; registering it here
# lets ``AutoModelForSequenceClassification.from_pretrained`` and ``pipeline`` load them after ``import xlprune_lib``.
from .xlnet.modeling import register_pruned_xlnet  # noqa: E402

register_pruned_xlnet()
