"""CapturedTrainStep: the gradients and loss of loss_fn().backward(), written afresh on every call (not
accumulated), for inputs copied into the static tensors; eager on CPU, one CUDA graph on a GPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from testing_utils import assert_close

from qmamba import MambaLM
from qmamba.models.mamba_lm import MambaLMConfig
from qmamba.train.graphed_step import CapturedTrainStep

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _setup(device):
    model = MambaLM(MambaLMConfig(d_model=32, n_layer=2, vocab_size=97, ssm_cfg={"layer": "Mamba1", "d_state": 8}),
                    device=device)
    ids = torch.randint(0, 97, (2, 24), device=device)  # the static input

    def loss_fn():
        logits = model(input_ids=ids).logits
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())

    return model, ids, loss_fn


def _eager_grads(model, loss_fn):
    grads_before = [p.grad for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    loss = loss_fn()
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    for p, g in zip(model.parameters(), grads_before):  # leave the step's gradient tensors as they were
        p.grad = g
    return loss.detach(), grads


def _check(device, tol):
    model, ids, loss_fn = _setup(device)
    step = CapturedTrainStep(loss_fn, list(model.parameters()))
    for _ in range(2):  # a new batch each time, copied into the static input
        ids.copy_(torch.randint(0, 97, ids.shape, device=device))
        loss = step()
        got = [p.grad.clone() for p in model.parameters()]
        want_loss, want = _eager_grads(model, loss_fn)
        assert_close(loss, want_loss, tol, "loss")
        for i, (a, b) in enumerate(zip(got, want)):
            assert_close(a, b, tol, f"grad {i}")
        model.zero_grad(set_to_none=True)
        step()  # grads are written, not accumulated, and back in .grad after being cleared
        assert_close(next(model.parameters()).grad, want[0], tol, "second call")


def test_eager_on_cpu_matches_backward():
    _check("cpu", 1e-6)


@gpu
@pytest.mark.gpu
def test_graph_replay_matches_eager_backward_on_gpu():
    _check("cuda", 1e-4)


@gpu
@pytest.mark.gpu
def test_uncapturable_step_runs_eagerly_and_leaves_the_cuda_rng_usable():
    model, ids, loss_fn = _setup("cuda")

    def syncing_loss():  # a host sync: not allowed inside a CUDA graph capture
        loss = loss_fn()
        return loss * (1.0 + 0.0 * float(loss))

    step = CapturedTrainStep(syncing_loss, list(model.parameters()))
    assert step.graph is None
    loss = step()
    want_loss, want = _eager_grads(model, loss_fn)
    assert_close(loss, want_loss, 1e-5, "loss")
    assert_close(next(model.parameters()).grad, want[0], 1e-5, "grad 0")
    assert torch.randn(4, device="cuda").isfinite().all()  # the failed capture left the generator usable
