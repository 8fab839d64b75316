"""Tuning a model to this machine: the agreement check of every inference path, and the INT8 variant."""
