"""CUDA graphs for the torch runtime: one graph launch per call instead of one kernel launch per op.

On an NVIDIA H200 the torch runtime ran all-MiniLM-L6-v2 in 4.1-4.7 ms per call whatever the batch (1 to 128 rows
of 128 tokens): Python launching the exported graph op by op set the pace, not the GPU (docs/BENCHMARKS.md, "GPU
check"). Here each input shape is captured once into a CUDA graph and replayed after. Shapes are made few by padding
the batch axis up to the next power of two (text models also pad their token axis, serve/runtimes/text.py); the
padded rows' answers are dropped. Graphs share one memory pool and are replayed one at a time under a lock, each
call's inputs copied in before and its outputs copied out right after, so no graph reads what another left behind. Past
`max_graphs` the least recently used graph is dropped (logged: more shapes than that means recapturing);
batches past `max_rows`, and shapes whose capture ran out of GPU memory (`NotCaptured`), are the caller's to run
op by op. Capture uses CUDA's global capture mode: one model's calls at a time (the replica's one inference thread).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Callable

import numpy as np

MAX_GRAPHS = 64
MAX_ROWS = 1024
TOKEN_MULTIPLE = 32  # text models pad their token axis to a multiple of this (at most 256 / 32 = 8 lengths for MiniLM)

log = logging.getLogger(__name__)


class NotCaptured(Exception):
    """This shape has no graph (its capture ran out of GPU memory): run it op by op."""


def padded_rows(rows: int) -> int:
    """The batch size a graph is captured for: the next power of two at or above `rows`."""
    if rows < 1:
        raise ValueError(f"expected at least one row, got {rows}")
    return 1 << (rows - 1).bit_length()


def shapes_needed(max_batch_size: int, max_length: int | None = None) -> int:
    """How many padded input shapes a model's calls can take: batch sizes (powers of two up to the padded
    `max_batch_size`) times token lengths (multiples of TOKEN_MULTIPLE up to `max_length`, for text models)."""
    batch_sizes = padded_rows(max_batch_size).bit_length()
    token_lengths = -(-max_length // TOKEN_MULTIPLE) if max_length else 1
    return batch_sizes * token_lengths


def pad_rows(array: np.ndarray, rows: int) -> np.ndarray:
    """`array` with zero rows appended up to `rows` along axis 0."""
    if array.shape[0] == rows:
        return np.ascontiguousarray(array)
    padded = np.zeros((rows, *array.shape[1:]), dtype=array.dtype)
    padded[: array.shape[0]] = array
    return padded


class _Graph:
    def __init__(self, graph, inputs: list, outputs: list) -> None:
        self.graph, self.inputs, self.outputs = graph, inputs, outputs


class GraphedForward:
    """Runs `module_fn(list of device tensors) -> list of tensors` through a CUDA graph per padded input shape."""

    def __init__(self, torch, module_fn: Callable[[list], list], device: str = "cuda",
                 max_graphs: int = MAX_GRAPHS, max_rows: int = MAX_ROWS) -> None:
        if max_graphs < 1 or max_rows < 1:
            raise ValueError(f"expected max_graphs and max_rows of at least 1, got {max_graphs} and {max_rows}")
        self._torch, self._module_fn, self._device = torch, module_fn, device
        self._max_graphs, self._max_rows = max_graphs, max_rows
        self._graphs: OrderedDict[tuple, _Graph] = OrderedDict()
        self._too_large: set[tuple] = set()  # shapes whose capture ran out of GPU memory
        self._pool = torch.cuda.graph_pool_handle()
        self._lock = threading.Lock()

    @property
    def captured(self) -> int:
        return len(self._graphs)

    def accepts(self, rows: int) -> bool:
        """Whether a batch of `rows` runs through a graph (larger ones run op by op: too costly to capture)."""
        return padded_rows(rows) <= self._max_rows

    def __call__(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        rows = arrays[0].shape[0]
        size = padded_rows(rows)
        padded = [pad_rows(array, size) for array in arrays]
        key = tuple((array.shape, array.dtype.str) for array in padded)
        with self._lock:
            if key in self._too_large:
                raise NotCaptured(key)
            entry = self._graphs.get(key)
            if entry is None:
                try:
                    entry = self._capture(padded)
                except self._torch.cuda.OutOfMemoryError:
                    self._too_large.add(key)
                    log.warning("no GPU memory to capture shape %s: it runs op by op", key)
                    raise NotCaptured(key) from None
                self._graphs[key] = entry
                while len(self._graphs) > self._max_graphs:
                    dropped, _ = self._graphs.popitem(last=False)
                    log.warning("more than %d input shapes: dropped the graph of %s (it is recaptured if it comes "
                                "back)", self._max_graphs, dropped)
            self._graphs.move_to_end(key)
            for static, array in zip(entry.inputs, padded):
                static.copy_(self._torch.from_numpy(array))
            entry.graph.replay()
            return [output[:rows].float().cpu().numpy() for output in entry.outputs]

    def _capture(self, padded: list[np.ndarray]) -> _Graph:
        torch = self._torch
        inputs = [torch.from_numpy(array).to(self._device) for array in padded]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture: lazy cuBLAS/cuDNN set-up must not be captured
            for _ in range(2):
                self._module_fn(inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # The outer stream context puts this thread's stream back even when the capture fails part-way
        # (torch.cuda.graph's own exit does not when ending the capture raises).
        with torch.cuda.stream(torch.cuda.current_stream()), torch.cuda.graph(graph, pool=self._pool):
            outputs = self._module_fn(inputs)
        return _Graph(graph, inputs, list(outputs))
