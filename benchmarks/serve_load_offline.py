"""The offline side of ``serve_load.py``: the served model's engine (and batched ``generate``) given the same
requests without HTTP, and the check that graphed decoding answers as ``model.step`` does.

    body_of(index) -> the chat-completion body of request ``index`` (``serve_load_client.body``)
    figures(service, body_of, n, max_tokens)   {"engine": {"answers_per_s", ...}, "generate": {...}}
    check_graphs(service, body_of, slots, max_tokens)   {"decoder", "requests", "equal"}

Requests are built from their JSON bodies as the server builds them (``ChatService.prepare`` / ``settings``), so
the offline engine answers exactly what the server would.
"""

from __future__ import annotations

import time
from collections.abc import Callable

BodyFn = Callable[[int], dict]


def engine_request(service, body: dict):
    """The engine's request for a chat-completion ``body``, built as the server builds it (the same image
    preprocessing, prompt and settings)."""
    from qmamba.infer import Request
    from qmamba.serve.schema import parse_chat_request

    chat = parse_chat_request(body, service.config.max_tokens_limit)
    prepared = service.prepare(chat)
    return Request(prepared.input_ids, prepared.pixel_values, service.settings(chat)), prepared


def graphed(service):
    """A decoder like the server's (CUDA graphs per bucket unless it runs eagerly), for another engine."""
    from qmamba.infer.bucket_graphs import BucketGraphs

    return BucketGraphs(service.pipe.model, use_graphs=service.decoder.use_graphs)


def engine_like(service, num_slots: int, decode):
    """An engine over the served model with ``num_slots`` slots and ``decode`` (its buckets captured now)."""
    from qmamba.infer import Engine
    from qmamba.infer.image_graphs import BucketEncoder
    from qmamba.infer.prefill_graphs import BucketPrefill

    model = service.pipe.model
    encode = (BucketEncoder(model, use_graphs=service.encoder.use_graphs)
              if decode is not None and service.encoder is not None else None)  # as the server encodes
    prefill = BucketPrefill(model) if decode is not None and service.prefiller is not None else None  # and prefills
    engine = Engine(model, num_slots=num_slots, max_queue=1 << 30,
                    tokenizer=service.pipe.processor.tokenizer, decode=decode, encode=encode, prefill=prefill)
    if decode is not None:
        decode.prepare(engine.cache, num_slots, engine.buckets)
    return engine


def check_graphs(service, body_of: BodyFn, slots: int, max_tokens: int, requests: int = 12) -> dict:
    """Greedy answers of ``requests`` requests joining a running batch at different steps, with different lengths,
    on an engine decoding from the server's kind of decoder and on one calling ``model.step``: equal token for
    token when graphs replay exactly the eager step."""
    answers = []
    for decode in (graphed(service), None):
        engine, handles = engine_like(service, slots, decode), []
        for i in range(requests):
            request, _ = engine_request(service, body_of(-10_000 - i))
            request.config.max_new_tokens = 2 + 5 * i % max_tokens
            handles.append(engine.submit(request))
            if i % 3 == 2:
                for _ in range(i // 3 + 1):  # later requests join a batch that has run a while
                    engine.step()
        engine.run_until_idle()
        answers.append([h.tokens for h in handles])
    same = sum(a == b for a, b in zip(*answers))
    kind = "graphed" if service.decoder.use_graphs else "eager (no CUDA graphs)"
    print(f"check: {kind} answers == model.step answers on {same} of {requests} requests "
          f"({'ok' if same == requests else 'MISMATCH'})", flush=True)
    return {"decoder": kind, "requests": requests, "equal": same}


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def offline_engine(service, body_of: BodyFn, n: int, first: int) -> dict:
    """Answers/s of an engine of ``n`` slots given ``n`` requests at once: the faster of two rounds after one
    untimed round."""
    engine = engine_like(service, n, decode=graphed(service))
    rounds = []  # (seconds, tokens, the engine's stats of the round)
    for r in range(3):
        handles = [engine.submit(engine_request(service, body_of(first + r * n + i))[0]) for i in range(n)]
        sync(engine.device)
        before, start = engine.stats, time.perf_counter()
        engine.run_until_idle()
        sync(engine.device)
        rounds.append((time.perf_counter() - start, sum(len(h.tokens) for h in handles), engine.stats.since(before)))
    seconds, tokens, stats = min(rounds[1:], key=lambda r: r[0])  # the first round compiles, autotunes, captures
    return {"answers_per_s": n / seconds, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "tokens_per_answer": tokens / n, "stats": stats}


def offline_generate(service, body_of: BodyFn, n: int, max_tokens: int, first: int) -> dict:
    """Answers/s of batched ``generate`` (one prefill of the batch, then decoding) on ``n`` requests of one
    shape (after one untimed call)."""
    import torch

    from qmamba.infer import generate

    prepared = [engine_request(service, body_of(first + i))[1] for i in range(n)]
    model, device = service.pipe.model, service.pipe.device
    ids = torch.stack([p.input_ids for p in prepared]).to(device)  # (n, l): one length, one image each
    pixels = torch.cat([p.pixel_values for p in prepared]).to(device)  # (n, 3k, S, S)
    tok = service.pipe.processor.tokenizer
    settings = {"max_new_tokens": max_tokens, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    for _ in range(2):
        sync(device)
        start = time.perf_counter()
        generate(model, ids, pixel_values=pixels, **settings)
        sync(device)
        seconds = time.perf_counter() - start
    return {"answers_per_s": n / seconds, "seconds": seconds}


def figures(service, body_of: BodyFn, n: int, max_tokens: int) -> dict:
    """The engine's offline answers/s and batched generate's (requests -3n.. and -4n..: not the load's)."""
    out = {"engine": offline_engine(service, body_of, n, first=-3 * n)}
    try:
        out["generate"] = offline_generate(service, body_of, n, max_tokens, first=-4 * n)
    except Exception as e:  # a figure for reference only: its failure (e.g. memory) does not stop the run
        out["generate"] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
    return out
