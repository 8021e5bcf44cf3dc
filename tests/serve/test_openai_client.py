"""The official ``openai`` client against a running ``qmamba serve``: greedy answers equal ``qmamba generate`` and
``Pipeline.chat`` for the same image and prompt, streamed and not; a three-turn conversation equals
``Pipeline.chat`` with the same history; 32 concurrent clients with different images each get their answer alone;
seeded sampling, stop strings, usage and the other routes."""

from __future__ import annotations

import threading

from serve_utils import PROMPT, image, user

from qmamba.cli import main


def _streamed(client, **kwargs) -> tuple[str, list]:
    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks


def test_greedy_answer_equals_qmamba_generate_streamed_and_not(client, pipe, model_dir, tmp_path, capsys):
    path = tmp_path / "scene.png"
    image(1).save(path)
    assert main(["generate", "--model", str(model_dir), "--image", str(path), "--prompt", PROMPT,
                 "--max-new-tokens", "12"]) == 0
    want = capsys.readouterr().out.strip()
    assert want, "the reference answer is empty: the comparison would prove little"
    messages = [user(PROMPT, image(1))]
    got = client.chat.completions.create(model="tiny-qmamba", messages=messages, max_tokens=12, temperature=0)
    streamed, chunks = _streamed(client, model="tiny-qmamba", messages=messages, max_tokens=12,
                                 stream_options={"include_usage": True})
    assert got.choices[0].message.content == streamed == want
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices == []
    assert chunks[-1].usage == got.usage and chunks[-2].choices[0].finish_reason == got.choices[0].finish_reason
    ids = pipe.conversation_inputs([{"role": "user", "content": PROMPT}], image(1))["input_ids"]
    assert got.usage.prompt_tokens == ids.shape[1] - 1 + pipe.model.num_visual_tokens
    assert got.choices[0].finish_reason == ("length" if got.usage.completion_tokens == 12 else "stop")


def test_answers_equal_pipeline_chat_including_the_end_of_text(client, pipe):
    for seed, new in ((6, 64), (3, 5)):  # image 6 ends on the end-of-text token within 64 tokens
        want = pipe.chat(PROMPT, image=image(seed), max_new_tokens=new)
        got = client.chat.completions.create(model="tiny-qmamba", messages=[user(PROMPT, image(seed))],
                                             max_completion_tokens=new)
        assert got.choices[0].message.content == want
        assert got.choices[0].finish_reason == ("stop" if seed == 6 else "length"), got.usage
        assert (got.usage.completion_tokens < new) == (seed == 6)


def test_three_turn_conversation_equals_pipeline_chat(client, pipe):
    history = [("what is the shape ?", "a red circle"), ("how many ?", "one"), ("what colour is the square ?", None)]
    reference, messages = [], []
    for i, (question, reply) in enumerate(history):
        im = image(7) if i == 0 else None
        parts = [{"type": "image", "image": im}] if im is not None else []
        reference.append({"role": "user", "content": [*parts, {"type": "text", "text": question}]})
        messages.append(user(question, im))
        if reply is not None:
            reference.append({"role": "assistant", "content": reply})
            messages.append({"role": "assistant", "content": reply})
    want = pipe.chat(reference, max_new_tokens=10)
    assert want != pipe.chat(reference[-1:], image=image(7), max_new_tokens=10)  # the history matters
    got = client.chat.completions.create(model="tiny-qmamba", messages=messages, max_tokens=10)
    assert got.choices[0].message.content == want
    assert _streamed(client, model="tiny-qmamba", messages=messages, max_tokens=10)[0] == want


def test_32_concurrent_clients_get_their_answers_alone(client, pipe):
    n, new = 32, 8
    want = [pipe.chat(PROMPT, image=image(100 + i), max_new_tokens=new) for i in range(n)]
    assert len(set(want)) >= 4, "the images hardly change the answers: a mix-up would not show"
    got: dict[int, str] = {}

    def ask(i: int) -> None:
        kwargs = {"model": "tiny-qmamba", "messages": [user(PROMPT, image(100 + i))], "max_tokens": new}
        if i % 2:
            got[i] = _streamed(client, **kwargs)[0]
        else:
            got[i] = client.chat.completions.create(**kwargs).choices[0].message.content

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert got == dict(enumerate(want))


def test_seeded_sampling_equals_pipeline_chat_with_the_same_settings(client, pipe):
    settings = {"temperature": 1.3, "top_p": 0.9, "top_k": 20, "seed": 11}
    want = pipe.chat(PROMPT, image=image(2), max_new_tokens=10, do_sample=True, **settings)
    assert want != pipe.chat(PROMPT, image=image(2), max_new_tokens=10)  # sampling changed the answer
    top_k = settings.pop("top_k")
    for stream in (False, True):
        kwargs = {"model": "tiny-qmamba", "messages": [user(PROMPT, image(2))], "max_tokens": 10,
                  "extra_body": {"top_k": top_k}, **settings}
        got = (_streamed(client, **kwargs)[0] if stream
               else client.chat.completions.create(**kwargs).choices[0].message.content)
        assert got == want


def test_a_stop_string_ends_the_answer_before_it(client, pipe):
    full = pipe.chat(PROMPT, image=image(4), max_new_tokens=16)
    words = full.split()
    stop = " ".join(words[3:5])  # two words in the middle, space included: held back until known
    want = full[:full.index(stop)].rstrip()
    kwargs = {"model": "tiny-qmamba", "messages": [user(PROMPT, image(4))], "max_tokens": 16, "stop": [stop]}
    got = client.chat.completions.create(**kwargs)
    assert got.choices[0].message.content == want and got.choices[0].finish_reason == "stop"
    streamed, chunks = _streamed(client, **kwargs)
    assert streamed == want and all(stop not in (c.choices[0].delta.content or "") for c in chunks if c.choices)


def test_models_health_and_the_page(client, http):
    assert [m.id for m in client.models.list().data] == ["tiny-qmamba"]
    health = http.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    page = http.get("/")
    assert page.status_code in (200, 404)
    if page.status_code == 200:
        assert page.headers["content-type"].startswith("text/html")
    else:
        assert page.json()["error"]["code"] == "not_found"
