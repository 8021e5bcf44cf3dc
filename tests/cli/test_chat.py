"""`qmamba chat` driven through stdin: each printed answer equals `Pipeline.chat` with the same message history;
/image puts the image in the next turn's inputs, /reset forgets the history and the image, a bad path or command
is one line of error and the conversation goes on; EOF, /exit and Ctrl-C leave with exit code 0."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image
from testing_utils import wordy_qmamba_dir

from qmamba.cli import main
from qmamba.pipeline import Pipeline

N = 5  # --max-new-tokens


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny Q-Mamba saved with its tokenizer, whose answers are words and depend on the image: weights moved
    well away from the init, the untied LM head 0 on the chat markers and past the tiny vocabulary."""
    return wordy_qmamba_dir(tmp_path_factory.mktemp("chat"))


@pytest.fixture(scope="module")
def pipe(model_dir) -> Pipeline:
    return Pipeline.from_pretrained(model_dir)


def chat(model_dir, monkeypatch, capsys, stdin: str, *options: str) -> tuple[list[str], list[str]]:
    """Run `qmamba chat` on ``stdin``; (stdout lines, stderr lines). It must leave with exit code 0."""
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    assert main(["chat", "--model", str(model_dir), "--max-new-tokens", str(N), *options]) == 0
    out, err = capsys.readouterr()
    return out.splitlines(), err.splitlines()


def user(text: str, image=None) -> dict:
    return {"role": "user", "content": text if image is None else [{"type": "image", "image": image},
                                                                   {"type": "text", "text": text}]}


def replies(pipe, turns: list[dict]) -> list[str]:
    """The answers ``Pipeline.chat`` gives to ``turns`` (user messages), each after the history before it."""
    history, answers = [], []
    for message in turns:
        history.append(message)
        answers.append(pipe.chat(history, max_new_tokens=N))
        history.append({"role": "assistant", "content": answers[-1]})
    return answers


def test_three_turns_about_an_image_match_pipeline_chat(model_dir, pipe, monkeypatch, capsys):
    red = Image.open(model_dir.parent / "red.png")
    questions = ["what is the shape ?", "how many ?", "what colour is the square ?"]
    out, err = chat(model_dir, monkeypatch, capsys, "\n".join(questions) + "\n/exit\nnot read\n",
                    "--image", str(model_dir.parent / "red.png"))
    want = replies(pipe, [user(questions[0], red), user(questions[1]), user(questions[2])])
    assert out == want
    assert want[1] != pipe.chat(questions[1], max_new_tokens=N)  # the history changes the answer
    assert want[0] != pipe.chat(questions[0], max_new_tokens=N)  # and so does the image
    assert err == [f"[{model_dir.parent / 'red.png'} goes with your next message]"]


def test_image_goes_into_the_next_turns_inputs(model_dir, pipe, monkeypatch, capsys):
    seen = []
    inputs = Pipeline.conversation_inputs
    monkeypatch.setattr(Pipeline, "conversation_inputs", lambda self, messages, image=None: seen.append(
        inputs(self, messages, image)) or seen[-1])
    white_path = model_dir.parent / "white.png"
    out, _ = chat(model_dir, monkeypatch, capsys, f"what ?\n/image '{white_path}'\ndescribe this object\n")  # quoted
    white = Image.open(white_path)
    assert out == replies(pipe, [user("what ?"), user("describe this object", white)])
    assert "pixel_values" not in seen[0]
    assert torch.equal(seen[1]["pixel_values"], pipe.processor.transform([white.convert("RGB")]))
    assert out[1] != replies(pipe, [user("what ?"), user("describe this object")])[1]


def test_reset_forgets_the_history_and_the_image(model_dir, pipe, monkeypatch, capsys):
    red = model_dir.parent / "red.png"
    out, err = chat(model_dir, monkeypatch, capsys, "what ?\n/reset\nhow many ?\n/image " + str(red) +
                    "\nwhat ?\n/reset\nwhat ?\n", "--image", str(red))
    fresh = pipe.chat("what ?", max_new_tokens=N)
    assert out == [pipe.chat("what ?", image=red, max_new_tokens=N),
                   *replies(pipe, [user("how many ?"), user("what ?", Image.open(red))]), fresh]
    assert replies(pipe, [user("what ?", Image.open(red)), user("what ?")])[1] != fresh
    assert err.count("[the conversation is reset]") == 2


