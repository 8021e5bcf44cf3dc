"""CUDA-graph decoding: the static-buffer decoder equals ``generate(model, ...)`` token for token (padded buckets,
rows of different lengths, EOS stops, sampling), the captured text and multimodal prefills equal ``model.prefill``;
on a GPU, graph replay equals the same step run eagerly."""

from __future__ import annotations

import pytest
import torch
from testing_utils import MAMBA1, MAMBA2, assert_close
from testing_utils import tiny_lm as tiny

from qmamba.errors import InputError
from qmamba.infer import GenerationConfig, generate
from qmamba.infer.cuda_graph import GraphDecoder, bucket_size, graph_generate, graph_stream
from qmamba.models.multimodal import MultimodalModel
from qmamba.models.presets import get_preset
from qmamba.models.splice import IMAGE_TOKEN_ID

LAYERS = pytest.mark.parametrize("ssm_cfg", [MAMBA1, MAMBA2], ids=["m1", "m2"])
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")



def left_padded(lengths, vocab: int = 97, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    L = max(lengths)
    ids = torch.zeros(len(lengths), L, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, L - n:], mask[i, L - n:] = torch.randint(1, vocab, (n,)), 1
    return ids.to(device), mask.to(device)


def mm_model(name: str) -> MultimodalModel:
    model = MultimodalModel(get_preset(name)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def vqa_prompt(model: MultimodalModel, batch: int, length: int, column: int):
    ids = torch.randint(0, model.config.llm.vocab_size, (batch, length))
    ids[:, column] = IMAGE_TOKEN_ID
    s, k = model.config.vision.image_size, len(model.config.vision.hf_configs)
    return ids, torch.randn(batch, 3 * k, s, s)


def test_bucket_sizes():
    assert [bucket_size(b) for b in (1, 2, 3, 5, 16, 17, 64, 65, 130)] == [1, 2, 4, 8, 16, 32, 64, 128, 192]
    with pytest.raises(InputError):
        bucket_size(0)


@LAYERS
def test_static_decode_equals_generate_with_padding_and_ragged_rows(ssm_cfg):
    model = tiny(ssm_cfg)
    ids, mask = left_padded([11, 4, 1])  # 3 rows: padded up to the bucket of 4
    decoder = GraphDecoder(model)
    assert not decoder.use_graphs
    out = decoder.generate(ids, mask, GenerationConfig(max_new_tokens=12))
    assert list(decoder.slots) == [4]
    assert torch.equal(out, generate(model, ids, attention_mask=mask, max_new_tokens=12))
    one = decoder.generate(ids[1:2, -4:], None, GenerationConfig(max_new_tokens=5))  # bucket 1, same buffers reused
    assert torch.equal(one, generate(model, ids[1:2, -4:], max_new_tokens=5))
    assert sorted(decoder.slots) == [1, 4]


@LAYERS
@pytest.mark.parametrize("check_every", [1, 3, 16])
def test_eos_stops_like_generate(ssm_cfg, check_every):
    model = tiny(ssm_cfg)
    ids, mask = left_padded([9, 6, 3])
    free = generate(model, ids, attention_mask=mask, max_new_tokens=12)[:, 9:]
    eos = sorted({int(free[0, 2]), int(free[1, 4]), int(free[2, 1])})  # every row meets one early
    want = generate(model, ids, attention_mask=mask, max_new_tokens=12, eos_token_id=eos, pad_token_id=5)
    decoder = GraphDecoder(model, check_every=check_every)
    got = decoder.generate(ids, mask, GenerationConfig(max_new_tokens=12, eos_token_id=eos, pad_token_id=5))
    assert want.shape[1] < 9 + 12, "the test needs every row to stop early"
    assert torch.equal(got, want), f"{got}\n!=\n{want}"


@LAYERS
def test_sampling_and_penalty_go_through_the_same_loop(ssm_cfg):
    model = tiny(ssm_cfg)
    ids, mask = left_padded([7, 2])
    kw = {"max_new_tokens": 8, "do_sample": True, "temperature": 1.5, "top_k": 20, "seed": 3,
          "repetition_penalty": 1.3}
    want = generate(model, ids, attention_mask=mask, **kw)
    assert torch.equal(graph_generate(model, ids, mask, GenerationConfig(**kw)), want)
    steps = list(graph_stream(model, ids, mask, GenerationConfig(**kw)))
    assert torch.equal(torch.stack(steps, 1), want[:, ids.shape[1]:])


def test_decoder_rebuilds_when_weights_change():
    model = tiny(MAMBA1)
    ids = torch.randint(0, 97, (2, 5))
    decoder = GraphDecoder(model)
    decoder.generate(ids, None, GenerationConfig(max_new_tokens=3))
    old = decoder.slots[2]
    model.double()
    out = decoder.generate(ids, None, GenerationConfig(max_new_tokens=6))
    assert decoder.slots[2] is not old and decoder.slots[2].logits.dtype == torch.float64
    assert torch.equal(out, generate(model, ids, max_new_tokens=6))


def test_models_without_a_mamba_lm_take_the_plain_loop():
    class Counter:  # the generation interface alone: next token = last token + 1
        generation_vocab_size = 10

        def prefill(self, input_ids, attention_mask=None):
            return torch.nn.functional.one_hot((input_ids[:, -1] + 1) % 10, 10).float(), None

        def step(self, tokens, cache):
            return torch.nn.functional.one_hot((tokens + 1) % 10, 10).float()

    out = graph_generate(Counter(), torch.tensor([[3]]), None, GenerationConfig(max_new_tokens=4))
    assert out.tolist() == [[3, 4, 5, 6, 7]]


@pytest.mark.parametrize("name,column", [("tiny-qmamba-128", 3), ("tiny-cobra", 0)])
def test_multimodal_prefill_and_answer_equal_the_model(name, column):
    model = mm_model(name)
    ids, pixels = vqa_prompt(model, 3, 9, column)
    decoder = GraphDecoder(model)
    with torch.inference_mode():
        logits, cache = model.prefill(ids, pixel_values=pixels)
        prefill = decoder.multimodal_prefill(ids, pixels)
        fast = prefill(ids, pixels)
    assert prefill.image_index == column and decoder.multimodal_prefill(ids, pixels) is prefill
    assert_close(fast, logits, 1e-5, "prefill logits")
    for i, (a, b) in enumerate(zip(prefill.cache.layers, cache.layers)):
        assert_close(a.ssm_state, b.ssm_state, 1e-5, f"layer {i} ssm state")
        assert_close(a.conv_state, b.conv_state, 1e-5, f"layer {i} conv state")
    want = generate(model, ids, pixel_values=pixels, max_new_tokens=6)[:, ids.shape[1]:]
    assert torch.equal(decoder.answer(ids, pixels, GenerationConfig(max_new_tokens=6)), want)
    assert torch.equal(graph_generate(model, ids, None, GenerationConfig(max_new_tokens=6), pixel_values=pixels)[
        :, ids.shape[1]:], want)


def test_multimodal_prefill_refuses_ragged_placeholders():
    model = mm_model("tiny-qmamba-128")
    ids, pixels = vqa_prompt(model, 2, 6, 2)
    ids[1, 2], ids[1, 4] = 7, IMAGE_TOKEN_ID
    with pytest.raises(InputError, match="same column"):
        GraphDecoder(model).multimodal_prefill(ids, pixels)


@LAYERS
def test_text_prefill_equals_the_model_and_takes_new_ids(ssm_cfg):
    model = tiny(ssm_cfg)
    decoder = GraphDecoder(model)
    first, second = torch.randint(1, 97, (3, 11)), torch.randint(1, 97, (3, 11))
    with torch.inference_mode():
        prefill = decoder.text_prefill(first)
        assert decoder.text_prefill(second) is prefill  # one capture per shape
        for ids in (first, second):  # the static input is overwritten on each call
            logits, cache = model.prefill(ids)
            assert_close(prefill(ids), logits, 1e-5, "prefill logits")
            for i, (a, b) in enumerate(zip(prefill.cache.layers, cache.layers)):
                assert_close(a.ssm_state, b.ssm_state, 1e-5, f"layer {i} ssm state")
                assert_close(a.conv_state, b.conv_state, 1e-5, f"layer {i} conv state")
        prefill.slot.begin(3, GenerationConfig())  # greedy decoding continues from the captured prefill's state
    assert torch.equal(decoder.greedy(prefill.slot, 3, 5), generate(model, second, max_new_tokens=5)[:, 11:])
    with pytest.raises(InputError, match="image placeholders"):
        decoder.text_prefill(torch.full((1, 4), IMAGE_TOKEN_ID))


# ---------------------------------------------------------------------------------------------------- GPU
@gpu
@pytest.mark.gpu
@LAYERS
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_graph_decode_equals_eager_decode_on_gpu(ssm_cfg, dtype):
    cfg = {**ssm_cfg, "d_state": 16, **({"headdim": 64, "chunk_size": 64} if ssm_cfg["layer"] == "Mamba2" else {})}
    model = tiny(cfg, device="cuda", dtype=dtype, d_model=256, n_layer=4)
    ids, mask = left_padded([40, 17, 3], device="cuda")
    gcfg = GenerationConfig(max_new_tokens=24)
    graphed, eager = GraphDecoder(model), GraphDecoder(model, use_graphs=False)
    assert graphed.use_graphs
    out = graphed.generate(ids, mask, gcfg)
    assert torch.equal(out, eager.generate(ids, mask, gcfg)), "graph replay != the same step run eagerly"
    with torch.inference_mode():  # the graph's logits equal the model's own decode step
        logits, cache = model.prefill(ids, attention_mask=mask)
        slot = graphed.load(logits, cache, gcfg)
        tok = logits.float().argmax(-1)
        slot.tokens[:3] = tok
        slot.step()
        want = model.step(tok, cache)
    assert_close(slot.logits[:3].float(), want.float(), 1e-5 if dtype == torch.float32 else 2e-2, "step logits")
    if dtype == torch.float32:
        assert torch.equal(out, generate(model, ids, attention_mask=mask, max_new_tokens=24))


@gpu
@pytest.mark.gpu
def test_graph_multimodal_prefill_equals_eager_on_gpu():
    model = mm_model("tiny-qmamba-128").cuda()
    ids, pixels = vqa_prompt(model, 2, 12, 4)
    ids, pixels = ids.cuda(), pixels.cuda()
    cfg = GenerationConfig(max_new_tokens=6)
    graphed, eager = GraphDecoder(model), GraphDecoder(model, use_graphs=False)
    assert torch.equal(graphed.answer(ids, pixels, cfg), eager.answer(ids, pixels, cfg))
    assert torch.equal(graphed.answer(ids, pixels, cfg), generate(model, ids, pixel_values=pixels, max_new_tokens=6)[
        :, ids.shape[1]:])


@gpu
@pytest.mark.gpu
@LAYERS
def test_graph_text_prefill_equals_eager_on_gpu(ssm_cfg):
    cfg = {**ssm_cfg, "d_state": 16, **({"headdim": 64, "chunk_size": 64} if ssm_cfg["layer"] == "Mamba2" else {})}
    model = tiny(cfg, device="cuda", d_model=256, n_layer=4)
    ids = torch.randint(1, 97, (2, 150), device="cuda")
    graphed = GraphDecoder(model)
    with torch.inference_mode():
        prefill = graphed.text_prefill(ids)
        for _ in range(2):  # replays, not only the capture, give the model's prefill
            logits, cache = model.prefill(ids)
            assert_close(prefill(ids).float(), logits.float(), 1e-5, "prefill logits")
            assert_close(prefill.cache.layers[-1].ssm_state, cache.layers[-1].ssm_state, 1e-5, "last ssm state")
            ids = torch.randint(1, 97, (2, 150), device="cuda")


def fake_cuda_capture(monkeypatch, seen: dict):
    """torch.cuda's capture calls, recorded instead of run (no GPU here)."""
    import contextlib

    from qmamba.utils import graph_capture

    cuda = graph_capture.torch.cuda

    def graph(graph, pool=None, capture_error_mode="global"):
        seen["mode"] = capture_error_mode
        return contextlib.nullcontext()

    monkeypatch.setattr(cuda, "graph", graph)
    monkeypatch.setattr(cuda, "current_stream", lambda: "the caller's stream")
    monkeypatch.setattr(cuda, "set_stream", lambda s: seen.setdefault("streams", []).append(s))
    monkeypatch.setattr(cuda, "current_device", lambda: 0)
    monkeypatch.setattr(graph_capture.torch._C, "_cuda_endAllocateToPool",
                        lambda device, pool: seen.setdefault("ended", []).append((device, pool)), raising=False)
    monkeypatch.setattr(graph_capture, "end_failed_capture", lambda: seen.setdefault("reset", 0) or None)
    return graph_capture


class _Graph:
    def pool(self):
        return (7, 1)


def test_capture_holds_the_cycle_collector_off_until_it_ends(monkeypatch):
    import gc

    graph_capture = fake_cuda_capture(monkeypatch, {})
    assert gc.isenabled()
    assert graph_capture.capture(_Graph(), gc.isenabled) is False
    assert gc.isenabled(), "the collector runs again after the capture"
    with pytest.raises(RuntimeError):
        graph_capture.capture(_Graph(), lambda: (_ for _ in ()).throw(RuntimeError("x")))
    assert gc.isenabled(), "and after a capture that failed"


def test_a_capture_lets_other_threads_use_the_gpu_and_a_failed_one_frees_its_pool(monkeypatch):
    seen: dict = {}
    graph_capture = fake_cuda_capture(monkeypatch, seen)
    assert graph_capture.capture(_Graph(), lambda: 3) == 3
    assert seen == {"mode": "thread_local"}, "a capture that succeeds needs no repair"
    with pytest.raises(RuntimeError, match="capturing"):
        graph_capture.capture(_Graph(), lambda: (_ for _ in ()).throw(RuntimeError("not permitted when capturing")))
    assert seen["ended"] == [(0, (7, 1))], "the failed capture's pool no longer records allocations"
    assert seen["streams"] == ["the caller's stream"], "the caller is back on its own stream"
    assert "reset" in seen


@gpu
@pytest.mark.gpu
def test_a_graph_captures_while_another_thread_copies_to_the_gpu():
    import threading

    from qmamba.utils.graph_capture import capture

    stop, copies = threading.Event(), []

    def copier():  # a server thread moving requests' inputs to the GPU
        while not stop.is_set():
            copies.append(torch.arange(4096).to("cuda").sum())

    thread = threading.Thread(target=copier)
    x = torch.randn(256, 256, device="cuda")
    thread.start()
    try:
        for _ in range(20):
            graph = torch.cuda.CUDAGraph()
            y = capture(graph, lambda: x @ x)
            graph.replay()
            torch.testing.assert_close(y, x @ x)
    finally:
        stop.set()
        thread.join()
    assert copies, "the other thread ran during the captures"
