"""Helpers for the evaluation tests (a plain module: importing from conftest.py is ambiguous)."""

from __future__ import annotations


def vqa_answers(*answers: str) -> list[dict]:
    """Official VQAv2 answer dicts with answer ids 1..n."""
    return [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)]
