"""The trainer's input path: this process's rows of each global batch, built from the image cache
(``data.augment``) one step ahead of the step that uses them.

:class:`BatchMaker` builds a :class:`~crossreid.methods.Batch` from a global batch of training
indices: the batch's augmentation draw (keyed by seed, stage, epoch and step), this process's
rows copied out of the cache with their flip and crop (into pinned memory on CUDA), then the
rest of the augmentation and normalisation on the training device. Only this process's rows
are copied and augmented; the draw covers the global batch, so its content does not depend
on the number of processes.

:class:`Prefetcher` runs it in a background thread, ``ahead`` batches ahead, on CUDA in a
stream of its own (copies from pinned memory do not block, and the training stream waits
for the batch's work only on the GPU), and times how long the training loop waits for a
batch: the trainer logs that as ``data_wait`` (a starved GPU shows there).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from crossreid.data.augment import Recipe, crop_rows, draw, finish
from crossreid.data.pipeline import ImageStore
from crossreid.methods import Batch
from crossreid.modality import Modality


class BatchMaker:
    """This process's rows of global batches of ``store`` (see the module docstring).

    ``global_layout``: give each batch the global batch's layout (``Batch.whole``), for
    ``train.batch_scope=global`` under torchrun. ``buffers``: on a CPU, the number of output
    tensors reused in turn (a fresh 80 MB tensor costs the CPU more than filling it); it
    must exceed the batches alive at once (prepared ahead + in use + one).
    """

    def __init__(self, store: ImageStore, recipe: Recipe, labels: dict[int, int], device: torch.device,
                 channels_last: bool = False, global_layout: bool = False, buffers: int = 3) -> None:
        self.store, self.recipe, self.device = store, recipe, device
        self.labels = np.array([labels[s.pid] for s in store.samples], dtype=np.int64)
        self.colour = np.array([s.modality is Modality.RGB for s in store.samples], dtype=bool)
        self.format = torch.channels_last if channels_last else torch.contiguous_format
        self.global_layout = global_layout
        self._ring: dict[tuple, list[torch.Tensor]] = {}
        self._made: dict[tuple, int] = {}
        self.buffers = buffers

    def __call__(self, key: tuple[int, ...], indices: list[int], mine: list[int], modalities: list[Modality],
                 paired: bool = False) -> Batch:
        """The batch of positions ``mine`` of the global batch ``indices`` (training-pool rows, laid
        out as the sampler lays them out), with the augmentation drawn under ``key``."""
        cuda = self.device.type == "cuda"
        store, blocks = self.store, len(modalities)
        d = draw(key, self.recipe, self.colour[indices], store.height, store.width, blocks if paired else 1).rows(mine)
        local = [indices[p] for p in mine]
        images = finish(crop_rows(store, local, d, pin=cuda), d, self._output(len(local)))
        labels = self._to_device(self.labels[local], cuda)
        whole = None
        if self.global_layout:
            whole = Batch(images.new_empty(0), self._to_device(self.labels[indices], cuda), list(modalities),
                          rows=len(indices) // blocks, indices=list(indices))
        return Batch(images, labels, list(modalities), rows=len(local) // blocks, indices=local, global_layout=whole)

    def _to_device(self, values: np.ndarray, pin: bool) -> torch.Tensor:
        t = torch.from_numpy(values)
        return (t.pin_memory() if pin else t).to(self.device, non_blocking=True)

    def _output(self, rows: int) -> torch.Tensor:
        shape = (rows, 3, self.store.height, self.store.width)
        if self.device.type != "cpu":  # the device's caching allocator recycles memory
            return torch.empty(shape, device=self.device, memory_format=self.format)
        ring, made = self._ring.setdefault(shape, []), self._made.get(shape, 0)
        self._made[shape] = made + 1
        if len(ring) < self.buffers:
            ring.append(torch.empty(shape, memory_format=self.format))
        return ring[made % self.buffers]  # the oldest: its batch is done


_END = object()


class Prefetcher:
    """``make(item)`` for each item of ``items``, computed ``ahead`` items ahead in a background
    thread (``ahead=0``: in the caller's thread, when asked for). Use as a context manager
    (the thread stops on exit) and iterate. ``waited``: seconds the caller spent waiting."""

    def __init__(self, make: Callable, items: Iterable, device: torch.device, ahead: int = 1) -> None:
        self.make, self.items, self.device, self.ahead = make, items, device, ahead
        self.waited = 0.0
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=max(ahead, 1))
        self._thread: threading.Thread | None = None
        self._stream = torch.cuda.Stream(device) if device.type == "cuda" and ahead else None

    def __enter__(self) -> Prefetcher:
        if self.ahead:
            self._thread = threading.Thread(target=self._produce, name="crossreid-batches", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _on_stream(self):
        if self._stream is None:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(torch.cuda.device(self.device))
        stack.enter_context(torch.cuda.stream(self._stream))
        return stack

    def _produce(self) -> None:
        try:
            with torch.no_grad(), self._on_stream():
                for item in self.items:
                    batch = self.make(item)
                    ready = None
                    if self._stream is not None:
                        ready = torch.cuda.Event()
                        ready.record(self._stream)
                    if not self._put((batch, ready)):
                        return
            self._put(_END)
        except BaseException as exc:  # handed to the training loop, which raises it
            self._put(exc)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator:
        if not self.ahead:
            items = iter(self.items)
            while True:
                start = time.perf_counter()
                try:
                    batch = self.make(next(items))
                except StopIteration:
                    return
                finally:
                    self.waited += time.perf_counter() - start
                yield batch
        while True:
            start = time.perf_counter()
            item = self._queue.get()
            self.waited += time.perf_counter() - start
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            batch, ready = item
            if ready is not None:  # the training stream waits on the GPU; tensors are marked as used there
                stream = torch.cuda.current_stream(self.device)
                stream.wait_event(ready)
                for t in (batch.images, batch.labels, batch.whole.labels):
                    t.record_stream(stream)
            yield batch
