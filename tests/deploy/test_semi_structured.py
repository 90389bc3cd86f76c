"""2:4 weights for sparse tensor cores (``deploy/semi_structured.py``) on a CPU: the conversion's rewiring with an
identity converter, its refusals (models that are not 2:4, live masks, and torch's own CPU refusal as one line,
the model left as it was) and the einsum override, active only inside the converted model's forward pass."""
import pytest
import torch

from xlprune_lib.config import UserError
from xlprune_lib.deploy import semi_structured as ss
from xlprune_lib.prune.importance import score
from xlprune_lib.prune.select import NM
from xlprune_lib.xlnet.masks import make_permanent


def _two_of_four(model):
    NM(2, 4)(model, score(model, "magnitude", "weight")).apply_masks(model)
    make_permanent(model)
    return model


def test_semi_structured_rewiring_computes_the_same_logits(tiny_classifier):
    """``--semi-structured`` on a 2:4 model: every prunable matrix is handed to the converter as the 2-D ``linear``
    weight it equals, and the model computes the same logits through them (here with an identity converter: the
    real one, ``to_sparse_semi_structured``, needs a CUDA GPU). The einsum override is active only inside that
    model's forward pass. Models that are not 2:4, or still carry live masks, are refused."""
    from xlprune_lib.deploy.semi_structured import semi_structured
    from xlprune_lib.prune.select import NM

    model = tiny_classifier
    ids = torch.randint(5, 90, (3, 7), generator=torch.Generator().manual_seed(0))
    with pytest.raises(UserError, match="needs a 2:4 model"):
        semi_structured(model, convert=lambda w: w.clone())
    NM(2, 4)(model, score(model, "magnitude", "weight")).apply_masks(model)
    with pytest.raises(UserError, match="masks made permanent"):
        semi_structured(model, convert=lambda w: w.clone())
    make_permanent(model)
    with torch.no_grad():
        want = model(input_ids=ids).logits
    from xlprune_lib.deploy.bench import resident_bytes

    dense_bytes = resident_bytes(model)
    assert dense_bytes == sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    seen = []
    einsum = torch.einsum
    n = semi_structured(model, convert=lambda w: seen.append(tuple(w.shape)) or w.clone())
    assert n == len(seen) == 7 * model.config.n_layer      # q, k, v, o, r, layer_1, layer_2 of every layer
    assert all(bool((torch.tensor(s) > 0).all()) for s in seen)
    assert model.transformer.layer[0].rel_attn.q.is_meta    # the 3-D weight holds no memory any more
    assert resident_bytes(model) == dense_bytes             # identity conversion: the same bytes, held elsewhere
    with torch.no_grad():
        got = model(input_ids=ids).logits
    torch.testing.assert_close(got, want)
    assert torch.einsum is einsum                            # restored after the forward pass
    with pytest.raises(Exception):
        model(input_ids=ids + 10 ** 6)                       # an id past the vocabulary: fails inside forward
    assert torch.einsum is einsum                            # restored all the same
    from xlprune_lib.deploy.semi_structured import semi_structured_checked

    model2 = tiny_classifier.__class__(model.config).eval()
    NM(2, 4)(model2, score(model2, "magnitude", "weight")).apply_masks(model2)
    make_permanent(model2)
    checked = semi_structured_checked(model2, {"input_ids": ids}, convert=lambda w: w.clone())
    assert checked["semi_structured_weights"] == n and checked["max_abs_logit_difference"] < 1e-5
    model2 = tiny_classifier.__class__(model.config)
    NM(2, 4)(model2, score(model2, "magnitude", "weight")).apply_masks(model2)
    make_permanent(model2)

    def refuse(w):
        raise RuntimeError("Error original_tensor.shape torch.Size([32, 32]) is not supported!\nmore detail")

    with pytest.raises(UserError, match=r"layer.0.rel_attn.q \(32 x 32, torch.float32\) cannot run semi-structured: "
                                        r"Error original_tensor.shape"):
        semi_structured(model2, convert=refuse)