@pytest.mark.parametrize("line,match", [
    ("/image {dir}/missing.png", "missing.png: the file does not exist"),
    ("/image {dir}/model/config.json", "config.json: not an image file"),
    ("/image {dir}", "is a directory"),
    ("/image", "/image needs a file"),
    ("/imag x.png", "unknown command '/imag'"),
])
def test_a_bad_command_is_one_line_and_the_chat_goes_on(model_dir, pipe, monkeypatch, capsys, line, match):
    out, err = chat(model_dir, monkeypatch, capsys, line.format(dir=model_dir.parent) + "\nhow many ?\n")
    assert len(err) == 1 and err[0].startswith("qmamba chat: error: ") and match in err[0]
    assert out == [pipe.chat("how many ?", max_new_tokens=N)]


def test_a_second_image_in_one_conversation_is_refused(model_dir, pipe, monkeypatch, capsys):
    red = model_dir.parent / "red.png"
    out, err = chat(model_dir, monkeypatch, capsys, f"what ?\n/image {red}\nhow many ?\n", "--image", str(red))
    assert "already has an image" in err[-1] and len(err) == 2
    assert out == replies(pipe, [user("what ?", Image.open(red)), user("how many ?")])


class Interrupting(io.StringIO):
    """A stdin whose second line is Ctrl-C."""

    def readline(self, *args):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == 2:
            raise KeyboardInterrupt
        return super().readline(*args)


def test_ctrl_c_at_the_prompt_leaves_with_0(model_dir, pipe, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", Interrupting("how many ?\nwhat ?\n"))
    assert main(["chat", "--model", str(model_dir), "--max-new-tokens", str(N)]) == 0
    assert capsys.readouterr().out.splitlines() == [pipe.chat("how many ?", max_new_tokens=N)]


def test_ctrl_c_during_an_answer_stops_it_where_it_stands(model_dir, pipe, monkeypatch, capsys):
    stream = Pipeline.stream

    def interrupted(self, messages, **gen):
        if messages[-1]["content"] in ("stop", "stop early"):
            yield from [" one"] if messages[-1]["content"] == "stop" else []
            raise KeyboardInterrupt
        yield from stream(self, messages, **gen)

    monkeypatch.setattr(Pipeline, "stream", interrupted)
    out, err = chat(model_dir, monkeypatch, capsys, "what ?\nstop\nhow many ?\nstop early\nwhat ?\n")
    turns = [user("what ?"), user("stop"), user("how many ?")]
    history, answers = [], []
    for message in turns:  # the stopped answer is kept as it stands: "one"
        answers.append("one" if message["content"] == "stop" else pipe.chat([*history, message], max_new_tokens=N))
        history += [message, {"role": "assistant", "content": answers[-1]}]
    last = pipe.chat([*history, user("what ?")], max_new_tokens=N)  # the turn stopped before any text: dropped
    assert out == [*answers, "", last]
    assert err == ["[answer stopped; the part shown stays in the conversation]", "[answer stopped; nothing is kept]"]


def test_bad_options_fail_before_the_chat(model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("what ?\n"))
    assert main(["chat", "--model", str(model_dir), "--image", str(tmp_path / "no.png")]) == 2
    assert main(["chat", "--model", str(model_dir), "--max-new-tokens", "0"]) == 2
    from qmamba import MambaLM
    from qmamba.models.presets import LLM_PRESETS

    MambaLM(LLM_PRESETS["tiny-mamba"]()).save_pretrained(tmp_path / "lm")
    assert main(["chat", "--model", str(tmp_path / "lm")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 3
    assert "no.png: the file does not exist" in err and "--max-new-tokens is 0" in err and "language model" in err
