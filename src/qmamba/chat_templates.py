"""Chat templates that the prompt builder (``qmamba.data.chat``) and the model directory writer agree on; both
import them from here.

``zephyr`` is the template of mamba-2.8b-zephyr as Cobra uses it:
    user turn:       "<|user|>\\n{msg}<|endoftext|>\\n<|assistant|>\\n"   (later user turns start with "\\n")
    assistant turn:  "{msg}<|endoftext|>"
``plain`` is Cobra's template for base Mamba LMs: "In: {msg}\\nOut: " then "{msg}<|endoftext|>".

A saved model directory carries its template as Jinja in tokenizer_config.json (``write_chat_template``), so
transformers' ``apply_chat_template`` and the tools built on it render the prompts qmamba renders.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from qmamba.errors import ConfigError

IMAGE_PLACEHOLDER = "<image>"


@dataclass(frozen=True)
class ChatTemplate:
    name: str
    user: str  # with {msg}; ends where the assistant's reply starts
    assistant: str  # with {msg}; includes the end-of-turn marker
    later_user_prefix: str  # put before every user turn but the first
    stop: str  # the end-of-turn marker generation stops at


TEMPLATES = {
    "zephyr": ChatTemplate("zephyr", "<|user|>\n{msg}<|endoftext|>\n<|assistant|>\n", "{msg}<|endoftext|>",
                           "\n", "<|endoftext|>"),
    "plain": ChatTemplate("plain", "In: {msg}\nOut: ", "{msg}<|endoftext|>", "\n", "<|endoftext|>"),
}


def get_template(name: str) -> ChatTemplate:
    if name not in TEMPLATES:
        raise ConfigError(f"chat_template={name!r}; expected one of {sorted(TEMPLATES)}")
    return TEMPLATES[name]


def jinja_template(template: ChatTemplate) -> str:
    """``template`` as a Jinja chat template (the ``chat_template`` of transformers' tokenizer_config.json):
    ``tokenizer.apply_chat_template(messages)`` renders the text ``qmamba.data.chat.render_turns`` does, so the
    same prompt for history + a new user message (the user turn already ends where the reply starts, so
    ``add_generation_prompt`` adds nothing). A message's content is a string, or a list of parts where
    ``{"type": "image"}`` becomes ``<image>\\n`` and ``{"type": "text", "text": ...}`` its text.
    Literals are JSON-quoted and every tag trims whitespace, so the rendering does not depend on the
    environment's trim_blocks / lstrip_blocks."""
    user_before, user_after = _split_msg(template.user)
    reply_before, reply_after = _split_msg(template.assistant)
    q = json.dumps
    parts = [
        "{%- set ns = namespace(users=0, text='') -%}",
        "{%- for message in messages -%}",
        "{%- if message['content'] is string -%}{%- set ns.text = message['content'] -%}",
        "{%- else -%}{%- set ns.text = '' -%}{%- for part in message['content'] -%}",
        "{%- if part['type'] == 'image' -%}{%- set ns.text = ns.text + " + q(IMAGE_PLACEHOLDER + "\n") + " -%}",
        "{%- elif part['type'] == 'text' -%}{%- set ns.text = ns.text + part['text'] -%}{%- endif -%}",
        "{%- endfor -%}{%- endif -%}",
        "{%- if message['role'] == 'user' -%}",
        "{%- if ns.users > 0 -%}{{ " + q(template.later_user_prefix) + " }}{%- endif -%}",
        "{{ " + q(user_before) + " }}{{ ns.text }}{{ " + q(user_after) + " }}",
        "{%- set ns.users = ns.users + 1 -%}",
        "{%- elif message['role'] == 'assistant' -%}",
        "{{ " + q(reply_before) + " }}{{ ns.text if ns.text != '' else ' ' }}{{ " + q(reply_after) + " }}",
        "{%- else -%}{{ raise_exception(\"chat turn role '\" + message['role'] + \"'; expected 'user' or "
        "'assistant'\") }}",
        "{%- endif -%}{%- endfor -%}",
    ]
    return "".join(parts)


def _split_msg(pattern: str) -> tuple[str, str]:
    """The literal text before and after ``{msg}`` in a ``str.format`` pattern."""
    before, _, after = pattern.partition("{msg}")
    return before.format(), after.format()


def write_chat_template(path: str | Path, name: str) -> None:
    """Put template ``name`` as the Jinja ``chat_template`` into the tokenizer_config.json in directory ``path``
    (created if absent), and into chat_template.jinja where one is there (newer transformers read it first)."""
    path = Path(path)
    jinja = jinja_template(get_template(name))
    config_file = path / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    config["chat_template"] = jinja
    config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if (path / "chat_template.jinja").is_file():
        (path / "chat_template.jinja").write_text(jinja, encoding="utf-8")


def read_chat_template(path: str | Path) -> str | None:
    """The Jinja ``chat_template`` of the tokenizer_config.json in directory ``path``, if it holds one."""
    config_file = Path(path) / "tokenizer_config.json"
    if not config_file.is_file():
        return None
    template = json.loads(config_file.read_text(encoding="utf-8")).get("chat_template")
    return template if isinstance(template, str) else None
