"""The ending the sweep scripts share: a markdown table of their rows under the device's name, and their
results as JSON when asked for."""

from __future__ import annotations

import json

import torch


def finish(caption: str, columns: list[str], rows: list[str], results, out: str | None) -> None:
    """Print ``rows`` (markdown table lines) under "<device>, <caption>" and ``columns``; write ``results`` to
    ``out`` as JSON if given."""
    print(f"\n{torch.cuda.get_device_name()}, {caption}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    print("\n".join(rows))
    if out:
        with open(out, "w") as f:
            json.dump(results, f, indent=1)
