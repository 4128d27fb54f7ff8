"""Gymnasium environments: the synthetic shop world (ground truth) and the re-ranking simulator."""
