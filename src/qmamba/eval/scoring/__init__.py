"""Scorers, one module per benchmark family, on in-memory records.

Reading files, matching predictions to questions and the missing-answer policy live in
``qmamba.eval.score``; these modules hold only the rules of the official scripts.
"""
