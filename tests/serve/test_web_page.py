"""The chat page at / in headless Chromium, against the `qmamba serve` app on a free loopback port: an uploaded image and
a question give the streamed answer `Pipeline.chat` gives (greedy), a follow-up is answered with the history (and
without it after New chat), a
request the server refuses shows the server's message, Stop ends an answer and frees its slot; the page fetches
nothing from elsewhere. Screenshots are kept under pytest's tmp dir and, if QMAMBA_ARTIFACTS is set, there.

Needs Debian's chromium (or QMAMBA_CHROMIUM naming a Chromium binary) and the playwright package; playwright's
own browser downloads are not used. Skipped, with the reason, when either is missing."""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from testing_utils import wordy_qmamba_dir

from qmamba.pipeline import Pipeline

N = 6  # the page's max tokens
QUESTION, FOLLOW_UP = "what is the shape ?", "how many ?"


def chromium() -> str | None:
    for name in (os.environ.get("QMAMBA_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed "
                                                             "(pip install playwright; no browser download needed)")
pytest.importorskip("uvicorn", reason="the serve extra is not installed (pip install -e '.[serve]')")
pytestmark = pytest.mark.skipif(chromium() is None, reason="no Chromium binary (apt-get install chromium, or set "
                                                           "QMAMBA_CHROMIUM to one)")


@pytest.fixture(scope="module")
def web_model(tmp_path_factory) -> Path:
    """A tiny Q-Mamba saved with its tokenizer, and two images. Its answers are words, depend on the image and
    never end before max_tokens (the LM head is 0 on every special token, end-of-text included), so an answer
    asked for 4000 tokens is still running when Stop is pressed."""
    return wordy_qmamba_dir(tmp_path_factory.mktemp("web"))


@pytest.fixture(scope="module")
def web_pipe(web_model) -> Pipeline:
    return Pipeline.from_pretrained(web_model)


@pytest.fixture(scope="module")
def server(web_model):
    """``qmamba serve``'s app over ``web_model`` on a free loopback port (max_tokens up to 4096, for Stop)."""
    from qmamba.serve import ServeConfig
    from qmamba.serve.server import BackgroundServer, load_service

    with BackgroundServer(load_service(ServeConfig(model=str(web_model), max_tokens_limit=4096))) as running:
        yield running.url


def get(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.load(resp)
    except (OSError, ValueError):
        return None


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        args = ["--disable-dev-shm-usage", "--disable-gpu"] + (["--no-sandbox"] if os.geteuid() == 0 else [])
        b = p.chromium.launch(executable_path=chromium(), headless=True, args=args)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    """A fresh page at /, its model name shown; fails the test on a script error or a request to elsewhere."""
    context = browser.new_context(viewport={"width": 1000, "height": 760})
    page = context.new_page()
    page.set_default_timeout(60_000)
    problems = []
    page.on("pageerror", lambda e: problems.append(f"script error: {e}"))
    page.on("request", lambda r: r.url.startswith(server + "/") or r.url.startswith("data:")
            or problems.append(f"fetched from elsewhere: {r.url}"))
    page.goto(server + "/")
    page.wait_for_function("document.getElementById('model-name').textContent !== 'connecting…'")
    page.click("summary")  # the settings
    page.fill("#max-tokens", str(N))
    yield page
    context.close()
    assert not problems, problems


def screenshot(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / name))
    if os.environ.get("QMAMBA_ARTIFACTS"):
        target = Path(os.environ["QMAMBA_ARTIFACTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / name, target / name)


def ask(page, text: str, image: Path | None = None, state: str = "done") -> str:
    """Attach ``image``, send ``text`` and wait for the new answer to reach ``state``; its text."""
    n = page.locator(".msg.assistant").count()
    if image is not None:
        page.set_input_files("#file", str(image))
        page.wait_for_selector("#pending:not([hidden])")
    page.fill("#input", text)
    page.press("#input", "Enter")
    page.wait_for_function("([n, state]) => document.querySelectorAll('.msg.assistant')[n]?.dataset.state === state",
                           arg=[n, state])
    return page.locator(".msg.assistant .text").nth(n).text_content()


def paste(page, image: Path) -> None:
    """Paste ``image`` into the message box, as Ctrl-V with an image on the clipboard does."""
    page.evaluate("""(b64) => {
        const data = new DataTransfer();
        data.items.add(new File([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], 'pasted.png', {type: 'image/png'}));
        document.getElementById('input').dispatchEvent(new ClipboardEvent('paste', {clipboardData: data, bubbles: true}));
    }""", base64.b64encode(image.read_bytes()).decode())


def test_an_image_question_and_a_follow_up_get_pipeline_chats_answers(page, web_model, web_pipe, tmp_path):
    pipe, red = web_pipe, web_model.parent / "red.png"
    first = pipe.chat(QUESTION, image=red, max_new_tokens=N)
    history = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": first},
               {"role": "user", "content": FOLLOW_UP}]
    assert page.text_content("#model-name") == web_model.name
    assert ask(page, QUESTION, red) == first
    assert ask(page, FOLLOW_UP) == pipe.chat(history, image=red, max_new_tokens=N)
    assert first != pipe.chat(QUESTION, max_new_tokens=N)  # the image reached the model
    stats = page.locator(".msg.assistant .stats").all_text_contents()
    assert all(s.startswith(f"{N} tokens · ") and " tokens/s · first token " in s for s in stats), stats
    assert page.locator(".msg.user img").get_attribute("src").startswith("data:image/png;base64,")
    screenshot(page, tmp_path, "web-chat.png")
    page.click("#reset")  # New chat: no history, no image
    assert page.locator(".msg").count() == 0
    assert ask(page, FOLLOW_UP) == pipe.chat(FOLLOW_UP, max_new_tokens=N) != pipe.chat(history, image=red,
                                                                                      max_new_tokens=N)


def test_a_refused_request_shows_the_servers_message(page, server, web_model, tmp_path):
    first = ask(page, QUESTION, web_model.parent / "red.png")
    paste(page, web_model.parent / "white.png")  # a second image: this model takes one per conversation
    page.wait_for_selector("#pending:not([hidden])")
    assert page.text_content("#pending-name") == "pasted.png"
    page.fill("#input", FOLLOW_UP)
    page.press("#input", "Enter")
    page.wait_for_selector("#error:not([hidden])")
    image = {"type": "image_url", "image_url": {"url": page.locator(".msg.user img").first.get_attribute("src")}}
    body = {"messages": [{"role": "user", "content": [image, {"type": "text", "text": QUESTION}]},
                         {"role": "assistant", "content": first},
                         {"role": "user", "content": [image, {"type": "text", "text": FOLLOW_UP}]}]}
    request = urllib.request.Request(server + "/v1/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert 400 <= refused.value.code < 500
    message = json.load(refused.value)["error"]["message"]
    assert page.text_content("#error") == f"{refused.value.code}: {message}"
    assert page.input_value("#input") == FOLLOW_UP and page.is_visible("#pending")  # given back to edit
    screenshot(page, tmp_path, "web-chat-error.png")


def test_stop_ends_the_answer_and_frees_its_slot(page, server, web_pipe):
    page.fill("#max-tokens", "4000")
    page.evaluate("""() => new MutationObserver((_, observer) => {  // Stop as soon as the first piece shows
        const text = document.querySelector('.msg.assistant[data-state=streaming] .text');
        if (text && text.textContent) { observer.disconnect(); document.getElementById('stop').click(); }
    }).observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true})""")
    partial = ask(page, QUESTION, state="stopped")
    k = len(web_pipe.processor.tokenizer.encode(partial, add_special_tokens=False))
    assert 0 < k < 4000 and partial.strip() == web_pipe.chat(QUESTION, max_new_tokens=k)  # a greedy answer's start
    deadline = time.monotonic() + 20
    while get(server + "/health")["running"] != 0:
        assert time.monotonic() < deadline, "the stopped answer still holds its slot"
        time.sleep(0.1)
    assert ask(page, FOLLOW_UP) != ""  # the conversation goes on
