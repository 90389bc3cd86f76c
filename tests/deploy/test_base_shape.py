"""Speed at ``xlnet-base-cased``'s shape without its weights (``deploy/base_shape.py``), on a small shape here: the
pruned copies remove the encoder fraction asked (counted from the tensors), and the table's ratios are of medians
timed in one loop. Speed itself is not asserted (a shared 2-core machine)."""
import pytest
import torch

from xlprune_lib.xlnet.structure import XLNetStructure

SMALL = {"n_layer": 2, "d_model": 64, "n_head": 4, "d_inner": 256, "vocab_size": 100}


def test_base_shape_speed_table_counts_the_encoder():
    """The base-shape table on a small shape (the real one is xlnet-base-cased's, run by ``make results``):
    the removed fraction is counted from the tensors, and the ratios are of medians timed in one loop."""
    from xlprune_lib.deploy.base_shape import BASE_SHAPE, speed_table

    assert BASE_SHAPE == {"n_layer": 12, "d_model": 768, "n_head": 12, "d_inner": 3072, "vocab_size": 32000}
    shape = {"n_layer": 2, "d_model": 64, "n_head": 4, "d_inner": 256, "vocab_size": 100}
    rows = speed_table((0.25, 0.5), batch=2, seq_len=8, repeats=2, shape=shape)
    assert [r["requested"] for r in rows] == [0.0, 0.25, 0.5]
    assert rows[0]["encoder_removed"] == 0 and rows[0]["latency_ratio"] == 1.0
    for row in rows[1:]:
        assert abs(row["encoder_removed"] - row["requested"]) < 0.05
        assert row["latency_ratio"] == pytest.approx(row["median_ms"] / rows[0]["median_ms"])
        assert row["q1_ms"] <= row["median_ms"] <= row["q3_ms"]


def test_shaped_models_are_pruned_copies_of_one_seeded_dense_model():
    from xlprune_lib.deploy.base_shape import shaped_models

    models = shaped_models((0.25, 0.5), shape=SMALL, seed=1)
    assert list(models) == ["dense", 0.25, 0.5]
    dense = models["dense"]
    assert (dense.config.n_layer, dense.config.d_model, dense.config.vocab_size) == (2, 64, 100)
    assert XLNetStructure(dense).total_units("head") == 8 and XLNetStructure(dense).total_units("neuron") == 512
    full = XLNetStructure(dense).encoder_params()
    kept = {f: XLNetStructure(models[f]).encoder_params() / full for f in (0.25, 0.5)}
    assert abs(kept[0.25] - 0.75) < 0.05 and abs(kept[0.5] - 0.5) < 0.05 and kept[0.5] < kept[0.25]
    for f in (0.25, 0.5):
        assert not models[f].training
        # a copy: the embedding is the dense model's, and the dense model kept every unit
        assert torch.equal(models[f].transformer.word_embedding.weight, dense.transformer.word_embedding.weight)
        assert models[f].transformer.word_embedding.weight is not dense.transformer.word_embedding.weight
    again = shaped_models((), shape=SMALL, seed=1)["dense"]
    other = shaped_models((), shape=SMALL, seed=2)["dense"]
    assert torch.equal(again.transformer.word_embedding.weight, dense.transformer.word_embedding.weight)
    assert not torch.equal(other.transformer.word_embedding.weight, dense.transformer.word_embedding.weight)
    ids = torch.randint(5, 100, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert all(m(input_ids=ids).logits.shape == (2, 2) for m in models.values())
