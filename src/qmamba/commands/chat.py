"""Talk with a multimodal model in the terminal: a multi-turn conversation, answers printed as they are generated.

    qmamba chat --model runs/micro/model --image scene.png

Type a message and press Enter; the model answers with the whole conversation so far in view. Commands:
  /image PATH   attach an image to your next message (the model takes one image per conversation)
  /reset        forget the conversation and its image, and start a new one
  /exit         leave (so do Ctrl-D and, at the prompt, Ctrl-C; Ctrl-C during an answer stops it there)
Answers go to stdout, one line each; notes and errors go to stderr, so `qmamba chat ... < questions.txt`
prints the answers alone. A bad command or image is one line of error, and the conversation goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path

log = logging.getLogger("qmamba")

COMMAND_HELP = "/image PATH attaches an image to your next message, /reset starts over, /exit leaves"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a multimodal model directory")
    p.add_argument("--image", help="an image file for the first message (as /image PATH)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="the longest answer, in tokens")
    p.add_argument("--temperature", type=float, default=1.0, help="> 0; used with --sample")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None, help="the sampling seed of every answer")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: the GPU if there is one)")
    p.add_argument("--dtype", default=None, help="fp32, bf16, fp16 (default: bf16 on GPU, fp32 on CPU)")


def gen_kwargs(args: argparse.Namespace) -> dict:
    """The generation settings of every answer (``Pipeline.stream``'s keyword arguments)."""
    from qmamba.errors import InputError

    if args.max_new_tokens < 1:
        raise InputError(f"--max-new-tokens is {args.max_new_tokens}; give 1 or more")
    return {"max_new_tokens": args.max_new_tokens, "do_sample": args.sample, "temperature": args.temperature,
            "top_k": args.top_k, "top_p": args.top_p, "repetition_penalty": args.repetition_penalty,
            "seed": args.seed}


class ChatSession:
    """One terminal conversation with a ``Pipeline``: the message history (what ``Pipeline.chat`` takes), the
    image waiting for the next user message, and the commands that change them.

    Invariant: ``messages`` alternates user and assistant turns and ends with an assistant turn (or is empty);
    a turn that fails or is stopped leaves it as it was. At most one image is in ``messages`` and ``pending``
    together, as the model takes one image per conversation."""

    def __init__(self, pipe, gen: dict, model_dir: Path | None = None, out=None, err=None):
        self.pipe, self.gen, self.model_dir = pipe, gen, model_dir
        self.out, self.err = out or sys.stdout, err or sys.stderr
        self.messages: list[dict] = []
        self.pending = None  # (PIL image, its path) for the next user message
        self.has_image = False  # an image is in ``messages``
        self.warned_long = False

    def handle(self, line: str) -> bool:
        """Act on one line the user typed: a command or a message. False when the user leaves."""
        text = line.strip()
        if not text:
            return True
        if text.startswith("/"):
            return self.command(text)
        self.turn(text)
        return True

    def command(self, text: str) -> bool:
        name, _, arg = text.partition(" ")
        if name == "/exit":
            return False
        if name == "/reset":
            self.messages, self.pending, self.has_image, self.warned_long = [], None, False, False
            self.note("the conversation is reset")
        elif name == "/image":
            self.attach(arg.strip().strip("'\""))  # a path dropped into a terminal may come quoted
        else:
            self.error(f"unknown command {name!r}: {COMMAND_HELP}")
        return True

    def attach(self, path: str) -> None:
        """Load the image at ``path`` for the next user message; any problem is one line of error."""
        from qmamba.data.image import load_image
        from qmamba.errors import QMambaError

        if not path:
            self.error("/image needs a file: /image PATH")
            return
        if self.pipe.processor.transform is None:
            self.error("this model has no vision encoder; it cannot take images")
            return
        if self.has_image:
            self.error("this conversation already has an image and the model takes one: /reset, then /image PATH")
            return
        try:
            image = load_image(path)
        except QMambaError as e:
            self.error(str(e))
            return
        replaced = f" (instead of {self.pending[1]})" if self.pending else ""
        self.pending = (image, path)
        self.note(f"{path} goes with your next message{replaced}")

    def user_message(self, text: str) -> dict:
        """The next user message: ``text``, after the pending image's part if there is one."""
        if self.pending is None:
            return {"role": "user", "content": text}
        return {"role": "user", "content": [{"type": "image", "image": self.pending[0]},
                                            {"type": "text", "text": text}]}

    def turn(self, text: str) -> str | None:
        """Answer ``text`` after the history, printing the answer as it comes; the answer (None if the turn
        failed). The history keeps the answer as ``Pipeline.chat`` returns it (stripped); an answer stopped with
        Ctrl-C is kept as far as it went, as it stands on the screen (a turn stopped before any text is dropped)."""
        from qmamba.errors import QMambaError

        history, pieces = [*self.messages, self.user_message(text)], []
        try:
            self.warn_if_long(history)
            self.stream(history, pieces)
        except QMambaError as e:
            self.error(str(e))
            return None
        except KeyboardInterrupt:
            self.out.write("\n")
            kept = "".join(pieces).strip()
            self.note("answer stopped; " + ("the part shown stays in the conversation" if kept else "nothing is kept"))
            if not kept:
                return None
        answer = "".join(pieces).strip()
        self.messages = [*history, {"role": "assistant", "content": answer}]
        self.has_image, self.pending = self.has_image or self.pending is not None, None
        return answer

    def stream(self, history: list[dict], pieces: list[str]) -> None:
        """Print the answer's pieces as they are generated (leading whitespace dropped), appending them to
        ``pieces``."""
        for piece in self.pipe.stream(history, **self.gen):
            shown = piece if "".join(pieces).strip() else piece.lstrip()
            pieces.append(piece)
            self.out.write(shown)
            self.out.flush()
        self.out.write("\n")
        self.out.flush()

    def warn_if_long(self, history: list[dict]) -> None:
        """Warn once per conversation when it grows past the length the model was trained on."""
        if self.warned_long or self.model_dir is None:
            return
        from qmamba.commands.generate import trained_length
        from qmamba.data.chat import IMAGE_PLACEHOLDER
        from qmamba.pipeline import conversation

        trained = trained_length(self.model_dir)
        if trained is None:
            return
        turns, _ = conversation(history)
        (_, last), before = turns[-1], turns[:-1]
        n = len(self.pipe.processor.prompt_ids(last, has_image=IMAGE_PLACEHOLDER in last, history=before))
        if n > trained[0]:
            self.warned_long = True
            log.warning("the conversation is %d tokens, longer than the %d the model was trained on (%s): answers "
                        "may not follow it; /reset starts a new one", n, trained[0], trained[1])

    def note(self, text: str) -> None:
        print(f"[{text}]", file=self.err, flush=True)

    def error(self, text: str) -> None:
        print(f"qmamba chat: error: {text}", file=self.err, flush=True)


def read_lines(interactive: bool):
    """Yield the lines the user types until EOF (Ctrl-D) or Ctrl-C at the prompt. With a terminal, a prompt
    and line editing (readline, where Python has it); from a pipe, the lines alone."""
    if interactive:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (input() gains line editing and history)
    while True:
        try:
            line = input("> ") if interactive else sys.stdin.readline()
        except (EOFError, KeyboardInterrupt):
            if interactive:
                print()  # the shell's prompt starts on a line of its own
            return
        if not interactive and not line:
            return
        yield line


def run(args: argparse.Namespace) -> int:
    from qmamba.commands.generate import _family
    from qmamba.data.image import load_image
    from qmamba.errors import InputError
    from qmamba.models.checkpoints import require_dir
    from qmamba.pipeline import Pipeline
    from qmamba.utils.device import resolve_device

    gen = gen_kwargs(args)
    resolve_device(args.device)  # a device that does not exist fails here, before a model is loaded
    path = require_dir(args.model, "model")
    if _family(path) != "multimodal":
        raise InputError(f"{path} is a Mamba language model; qmamba chat talks with multimodal models (for a "
                         f"language model: qmamba generate --model {path} --prompt ...)")
    if args.image:
        load_image(args.image)  # a bad --image fails before the model is loaded
    pipe = Pipeline.from_pretrained(path, device=args.device, dtype=args.dtype)
    session = ChatSession(pipe, gen, model_dir=path)
    interactive = sys.stdin.isatty()
    if args.image:
        session.attach(args.image)
    if interactive:
        session.note(f"qmamba chat with {path}: {COMMAND_HELP}")
    try:
        for line in read_lines(interactive):
            if not session.handle(line):
                break
    except KeyboardInterrupt:  # Ctrl-C while a command runs: leave as at the prompt
        pass
    return 0
