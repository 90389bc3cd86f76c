"""Sparse storage (bitmask + values in safetensors): exact round trip, real size savings, clear errors."""
import pytest
import torch

from xlprune_lib.config import UserError
from xlprune_lib.prune import importance
from xlprune_lib.prune.select import WeightSparsity
from xlprune_lib.xlnet.masks import make_permanent
from xlprune_lib.xlnet.modeling import save_model
from xlprune_lib.measure.report import checkpoint_sizes
from xlprune_lib.measure.sparse import SPARSE_FILE, decode, encode, load_sparse, save_sparse
from xlprune_lib.xlnet.structure import XLNetStructure


def test_encode_decode_is_exact_and_only_used_when_smaller():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(33, 7, generator=g)
    t[torch.rand(33, 7, generator=g) < 0.8] = 0
    packed = encode(t)
    assert packed is not None and torch.equal(decode(packed["mask"], packed["values"], t.shape), t)
    assert packed["mask"].numel() == (33 * 7 + 7) // 8 and packed["values"].numel() == int((t != 0).sum())
    assert encode(torch.randn(64)) is None            # dense: a bitmask would only add bytes


@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_pruned_classifier_round_trip_and_size(tiny_classifier, small_tokenizer, tmp_path, sparsity):
    model = tiny_classifier
    WeightSparsity(sparsity)(model, importance.magnitude(model)).apply_masks(model)
    make_permanent(model)
    dense_dir = save_model(model, small_tokenizer, tmp_path / "dense")
    sparse_dir = save_sparse(model, tmp_path / "sparse", small_tokenizer)
    again = load_sparse(sparse_dir)
    assert type(again) is type(model)
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ids = torch.tensor([[10, 11, 12, 4, 3]])
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, model.eval()(ids).logits, rtol=1e-5, atol=1e-6)
    sizes = {**checkpoint_sizes(dense_dir)["files"], **checkpoint_sizes(sparse_dir)["files"]}
    assert sizes[SPARSE_FILE] < sizes["model.safetensors"]
    payload = {name: sizes[name] - 8 - _header_bytes(d / name)               # tensor bytes without the JSON header
               for d, name in ((dense_dir, "model.safetensors"), (sparse_dir, SPARSE_FILE))}
    prunable = sum(getattr(m, n).numel() for m, n in XLNetStructure(model).prunable())
    saved = sparsity * prunable * 4 - prunable / 8           # fp32 zeros dropped, one bit per entry added
    assert payload["model.safetensors"] - payload[SPARSE_FILE] == pytest.approx(saved, rel=0.1)


def _header_bytes(path) -> int:
    """safetensors files start with the length of their JSON header as a little-endian u64."""
    return int.from_bytes(path.read_bytes()[:8], "little")


def test_tied_lm_head_is_stored_once(tmp_path):
    from conftest import tiny_config
    from transformers import XLNetLMHeadModel

    torch.manual_seed(0)
    lm = XLNetLMHeadModel(tiny_config())
    out = save_sparse(lm, tmp_path / "lm")
    again = load_sparse(out)
    assert again.lm_loss.weight is again.transformer.word_embedding.weight
    assert torch.equal(again.transformer.word_embedding.weight, lm.transformer.word_embedding.weight)


def test_missing_and_corrupted_files_are_user_errors(tiny_classifier, tmp_path):
    with pytest.raises(UserError, match="not a sparse checkpoint"):
        load_sparse(tmp_path / "nothing")
    out = save_sparse(tiny_classifier, tmp_path / "s")
    (out / SPARSE_FILE).write_bytes((out / SPARSE_FILE).read_bytes()[:100])
    with pytest.raises(UserError, match=f"{SPARSE_FILE} is damaged"):
        load_sparse(out)
