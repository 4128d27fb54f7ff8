"""Hydra configuration (package data)."""
