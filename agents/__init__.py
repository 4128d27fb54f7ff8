"""Ranking agents and baselines."""
