"""The model card of a pruned run folder (``deploy/card.py``): measured numbers only (accuracies with their
bootstrap intervals, the delivered sparsity, sizes from the tensors), how the model was made and recovered,
where it starts from, and how to load it."""
import json

import pytest
import torch

from xlprune_lib.config import get_profile
from xlprune_lib.deploy.card import base_model, model_card
from xlprune_lib.measure.report import layer_report
from xlprune_lib.measure.stats import interval


@pytest.mark.slow
def test_pruned_run_has_a_model_card(pruned_run):
    """The card's numbers are the run's measurements: accuracies with the exact bootstrap interval of the split
    sizes, the delivered sparsity, the file size; and it says how to load the folder."""
    from xlprune_lib.measure.stats import interval
    from xlprune_lib.train.data import split_sizes

    card = (pruned_run / "README.md").read_text()
    metrics = json.loads((pruned_run / "metrics.json").read_text())
    front = card.split("---")[1]
    assert "library_name: transformers" in front and "- magnitude" in front and "- head" in front
    n = split_sizes("rt", 300, 0)["test"]
    low, high = interval(metrics["test_accuracy"], n)
    assert f"{100 * metrics['test_accuracy']:.1f}% [{100 * low:.1f}, {100 * high:.1f}]" in card
    assert f"(n = {n})" in card
    assert f"delivered {100 * metrics['delivery']['delivered']:.1f}%" in card
    size = (pruned_run / "model.safetensors").stat().st_size
    assert f"{size / 1e6:.1f} MB" in card
    assert "trust_remote_code=True" in card and metrics["git_commit"] in card


def test_model_card_describes_the_model_and_the_task_splits():
    """The card counts the saved model's layers (not the profile's) and names how the task's splits were made."""
    from conftest import zero_width_classifier

    from xlprune_lib.deploy.card import model_card
    from xlprune_lib.measure.report import layer_report

    model = zero_width_classifier()       # 4 layers, one dropped: 3 remain
    metrics = {"spec": {"method": "magnitude", "granularity": "head"}, "dense": {}, "validation_accuracy": 0.5,
               "test_accuracy": 0.5, "delivery": {"requested": 0.5, "delivered": 0.5, "unit": "heads"}}
    cards = {name: model_card(metrics, layer_report(model, 32), {"file_bytes": 1000},
                              {"validation": 20, "test": 20}, get_profile(name), model.config.model_type)
             for name in ("base", "smoke")}
    assert all("A 3-layer XLNet" in card for card in cards.values())
    assert "by-movie" in cards["smoke"] and "GLUE" not in cards["smoke"]
    assert "by-movie" not in cards["base"] and "GLUE's validation split as the test split" in cards["base"]


@pytest.fixture(scope="module")
def report():
    from transformers import XLNetForSequenceClassification

    from conftest import tiny_config

    torch.manual_seed(0)
    return layer_report(XLNetForSequenceClassification(tiny_config(num_labels=2)).eval(), 32)


def _card(report, profile="smoke", sizes=None, model_type="xlnet", **metrics):
    base = {"spec": {"method": "magnitude", "granularity": "weight"}, "dense": {"validation_accuracy": 0.8,
            "test_accuracy": 0.75}, "validation_accuracy": 0.7, "test_accuracy": 0.65,
            "delivery": {"requested": 0.5, "delivered": 0.5, "unit": "prunable weights"}, "git_commit": "abc1234"}
    return model_card({**base, **metrics}, report, {"file_bytes": 2_500_000}, sizes or {"validation": 40, "test": 20},
                      get_profile(profile), model_type)


def test_the_published_model_a_profile_starts_from():
    assert base_model(get_profile("base")) == "xlnet-base-cased"
    assert base_model(get_profile("minilm")) == "sentence-transformers/all-MiniLM-L6-v2"
    assert base_model(get_profile("smoke")) is None and base_model(get_profile("tiny")) is None