def test_the_real_conversion_refuses_a_cpu_model_in_one_line_and_changes_nothing(tiny_classifier):
    """``to_sparse_semi_structured`` takes CUDA tensors only: on a CPU the default converter's refusal is one
    ``UserError`` naming the first matrix, and the model still runs as before (no hooks, no placeholder)."""
    model = _two_of_four(tiny_classifier)
    ids = torch.randint(5, 90, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(input_ids=ids).logits
    einsum = torch.einsum
    with pytest.raises(UserError, match=r"layer.0.rel_attn.q \(32 x 32, torch.float32\) cannot run semi-structured: "
                                        r".*cpu"):
        ss.semi_structured(model)
    assert torch.einsum is einsum and not model._forward_pre_hooks and not model._forward_hooks
    assert not any(p.is_meta for p in model.parameters())
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, want)


def test_a_refusal_at_a_later_matrix_leaves_the_model_as_it_was(tiny_classifier):
    """Converting is all or nothing: a converter that refuses the third matrix (after two were converted) leaves
    every weight in place, no placeholder and no hook, so the model still computes what it did (a narrower fix,
    checking only the first matrix, would leave two weights on the meta device)."""
    model = _two_of_four(tiny_classifier)
    ids = torch.randint(5, 90, (2, 6), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(input_ids=ids).logits
    calls = []

    def refuse_third(w):
        calls.append(tuple(w.shape))
        if len(calls) == 3:
            raise RuntimeError("not supported here")
        return w.clone()

    with pytest.raises(UserError, match=r"layer.0.rel_attn.v .* cannot run semi-structured: not supported here"):
        ss.semi_structured(model, convert=refuse_third)
    assert len(calls) == 3 and not model._forward_pre_hooks and not model._forward_hooks
    assert not any(p.is_meta for p in model.parameters())
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, want)


def test_the_einsum_override_answers_only_the_converted_weights():
    """Inside a converted forward pass, the two projection equations on a converted placeholder are ``linear``
    with the packed 2-D weight; any other call, or any call outside the pass, is ``torch.einsum`` itself."""
    from xlprune_lib.deploy.onnx import PROJECTION_OUT, PROJECTIONS_IN

    g = torch.Generator().manual_seed(0)
    weight = torch.randn(8, 2, 3, generator=g)              # (d_model, n_head, d_head), as XLNet keeps q
    x = torch.randn(5, 4, 8, generator=g)                   # (seq, batch, d_model)
    placeholder = torch.empty(weight.shape, device="meta")
    packed = weight.reshape(8, 6).T.contiguous()            # the linear weight it equals: (n_head * d_head, d_model)
    want = torch.einsum(PROJECTIONS_IN, x, weight)
    ss._enter({id(placeholder): (packed, (2, 3))})
    try:
        assert torch.einsum is not ss._EINSUM
        torch.testing.assert_close(torch.einsum(PROJECTIONS_IN, x, placeholder), want)
        heads = torch.randn(5, 4, 2, 3, generator=g)
        out_weight = torch.randn(8, 2, 3, generator=g)
        out_placeholder = torch.empty(out_weight.shape, device="meta")
        ss._LOCAL.weights[id(out_placeholder)] = (out_weight.reshape(8, 6).contiguous(), (2, 3))
        torch.testing.assert_close(torch.einsum(PROJECTION_OUT, heads, out_placeholder),
                                   ss._EINSUM(PROJECTION_OUT, heads, out_weight))
        a, b = torch.randn(3, 4, generator=g), torch.randn(4, 2, generator=g)
        torch.testing.assert_close(torch.einsum("ij,jk->ik", a, b), a @ b)          # not a converted weight
        torch.testing.assert_close(torch.einsum("ij,jk->ik", [a, b]), a @ b)        # operands as one list
    finally:
        ss._leave()
    assert torch.einsum is ss._EINSUM and ss._LOCAL.weights is None
