"""Short PyTorch training loops: fine-tuning after pruning, and knowledge distillation.

Both are plain mini-batch Adam loops over in-memory arrays with a progress
bar; the seed is fixed so results repeat.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

SEED = 0
BATCH = 64


def fit(module, inputs: np.ndarray, labels: np.ndarray, epochs: int, lr: float, what: str,
        loss_of: Callable | None = None, before_step: Callable[[], None] | None = None):
    """Train `module` in place with cross-entropy (or `loss_of(logits, batch_indices)`); returns it in eval mode.

    `before_step` runs after each optimizer step (pruning masks re-applied, say).
    """
    import torch
    from tqdm.auto import tqdm

    torch.manual_seed(SEED)
    x, y = torch.from_numpy(inputs), torch.from_numpy(labels)
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=lr)
    module.train()
    for _ in tqdm(range(epochs), desc=what, unit="epoch", leave=False):
        order = torch.randperm(len(x))
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


def distill(teacher, student, inputs: np.ndarray, labels: np.ndarray, epochs: int, temperature: float,
            alpha: float, lr: float = 1e-3):
    """Train `student` on the teacher's softened outputs (weight alpha) and the true labels (1 - alpha).

    The soft term is KL(teacher_T || student_T) scaled by T^2, so its gradients
    keep their size as the temperature changes (Hinton et al.).
    """
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        soft_targets = F.softmax(teacher.eval()(torch.from_numpy(inputs)) / temperature, dim=1)
    y = torch.from_numpy(labels)

    def loss_of(logits, batch):
        soft = F.kl_div(F.log_softmax(logits / temperature, dim=1), soft_targets[batch], reduction="batchmean")
        return alpha * soft * temperature**2 + (1 - alpha) * F.cross_entropy(logits, y[batch])

    return fit(student, inputs, labels, epochs, lr, f"distilling (T={temperature:g}, alpha={alpha:g})", loss_of)
