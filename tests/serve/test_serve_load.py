"""benchmarks/serve_load.py on the tiny served model, on CPU: every request of two low rates is answered, the
reported counts equal what the client received and what the server counted, and each streamed answer equals
``Pipeline.chat``'s greedy answer for its own image."""

from __future__ import annotations

import io
import sys

import pytest
from PIL import Image
from serve_utils import PROMPT
from testing_utils import benchmark_script


@pytest.fixture(scope="module")
def load():
    yield benchmark_script("serve_load")
    sys.modules.pop("serve_load_client", None)


def test_two_rates_answer_every_request_with_its_greedy_answer(load, model_dir, pipe, tmp_path, capsys):
    new, size = 6, 40
    results = load.main(["--model", str(model_dir), "--device", "cpu", "--rates", "4,8", "--requests", "4", "--all-rates",
                         "--slots", "4", "--offline-batch", "2", "--max-tokens", str(new), "--prompt", PROMPT,
                         "--image-size", str(size), "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert printed.count("| 4 |") + printed.count("| 8 |") >= 2 and "saturated:" in printed
    assert "at 4/s offered, the engine was admitting" in printed
    assert (tmp_path / f"serve_load_{model_dir.name}.json").is_file()
    answers = {}
    for rate in results["rates"]:
        reqs = rate["requests"]
        assert rate["sent"] == len(reqs) == 4 and rate["failed"] == 0 and not rate["failures"]
        assert rate["answered"] == sum(r["error"] is None for r in reqs) == rate["server_answered"] == 4
        assert rate["ttft_p50_s"] <= rate["latency_p50_s"] and rate["achieved_per_s"] > 0
        engine = rate["engine"]  # each request: admitted once (its first token), then one row per decode step
        assert engine["admitted"] == 4 and engine["decoded_rows"] == sum(r["tokens"] - 1 for r in reqs)
        assert 0 < engine["admit_frac"] + engine["decode_frac"] <= 1
        answers.update({r["index"]: r["text"] for r in reqs})
    assert sorted(answers) == list(range(8))  # different images across rates
    images = {i: Image.open(io.BytesIO(load.client.png_bytes(0, i, size))).convert("RGB") for i in answers}
    want = {i: pipe.chat(PROMPT, image=im, max_new_tokens=new) for i, im in images.items()}
    assert len(set(want.values())) >= 3, "the images hardly change the answers: a mix-up would not show"
    assert answers == want
    offline = results["offline"]["engine"]
    assert offline["answers_per_s"] > 0 and "error" not in results["offline"]["generate"]
    assert offline["engine"]["admitted"] == 2, "the timed round's stats alone (2 requests), not all three rounds'"
    assert offline["engine"]["decoded_rows"] == round(offline["tokens_per_answer"] * 2) - 2
    assert "offline, the engine was admitting" in printed


@pytest.mark.parametrize("argv, message", [
    (["--rates", "0,1"], "positive rate"),
    (["--rates", "fast"], "not a number"),
    (["--slots", "0"], "--slots must be >= 1"),
    (["--slots", "many"], "invalid int value"),
])
def test_bad_arguments_are_one_line_errors(load, model_dir, argv, message):
    with pytest.raises(SystemExit) as e:
        load.parse_args(["--model", str(model_dir), *argv])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_preset_and_model_are_exclusive(load, model_dir):
    with pytest.raises(SystemExit, match="exactly one of"):
        load.parse_args(["--model", str(model_dir), "--preset", "cobra"])


def test_check_mode_compares_decoders_and_stops(load, model_dir, capsys):
    results = load.main(["--model", str(model_dir), "--device", "cpu", "--check", "--max-tokens", "5"])
    assert results["check"]["equal"] == results["check"]["requests"] == 12
    assert "offline" not in results and "check: eager" in capsys.readouterr().out
