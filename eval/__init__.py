"""Evaluation: model-agnostic feature and image metrics (FD, KID, precision/recall, drift), the
evaluator."""
