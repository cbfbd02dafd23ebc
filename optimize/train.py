"""Short PyTorch training loops: training, fine-tuning after pruning, and knowledge distillation.

All are plain mini-batch Adam loops over in-memory arrays with a progress
bar, run under `repeatable()`: seeded, on a fixed number of threads, with
deterministic kernels, so the same run gives the same weights every time on
one machine. Another CPU's kernels round differently and may land a run
elsewhere; tests therefore assert what the optimizer does with a result,
never where a training run landed.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import numpy as np

SEED = 0
BATCH = 64
# Intra-op threads while training. Float sums split over another number of threads round
# differently, and a few ulps grow into another model within an epoch (a digits CNN trained on
# 1 and on 2 threads differs); a fixed count makes the run independent of the caller's setting.
TRAINING_THREADS = 2


@contextlib.contextmanager
def repeatable(seed: int = SEED) -> Iterator[None]:
    """Within: torch's global RNG seeded with `seed`, TRAINING_THREADS intra-op threads, deterministic
    kernels where torch has them (a user's op without one warns rather than fails). The caller's RNG
    state, thread count and determinism settings are restored on exit."""
    import torch

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(TRAINING_THREADS)
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
            torch.set_num_threads(threads)


def fit(module, inputs: np.ndarray, labels: np.ndarray, epochs: int, lr: float, what: str,
        loss_of: Callable | None = None, before_step: Callable[[], None] | None = None, seed: int = SEED):
    """Train `module` in place with cross-entropy (or `loss_of(logits, batch_indices)`); returns it in eval mode.

    `before_step` runs after each optimizer step (pruning masks re-applied, say). The batch order
    comes from its own generator seeded with `seed`; dropout and the like draw from torch's
    global RNG, seeded by `repeatable`.
    """
    import torch
    from tqdm.auto import tqdm

    with repeatable(seed):
        order_generator = torch.Generator().manual_seed(seed)
        x, y = torch.from_numpy(inputs), torch.from_numpy(labels)
        optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=lr)
        module.train()
        for _ in tqdm(range(epochs), desc=what, unit="epoch", leave=False):
            order = torch.randperm(len(x), generator=order_generator)
            for start in range(0, len(x), BATCH):
                batch = order[start : start + BATCH]
                optimizer.zero_grad()
                logits = module(x[batch])
                loss = loss_of(logits, batch) if loss_of else torch.nn.functional.cross_entropy(logits, y[batch])
                loss.backward()
                optimizer.step()
                if before_step is not None:
                    before_step()
    return module.eval()


def build(make_module: Callable[[], object], seed: int = SEED):
    """A freshly initialised module whose initial weights follow from `seed` alone."""
    with repeatable(seed):
        return make_module()


def distill(teacher, student, inputs: np.ndarray, labels: np.ndarray, epochs: int, temperature: float,
            alpha: float, lr: float = 1e-3):
    """Train `student` on the teacher's softened outputs (weight alpha) and the true labels (1 - alpha).

    The soft term is KL(teacher_T || student_T) scaled by T^2, so its gradients
    keep their size as the temperature changes (Hinton et al.).
    """
    import torch
    import torch.nn.functional as F

    with repeatable(), torch.no_grad():
        soft_targets = F.softmax(teacher.eval()(torch.from_numpy(inputs)) / temperature, dim=1)
    y = torch.from_numpy(labels)

    def loss_of(logits, batch):
        soft = F.kl_div(F.log_softmax(logits / temperature, dim=1), soft_targets[batch], reduction="batchmean")
        return alpha * soft * temperature**2 + (1 - alpha) * F.cross_entropy(logits, y[batch])

    return fit(student, inputs, labels, epochs, lr, f"distilling (T={temperature:g}, alpha={alpha:g})", loss_of)
