"""Reference ops against alternative formulations: chunked vs token-by-token scans (outputs,
final states, every gradient), the SSD as a special case of the selective scan, conv and norms
against torch's own layers, and the one-step updates against the sequence ops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from testing_utils import assert_close

from qmamba.ops import backend
from qmamba.ops.causal_conv1d import causal_conv1d_ref, causal_conv1d_update_ref
from qmamba.ops.rms_norm import add_norm_ref, rms_norm_gated_ref
from qmamba.ops.selective_scan import selective_scan_ref, selective_scan_sequential
from qmamba.ops.ssd import ssd_chunk_scan_ref, ssd_sequential
from qmamba.ops.state_update import selective_state_update_ref


def _scan_inputs(b, d, l, n, groups, requires_grad=True):
    bc_shape = (b, n, l) if groups == 0 else (b, groups, n, l)
    t = {
        "u": torch.randn(b, d, l), "delta": torch.randn(b, d, l) * 0.5, "A": -torch.rand(d, n) * 4 - 0.1,
        "B": torch.randn(bc_shape), "C": torch.randn(bc_shape), "D": torch.randn(d), "z": torch.randn(b, d, l),
        "delta_bias": torch.randn(d) * 0.3, "initial_state": torch.randn(b, d, n),
    }
    for v in t.values():
        v.requires_grad_(requires_grad)
    return t


@pytest.mark.parametrize("l", [1, 7, 37, 130])
@pytest.mark.parametrize("groups", [0, 2])
def test_selective_scan_chunked_matches_sequential(l, groups):
    t = _scan_inputs(2, 8, l, 4, groups)
    out1, last1 = selective_scan_ref(**t, delta_softplus=True, return_last_state=True)
    out2, last2 = selective_scan_sequential(**t, delta_softplus=True, return_last_state=True)
    assert_close(out1, out2, 1e-5, "out")
    assert_close(last1, last2, 1e-5, "last state")
    g = torch.randn_like(out1)
    grads1 = torch.autograd.grad((out1 * g).sum() + last1.sum(), list(t.values()))
    grads2 = torch.autograd.grad((out2 * g).sum() + last2.sum(), list(t.values()))
    for name, g1, g2 in zip(t, grads1, grads2):
        assert_close(g1, g2, 1e-5, f"grad {name}")


def test_selective_scan_chunk_size_does_not_matter():
    t = _scan_inputs(1, 4, 50, 3, 0, requires_grad=False)
    outs = [selective_scan_ref(**t, delta_softplus=True, chunk_size=c) for c in (1, 3, 16, 64)]
    for o in outs[1:]:
        assert_close(o, outs[0], 1e-5)


def test_selective_scan_matches_hand_computed_scalar_case():
    # one channel, one state, no gating: h_t = a h_{t-1} + dt*B*u with a = exp(dt*A)
    u = torch.tensor([[[1.0, 2.0, 3.0]]])
    delta = torch.full_like(u, 0.5)
    A, B, C = torch.tensor([[-2.0]]), torch.ones(1, 1, 3), torch.full((1, 1, 3), 2.0)
    a = torch.exp(torch.tensor(-1.0))
    h1 = 0.5
    h2 = a * h1 + 1.0
    h3 = a * h2 + 1.5
    expected = 2.0 * torch.tensor([h1, h2, h3])
    assert_close(selective_scan_ref(u, delta, A, B, C)[0, 0], expected, 1e-6)


@pytest.mark.parametrize("l,chunk", [(1, 4), (13, 4), (64, 16), (45, 16)])
@pytest.mark.parametrize("groups", [1, 2])
def test_ssd_chunked_matches_sequential(l, chunk, groups):
    b, h, p, n = 2, 4, 3, 5
    t = {"x": torch.randn(b, l, h, p), "dt": torch.randn(b, l, h), "A": -torch.rand(h) * 3,
         "B": torch.randn(b, l, groups, n), "C": torch.randn(b, l, groups, n)}
    kw = {"D": torch.randn(h), "z": torch.randn(b, l, h, p), "dt_bias": torch.randn(h),
          "initial_states": torch.randn(b, h, p, n)}
    every = {**t, **kw}
    for v in every.values():
        v.requires_grad_(True)
    y1, f1 = ssd_chunk_scan_ref(**t, chunk_size=chunk, **kw, dt_softplus=True, return_final_states=True)
    y2, f2 = ssd_sequential(**t, **kw, dt_softplus=True, return_final_states=True)
    assert_close(y1, y2, 1e-5, "y")
    assert_close(f1, f2, 1e-5, "final state")
    g = torch.randn_like(y1)
    grads1 = torch.autograd.grad((y1 * g).sum() + f1.sum(), list(every.values()))
    grads2 = torch.autograd.grad((y2 * g).sum() + f2.sum(), list(every.values()))
    for name, g1, g2 in zip(every, grads1, grads2):
        assert_close(g1, g2, 1e-5, f"grad {name}")


def test_ssd_is_selective_scan_with_scalar_decay_per_head():
    b, l, h, p, n = 1, 20, 2, 3, 4
    x, dt = torch.randn(b, l, h, p), F.softplus(torch.randn(b, l, h))
    A, B, C = -torch.rand(h), torch.randn(b, l, 1, n), torch.randn(b, l, 1, n)
    y = ssd_chunk_scan_ref(x, dt, A, B, C, chunk_size=8)
    # the same system as a Mamba-1 scan: channels (h p), A repeated over p and n, dt repeated over p
    u = x.reshape(b, l, h * p).transpose(1, 2)
    delta = dt.repeat_interleave(p, dim=2).transpose(1, 2)
    A1 = A.repeat_interleave(p)[:, None].expand(h * p, n)
    y1 = selective_scan_ref(u, delta, A1, B[:, :, 0].transpose(1, 2), C[:, :, 0].transpose(1, 2))
    assert_close(y.reshape(b, l, h * p).transpose(1, 2), y1, 1e-5)


def test_ssd_dt_limit_clamps():
    b, l, h, p, n = 1, 6, 2, 2, 3
    x, dt, A = torch.randn(b, l, h, p), torch.randn(b, l, h) * 3, -torch.rand(h)
    B, C = torch.randn(b, l, 1, n), torch.randn(b, l, 1, n)
    clamped = ssd_chunk_scan_ref(x, dt, A, B, C, 4, dt_softplus=True, dt_limit=(0.1, 0.5))
    manual = ssd_chunk_scan_ref(x, F.softplus(dt).clamp(0.1, 0.5), A, B, C, 4)
    assert_close(clamped, manual, 1e-6)


def test_causal_conv1d_matches_torch_conv_and_continues_from_state():
    b, d, l, w = 2, 5, 11, 4
    x, weight, bias = torch.randn(b, d, l), torch.randn(d, w), torch.randn(d)
    conv = torch.nn.Conv1d(d, d, w, groups=d, padding=w - 1)
    conv.weight.data, conv.bias.data = weight[:, None], bias
    expected = F.silu(conv(x)[..., :l])
    assert_close(causal_conv1d_ref(x, weight, bias, activation="silu"), expected, 1e-6)
    # two halves with the state carried == the whole
    y1, s1 = causal_conv1d_ref(x[..., :6], weight, bias, activation="silu", return_final_states=True)
    y2 = causal_conv1d_ref(x[..., 6:], weight, bias, initial_states=s1, activation="silu")
    assert_close(torch.cat([y1, y2], -1), expected, 1e-6)


def test_causal_conv1d_update_matches_sequence_op():
    b, d, l, w = 2, 3, 9, 4
    x, weight, bias = torch.randn(b, d, l), torch.randn(d, w), torch.randn(d)
    expected = causal_conv1d_ref(x, weight, bias, activation="silu")
    state = torch.zeros(b, d, w)
    steps = [causal_conv1d_update_ref(x[:, :, t], state, weight, bias, activation="silu") for t in range(l)]
    assert_close(torch.stack(steps, -1), expected, 1e-6)
    assert torch.equal(state, x[:, :, -w:])


@pytest.mark.parametrize("heads", [False, True])
def test_state_update_matches_scan_step_by_step(heads):
    b, d, n, l = 2, 6, 4, 5
    t = _scan_inputs(b, d, l, n, 0, requires_grad=False)
    expected = selective_scan_ref(**t, delta_softplus=True)
    state = t["initial_state"].clone()
    outs = []
    for s in range(l):
        x, dt, z = t["u"][:, :, s], t["delta"][:, :, s], t["z"][:, :, s]
        B, C = t["B"][:, :, s], t["C"][:, :, s]
        if heads:  # the same thing written as 2 heads of 3 channels, 1 group
            v = lambda a: a.view(b, 2, 3)  # noqa: E731
            st = state.view(b, 2, 3, n)
            y = selective_state_update_ref(st, v(x), v(dt), t["A"].view(2, 3, n), B[:, None], C[:, None],
                                           D=t["D"].view(2, 3), z=v(z), dt_bias=t["delta_bias"].view(2, 3),
                                           dt_softplus=True).reshape(b, d)
        else:
            y = selective_state_update_ref(state, x, dt, t["A"], B, C, D=t["D"], z=z,
                                           dt_bias=t["delta_bias"], dt_softplus=True)
        outs.append(y)
    assert_close(torch.stack(outs, -1), expected, 1e-5)


def test_add_norm_matches_torch_norms():
    x, res, w, bias = torch.randn(3, 7, 16), torch.randn(3, 7, 16), torch.randn(16), torch.randn(16)
    y, new_res = add_norm_ref(x, w, residual=res, eps=1e-5, residual_in_fp32=True)
    total = x + res
    assert_close(new_res, total, 1e-7)
    assert_close(y, total * torch.rsqrt(total.pow(2).mean(-1, keepdim=True) + 1e-5) * w, 1e-6)
    y_ln, _ = add_norm_ref(x, w, bias, residual=res, is_rms_norm=False)
    assert_close(y_ln, F.layer_norm(total, (16,), w, bias, eps=1e-5), 1e-6)
    y16, res16 = add_norm_ref(x.bfloat16(), w, residual=res.bfloat16(), residual_in_fp32=True)
    assert y16.dtype == torch.bfloat16 and res16.dtype == torch.float32


def test_rms_norm_gated_groups_and_gate_order():
    x, z, w = torch.randn(2, 5, 12), torch.randn(2, 5, 12), torch.randn(12)
    g = x * F.silu(z)
    groups = g.view(2, 5, 3, 4)
    expected = (groups * torch.rsqrt(groups.pow(2).mean(-1, keepdim=True) + 1e-5)).view(2, 5, 12) * w
    assert_close(rms_norm_gated_ref(x, w, z, group_size=4, norm_before_gate=False), expected, 1e-6)
    after = rms_norm_gated_ref(x, w, None, group_size=12) * F.silu(z)
    assert_close(rms_norm_gated_ref(x, w, z, norm_before_gate=True), after, 1e-6)


def test_backend_override_and_errors():
    assert backend.requested_backend() == "auto"
    with backend.use_backend("ref"):
        assert backend.requested_backend() == "ref"
        assert backend.resolve("selective_scan", "cpu") is selective_scan_ref
    with pytest.raises(Exception, match="no 'triton' implementation"):
        with backend.use_backend("triton"):
            backend.resolve("selective_scan", "cpu")
    with pytest.raises(Exception, match="not a backend"):
        with backend.use_backend("cuda-magic"):
            pass


@pytest.mark.parametrize("l,T", [(1, 4), (9, 4), (12, 3), (7, 1)])
def test_chunked_scan_gradcheck_mixed_groups(l, T):
    # the hand-written backward of the chunked scan against finite differences, in float64
    from qmamba.ops.selective_scan.chunked import chunked_scan

    b, d, n = 2, 4, 3
    f64 = {"dtype": torch.float64, "requires_grad": True}
    args = (torch.rand(b, d, l, **f64), torch.randn(b, d, l, **f64), -torch.rand(d, n, **f64),
            torch.randn(b, 2, n, l, **f64), torch.randn(b, 1, n, l, **f64), torch.randn(b, d, n, **f64))
    assert torch.autograd.gradcheck(lambda *a: chunked_scan(*a, T), args)
