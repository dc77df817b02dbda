"""Non-local blocks: loop reference, zero-gamma identity, v3 cross attention, v4 embedding."""
import math

import pytest
import torch

from sephnet.layers.non_local import NonLocalBlock, PositionalNonLocalBlock, attention_dims


def _reference(block, x, context=None):
    """Slow per-image, per-head, per-position loop of the documented formula."""
    context = x if context is None else context
    q, k, v = block.query(x), block.key(context), block.value(context)
    n, _, h, w = x.shape
    heads = block.num_heads
    dv = v.shape[1] // heads
    dq = q.shape[1] // heads
    out = torch.zeros(n, v.shape[1], h * w, dtype=x.dtype)
    for i in range(n):
        qf, kf, vf = q[i].flatten(1), k[i].flatten(1), v[i].flatten(1)  # [D, positions]
        for j in range(heads):
            for p in range(h * w):
                logits = torch.stack(
                    [
                        (qf[j * dq:(j + 1) * dq, p] * kf[j * dq:(j + 1) * dq, s]).sum()
                        for s in range(kf.shape[1])
                    ]
                ) / math.sqrt(dv)
                a = torch.softmax(logits, 0)
                out[i, j * dv:(j + 1) * dv, p] = (vf[j * dv:(j + 1) * dv] * a).sum(1)
    o = block.out(out.reshape(n, -1, h, w))
    gamma = block.gamma if block.gamma is not None else 1.0
    return x + gamma * o


def test_attention_dims_from_multipliers_and_dims():
    assert attention_dims(16, multipliers=(8, 8, 2)) == (2, 2, 8)
    assert attention_dims(16, dims=(4, 4, 6)) == (4, 4, 6)
    with pytest.raises(ValueError, match="multiplier 3"):
        attention_dims(16, multipliers=(3, 1, 1))
    with pytest.raises(ValueError, match="exactly one"):
        attention_dims(16, multipliers=(1, 1, 1), dims=(4, 4, 4))


@pytest.mark.parametrize("heads,dims", [(1, None), (2, (4, 4, 6))])
def test_non_local_matches_loop_reference(heads, dims):
    block = NonLocalBlock(8, multipliers=(2, 2, 1), dims=dims, num_heads=heads).double()
    for p in block.parameters():  # non-zero biases too
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 8, 3, 2, dtype=torch.float64)
    torch.testing.assert_close(block(x), _reference(block, x))


def test_attention_scaled_by_value_width_not_key_width():
    block = NonLocalBlock(8, dims=(2, 2, 8)).double()
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.5)
    x = torch.randn(1, 8, 2, 2, dtype=torch.float64)
    q, k = block.query(x).flatten(2)[0], block.key(x).flatten(2)[0]
    wrong = torch.softmax(q.t() @ k / math.sqrt(2), -1)
    right = torch.softmax(q.t() @ k / math.sqrt(8), -1)
    v = block.value(x).flatten(2)[0]
    expected = x + block.out((v @ right.t()).reshape(1, 8, 2, 2))
    torch.testing.assert_close(block(x), expected)
    assert not torch.allclose(right, wrong)


def test_weighted_residual_is_identity_at_init_and_learns_gamma():
    block = NonLocalBlock(8, multipliers=(8, 8, 2), weighted_residual=True)
    x = torch.randn(2, 8, 4, 4)
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)
    block(x).sum().backward()
    assert block.gamma.grad is not None and block.gamma.grad.abs() > 0


def test_norm_and_activation_after_residual():
    block = NonLocalBlock(32, norm="GN", activation=True)
    x = torch.randn(2, 32, 3, 3)
    y = block(x)
    assert (y >= 0).all()
    plain = NonLocalBlock(32)
    plain.load_state_dict({k: v for k, v in block.state_dict().items() if not k.startswith("norm")})
    torch.testing.assert_close(y, torch.relu(block.norm(plain(x))))
    evo = NonLocalBlock(8, norm="EvoNormS0", activation=True, norm_groups=4)
    assert not evo.relu  # EvoNormS0 has its own non-linearity


def test_cross_attention_takes_keys_and_values_from_context():
    block = NonLocalBlock(8, dims=(4, 4, 4), context_channels=6, num_heads=2).double()
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 8, 2, 3, dtype=torch.float64)
    ctx = torch.randn(2, 6, 4, 1, dtype=torch.float64)
    y = block(x, ctx)
    assert y.shape == x.shape
    torch.testing.assert_close(y, _reference(block, x, ctx))


def test_positional_block_attends_within_x_plus_embedding_with_residual_around_it():
    """v4: x' = x + P feeds Q, K and V, and the residual is x' + out(attention)."""
    block = PositionalNonLocalBlock(8, size=(3, 3), num_heads=2).double()
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 8, 3, 3, dtype=torch.float64)
    embedded = x + block.pos_embedding
    torch.testing.assert_close(block(x), _reference(block, embedded))
    # With zero attention output the block returns x + P: the embedding is in the residual.
    with torch.no_grad():
        block.out.weight.zero_()
        block.out.bias.zero_()
    torch.testing.assert_close(block(x), embedded.expand_as(x))
    with pytest.raises(ValueError, match="embedding grid"):
        block(torch.randn(1, 8, 4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="context"):
        block(x, x)


def test_bad_heads_and_widths_raise():
    with pytest.raises(ValueError, match="num_heads=3"):
        NonLocalBlock(8, num_heads=3)
    with pytest.raises(ValueError, match="query width"):
        NonLocalBlock(8, dims=(4, 2, 4))


def test_backward_reaches_input_and_all_weights():
    block = NonLocalBlock(8, num_heads=2)
    x = torch.randn(2, 8, 3, 3, requires_grad=True)
    block(x).square().sum().backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in block.parameters())


def test_empty_batch_gives_an_empty_output():
    block = NonLocalBlock(32, multipliers=(8, 8, 2), num_heads=2)
    x = torch.zeros(0, 32, 7, 7, requires_grad=True)
    y = block(x)
    assert y.shape == (0, 32, 7, 7)
    y.sum().backward()
    assert x.grad.shape == x.shape
