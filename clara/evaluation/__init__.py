"""Evaluation: answer metrics, retrieval metrics, and runs of configurations over QA sets."""
