"""The minibatch loop both fitted models train with: shuffled epochs, periodic validation, the best checkpoint kept."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm


def train_minibatches(net: nn.Module, optimiser: torch.optim.Optimizer, train_rows: np.ndarray, *, steps: int,
                      batch_size: int, generator: torch.Generator, step_loss: Callable[[np.ndarray], torch.Tensor],
                      validate: Callable[[], float], extra: torch.Tensor | None = None, desc: str,
                      progress: bool = False) -> list[float]:
    """Run ``steps`` Adam steps over shuffled minibatches; validate every ``steps // 10``; keep the best.

    Each epoch is a fresh ``torch.randperm`` of ``train_rows`` (from ``generator``); a step takes the next
    ``batch_size`` rows (a new epoch starts when fewer remain), calls ``step_loss(rows)`` with ``net`` in training
    mode and steps ``optimiser``. Every ``max(steps // 10, 1)`` steps and at the last one, ``validate()`` (in eval
    mode, without gradients) scores the model; the state of ``net`` (and of ``extra``, a tensor trained beside it)
    with the lowest score is restored at the end and ``net`` left in eval mode.

    Returns:
        The validation scores, in order.
    """
    check_every = max(steps // 10, 1)
    perm = train_rows[torch.randperm(len(train_rows), generator=generator).numpy()]
    cursor, best_valid = 0, math.inf
    history: list[float] = []
    best: tuple[dict[str, torch.Tensor], torch.Tensor | None] | None = None
    for step in tqdm(range(1, steps + 1), desc=desc, disable=not progress):
        if cursor + batch_size > len(perm):
            perm, cursor = train_rows[torch.randperm(len(train_rows), generator=generator).numpy()], 0
        rows = perm[cursor:cursor + batch_size]
        cursor += batch_size
        net.train()
        loss = step_loss(rows)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % check_every == 0 or step == steps:
            net.eval()
            with torch.no_grad():
                valid = float(validate())
            history.append(valid)
            if valid < best_valid:
                best_valid = valid
                best = ({k: v.detach().clone() for k, v in net.state_dict().items()},
                        None if extra is None else extra.detach().clone())
    assert best is not None
    net.load_state_dict(best[0])
    if extra is not None and best[1] is not None:
        with torch.no_grad():
            extra.copy_(best[1])
    net.eval()
    return history
