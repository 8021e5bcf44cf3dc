"""The ``qmamba`` command line: a table of subcommands, each a module imported only when it runs,
so ``qmamba --help`` answers at once. A command module defines ``add_arguments(parser)`` and
``run(args) -> int``; its docstring's first line is its help.

Every command logs the ``qmamba`` logger's INFO messages to stderr (``utils/log.py``). An error ends the command
with one line on stderr: a ``QMambaError`` (bad input) its message, exit 2; any other exception its type, its
first line and a hint, exit 1. ``--debug`` (anywhere on the line) or ``QMAMBA_DEBUG=1`` logs DEBUG messages and
lets other exceptions raise with their traceback."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from qmamba import __version__

# name -> (module, one-line help); the help is repeated here so the top-level --help imports nothing
COMMANDS: dict[str, tuple[str, str]] = {
    "quickstart": ("qmamba.commands.quickstart", "the whole pipeline at micro scale: data, training, six benchmarks"),
    "generate": ("qmamba.commands.generate", "answer a prompt about an image, or continue text with an LM"),
    "chat": ("qmamba.commands.chat", "talk with a multimodal model in the terminal: /image PATH, /reset, /exit"),
    "serve": ("qmamba.commands.serve", "serve a model behind OpenAI's chat-completions API (continuous batching)"),
    "info": ("qmamba.commands.info", "show a model's config, parameter counts and visual-token count"),
    "eval": ("qmamba.commands.eval", "run, score and report the six benchmarks"),
    "bench": ("qmamba.commands.bench", "time decode, prefill, training, VQA answers beside mamba_ssm, transformers"),
    "train": ("qmamba.commands.train", "train a multimodal model stage by stage from a YAML config"),
    "data": ("qmamba.commands.data", "generate the synthetic micro-world (qmamba data synth)"),
    "micro": ("qmamba.commands.micro", "build the micro-world's pretrained backbones (tokenizer, SigLIP, Mamba LM)"),
    "viz": ("qmamba.commands.viz", "draw a query connector's cross-attention maps over an image (viz attention)"),
    "replicate": ("qmamba.commands.replicate", "the paper's Tables 1-4 on the micro-world: seeds, intervals, report"),
    "convert": ("qmamba.commands.convert", "convert Cobra's or ML-Mamba's released weights to a qmamba model"),
}


def _top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items())
    p = argparse.ArgumentParser(
        prog="qmamba", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="qmamba: Querying Mamba and the Mamba multimodal LLMs around it.",
        epilog=f"commands:\n{lines}\n\nRun 'qmamba COMMAND --help' for a command's options.",
    )
    p.add_argument("--version", action="version", version=f"qmamba {__version__}")
    p.add_argument("--debug", action="store_true",
                   help="log DEBUG messages and show the traceback of an unexpected error (or QMAMBA_DEBUG=1)")
    p.add_argument("command", nargs="?", choices=list(COMMANDS), metavar="COMMAND")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("QMAMBA_DEBUG", "0") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] not in COMMANDS:
        _top_parser().parse_args(argv[:1])  # --help, --version and an unknown command end here
        _top_parser().print_help(sys.stderr)  # no command: the help, and a failure for scripts
        return 2
    name, rest = argv[0], argv[1:]
    from qmamba.utils.cpu import limit_openmp_spin
    from qmamba.utils.log import setup_logging

    setup_logging(debug)  # before the command imports anything that logs or draws a progress bar
    limit_openmp_spin()  # before the command imports torch: idle CPU threads stop spinning on shared cores
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"qmamba {name}", description=module.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    from qmamba.errors import QMambaError

    try:
        return int(module.run(args) or 0)
    except QMambaError as e:
        print(f"qmamba {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"qmamba {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            raise
        print(f"qmamba {name}: error: {one_line(e)} ({hint(e)}; --debug or QMAMBA_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1


def one_line(e: BaseException) -> str:
    """``Type: first line of the message`` (at most 300 characters)."""
    text = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def hint(e: BaseException) -> str:
    """What to try for an error that is not qmamba's own."""
    text = str(e)
    if type(e).__name__ == "OutOfMemoryError" or "out of memory" in text.lower():
        return ("the GPU ran out of memory: try a smaller --batch-size or --max-new-tokens, --dtype bf16, "
                "another GPU (--device cuda:N) or --device cpu")
    if isinstance(e, MemoryError):
        return "the machine ran out of memory: try a smaller --batch-size or a smaller model"
    if isinstance(e, ImportError):
        return f"a package is missing: pip install {e.name}" if getattr(e, "name", None) else "a package is missing"
    if isinstance(e, OSError):
        return "a file could not be read or written: check the path, its permissions and the free disk space"
    if "CUDA" in text or "cuda" in text:
        return "a CUDA error: check the GPU with nvidia-smi, or run with --device cpu"
    return "not an input error qmamba recognises: if the inputs are right, please report it"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