def test_the_accuracy_table_holds_each_model_with_its_interval(report):
    card = _card(report)
    low, high = interval(0.65, 20)
    assert f"| **this model** | 70.0% [{100 * interval(0.7, 40)[0]:.1f}, {100 * interval(0.7, 40)[1]:.1f}] | " \
           f"65.0% [{100 * low:.1f}, {100 * high:.1f}] |" in card
    assert "| dense model it was pruned from | 80.0% [" in card and "(n = 40)" in card and "(n = 20)" in card
    assert "pruned, before fine-tuning" not in card
    both = _card(report, one_shot={"validation_accuracy": 0.6}, after_finetune={}, spec={"method": "magnitude",
                 "granularity": "weight", "finetune_epochs": 2})
    assert "| pruned, before fine-tuning | 60.0% [" in both and "| not measured |" in both
    assert "fine-tuned for 2 epochs after pruning" in both
    with pytest.raises(KeyError):
        _card(report, sizes={"validation": 40})


def test_the_sizes_are_those_of_the_report_and_the_files(report):
    card = _card(report, delivery={"requested": 0.6, "delivered": 0.55, "unit": "heads", "note": "heads are whole"})
    totals = report["totals"]
    assert "Sparsity of the heads: asked 60.0%, **delivered 55.0%**" in card and "Not as asked: heads are whole." in card
    assert f"Parameters: {totals['model']['params']:,} stored, {totals['model']['nonzero']:,} nonzero" in card
    assert "Weights file: 2.5 MB" in card and f"{totals['flops_per_token']:,} as stored" in card
    assert "Heads per layer: 4, 4; FFN neurons per layer: 64, 64." in card
    assert "asked no target (set by the method)" in _card(report, delivery={"requested": None, "delivered": 0.3})


@pytest.mark.parametrize("spec, said", [
    ({"method": "magnitude", "granularity": "weight"}, "not fine-tuned after pruning"),
    ({"method": "l0", "granularity": "head"}, "trained with the weights for 1.0 epochs"),
    ({"method": "magnitude", "granularity": "weight", "schedule": "cubic"}, "cubic schedule (Zhu & Gupta 2017), over 12"),
    ({"method": "fisher", "granularity": "head", "schedule": "geometric"}, "in rounds of pruning and fine-tuning "
                                                                          "(geometric schedule), over 12"),
])
def test_the_card_says_how_the_model_recovered(report, spec, said):
    card = _card(report, spec=spec, step=12)
    assert said in card and f"- {spec['method']}" in card and f"- {spec['granularity']}" in card
    assert ("`rounds.jsonl`" in card) == ("schedule" in spec)


def test_where_the_model_starts_from_and_how_it_loads(report):
    minilm = _card(report, "minilm")
    assert "base_model: sentence-transformers/all-MiniLM-L6-v2" in minilm and "license: apache-2.0" in minilm
    assert "adapted with permutation language modelling" in minilm
    scratch = _card(report, "smoke")
    assert "base_model" not in scratch and "pretrained here from scratch" in scratch
    assert "plain `transformers` XLNet" in scratch and "trust_remote_code" not in scratch
    foreign = _card(report, "base", source_profile=None, source_model="/their/model")
    assert "base_model" not in foreign and "made outside xlprune" in foreign and "from /their/model" in foreign
    pruned = _card(report, model_type="xlnet-pruned")
    assert "trust_remote_code=True" in pruned and "modeling_xlnet_pruned.py" in pruned
    front = json.loads("[" + pruned.split("```json\n")[1].split("```")[0] + "]")[0]
    assert front["git_commit"] == "abc1234" and set(front) == {"config", "git_commit", "versions", "machine"}
    data = _card(report, data={"source": "my/csvs", "validation_from_train": 0.1}, labels=["bad", "good"])
    assert "the data `my/csvs`" in data and "10% of train" in data and "(labels: bad, good)" in data
