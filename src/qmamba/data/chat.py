"""Chat prompts of Mamba chat models, and prompt encoding with an image placeholder.

The templates themselves (``zephyr``, ``plain``) and their Jinja form live in ``qmamba.chat_templates``,
which the model directory writer shares; they are importable from here as before.

The image placeholder ``<image>`` in a user message becomes the id ``IMAGE_TOKEN_ID`` (``qmamba.constants``,
-200 as in LLaVA) in the token sequence; the model replaces it with the connector's visual tokens.
"""

from __future__ import annotations

from qmamba.chat_templates import (  # noqa: F401  (re-exported: the template table's home before)
    IMAGE_PLACEHOLDER,
    TEMPLATES,
    ChatTemplate,
    get_template,
    jinja_template,
)
from qmamba.constants import IMAGE_TOKEN_ID
from qmamba.errors import InputError


def render_turns(template: ChatTemplate, turns: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(role, text) turns -> (role, formatted text) pieces; roles are 'user' and 'assistant'."""
    pieces, n_user = [], 0
    for role, msg in turns:
        if role == "user":
            prefix = template.later_user_prefix if n_user else ""
            pieces.append((role, prefix + template.user.format(msg=msg)))
            n_user += 1
        elif role == "assistant":
            pieces.append((role, template.assistant.format(msg=msg if msg != "" else " ")))
        else:
            raise InputError(f"chat turn role {role!r}; expected 'user' or 'assistant'")
    return pieces


def render_prompt(template: ChatTemplate, message: str, history: list[tuple[str, str]] | None = None) -> str:
    """The text to feed for a new user ``message`` (after ``history``), ending where the reply starts."""
    return "".join(text for _, text in render_turns(template, [*(history or []), ("user", message)]))


def encode_with_image(tokenizer, text: str, image_first: bool = False) -> list[int]:
    """Token ids of ``text`` with each ``<image>`` replaced by ``IMAGE_TOKEN_ID``.

    ``image_first`` (Cobra's layout): the placeholder is removed from the text and one
    ``IMAGE_TOKEN_ID`` is put before all tokens.
    """
    if image_first:
        n = text.count(IMAGE_PLACEHOLDER)
        if n > 1:
            raise InputError(f"the prompt has {n} {IMAGE_PLACEHOLDER} placeholders; this layout takes one image")
        stripped = text.replace(IMAGE_PLACEHOLDER + "\n", "").replace(IMAGE_PLACEHOLDER, "")
        return ([IMAGE_TOKEN_ID] if n else []) + tokenizer.encode(stripped, add_special_tokens=False)
    ids: list[int] = []
    for i, chunk in enumerate(text.split(IMAGE_PLACEHOLDER)):
        if i:
            ids.append(IMAGE_TOKEN_ID)
        if chunk:
            ids.extend(tokenizer.encode(chunk, add_special_tokens=False))
    return ids
