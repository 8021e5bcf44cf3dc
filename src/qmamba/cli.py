"""The ``qmamba`` command line: a table of subcommands, each a module imported only when it runs,
so ``qmamba --help`` answers at once. A command module defines ``add_arguments(parser)`` and
``run(args) -> int``; its docstring's first line is its help."""

from __future__ import annotations

import argparse
import importlib
import sys

from qmamba import __version__

# name -> (module, one-line help); the help is repeated here so the top-level --help imports nothing
COMMANDS: dict[str, tuple[str, str]] = {
    "quickstart": ("qmamba.commands.quickstart", "the whole pipeline at micro scale: data, training, six benchmarks"),
    "generate": ("qmamba.commands.generate", "answer a prompt about an image, or continue text with an LM"),
    "info": ("qmamba.commands.info", "show a model's config, parameter counts and visual-token count"),
    "eval": ("qmamba.commands.eval", "run, score and report the six benchmarks"),
    "bench": ("qmamba.commands.bench", "time decode, prefill, training, VQA answers beside mamba_ssm, transformers"),
    "train": ("qmamba.commands.train", "train a multimodal model stage by stage from a YAML config"),
    "data": ("qmamba.commands.data", "generate the synthetic micro-world (qmamba data synth)"),
    "micro": ("qmamba.commands.micro", "build the micro-world's pretrained backbones (tokenizer, SigLIP, Mamba LM)"),
}


def _top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items())
    p = argparse.ArgumentParser(
        prog="qmamba", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="qmamba: Querying Mamba and the Mamba multimodal LLMs around it.",
        epilog=f"commands:\n{lines}\n\nRun 'qmamba COMMAND --help' for a command's options.",
    )
    p.add_argument("--version", action="version", version=f"qmamba {__version__}")
    p.add_argument("command", nargs="?", choices=list(COMMANDS), metavar="COMMAND")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        args = _top_parser().parse_args(argv[:1])
        if args.command is None:
            _top_parser().print_help()
        return 0 if args.command is None else 2
    name, rest = argv[0], argv[1:]
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
