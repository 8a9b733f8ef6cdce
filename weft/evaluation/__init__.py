"""Evaluation: base-vs-fine-tuned comparison, scoring, lm-eval benchmarks, promotion gate."""
