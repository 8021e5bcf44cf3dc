"""The Q-Mamba paper's own numbers (Eom et al., EMNLP Findings 2024), as printed, for the report to set beside
ours. Source: the paper's Tables 1-4 (Sec. 4.2 and 4.3); Table 1's main rows are ``qmamba.eval.report``'s
``PAPER_TABLE1``, here with its two VL-Mamba scan-order rows added.

Every table maps a row name to {task: score}; a task the paper did not report is absent (Tables 2-4 have
no MMBench column).
"""

from __future__ import annotations

from qmamba.eval.report import PAPER_TABLE1, TASK_ORDER

FIVE = TASK_ORDER[:5]  # Tables 2-4: VQAv2, GQA, VizWiz, TextVQA, POPE


def _row(values, tasks=TASK_ORDER) -> dict[str, float]:
    return {t: float(v) for t, v in zip(tasks, values)}


PAPER: dict[str, dict[str, dict[str, float]]] = {
    "table1": {
        **{name: _row(values) for name, values in PAPER_TABLE1.items()},
        "VL-Mamba + forward scan only": _row(("72.34", "51.92", "29.17", "45.6", "85.9", "56.7")),
        "VL-Mamba + backward scan only": _row(("72.06", "52.42", "34.92", "45.1", "86.1", "55.9")),
    },
    "table2": {  # 256 queries; cross-attention mask
        "Global": _row(("73.12", "52.87", "49.09", "44.0", "85.1"), FIVE),
        "Local": _row(("75.01", "58.10", "50.53", "48.8", "86.9"), FIVE),
    },
    "table3": {  # 256 queries, local; the bidirectional preprocessing connector
        "From Scratch": _row(("74.22", "56.30", "53.12", "48.0", "86.4"), FIVE),
        "From Trained": _row(("75.01", "58.10", "50.53", "48.8", "86.9"), FIVE),
    },
    "table4": {  # 729 queries, local, preprocessing from trained VL-Mamba; scan order at inference
        "Forward Only": _row(("76.58", "58.44", "50.00", "50.0", "86.9"), FIVE),
        "Backward Only": _row(("75.35", "58.13", "49.51", "50.4", "86.7"), FIVE),
        "Bidirectional": _row(("75.01", "58.10", "50.53", "48.8", "86.9"), FIVE),
    },
}

PAPER_QUERIES = (128, 256, 512, 729)  # the paper's query counts, for 729 patches
PAPER_PATCHES = 729
