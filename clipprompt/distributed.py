"""Embedding at scale with Ray Data (the optional extra ``clipprompt[ray]``).

``embed(dataset, encoder="e5", column="prompt")`` adds an ``embedding`` column to a ``ray.data.Dataset`` with
``Dataset.map_batches`` over a pool of actors: each actor loads the encoder once, runs the C forward pass on
``num_threads`` threads (1 by default: Ray schedules one actor per CPU it reserves), and encodes only the distinct
normalised prompts of each batch that its own PromptCache has not seen. Rows keep every other column (an id column
comes back with its vector) and come back once each. ``build_index`` streams the vectors into a ``FlatIPIndex``.

On one machine ``ray.init()`` starts a local cluster; on many, start ``ray start --head`` on one node, ``ray start
--address=HEAD:6379`` on the others, and ``ray.init(address="auto")`` in the driver: the same calls then spread the
actors over the cluster.
"""
import os
from collections.abc import Callable
from typing import Any

import numpy as np

import clipprompt as cp

__all__ = ["EmbedActor", "build_index", "embed"]


def _require_ray():
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise cp.DependencyError(f"clipprompt.distributed needs Ray Data: pip install 'clipprompt[ray]' ({e})") \
            from e
    return ray


class EmbedActor:
    """The ``map_batches`` callable: one per Ray actor, so the model is loaded once per actor.

    encoder      "minilm[:DIR]" | "e5[:PATH]" | "use[:PATH]" | "clip:PATH", or a picklable zero-argument callable
                 returning an encoder (anything with ``encode(list[str]) -> [n, D]``, ``dim`` and ``fingerprint``)
    column       the text column; ``output_column`` receives float32 [n, D] rows (L2-normalised)
    num_threads  C threads in this actor (cp.set_num_threads)
    normalize    run ``cp.normalize`` on each prompt first (as the pipeline and the service do)
    cache_bytes  the actor's PromptCache: repeats across the batches one actor sees are encoded once (0: off;
                 repeats within a batch are always encoded once)
    """

    def __init__(self, encoder="minilm", column="prompt", output_column="embedding", num_threads=1, normalize=True,
                 cache_bytes=64 << 20):
        if num_threads:
            cp.set_num_threads(int(num_threads))
        if isinstance(encoder, str):
            from .serve import load_encoder

            self.encoder = load_encoder(encoder)
        elif callable(encoder):
            self.encoder = encoder()
        else:
            raise cp.InvalidArgumentError(f"embed: encoder must be a name or a zero-argument callable, got "
                                          f"{type(encoder).__name__}")
        self.column, self.output_column, self.normalize = column, output_column, bool(normalize)
        self.cache = cp.PromptCache(capacity_bytes=int(cache_bytes)) if cache_bytes else None
        self.encoded = 0  # texts this actor ran through the encoder

    def __call__(self, batch: dict) -> dict:
        if self.column not in batch:
            raise cp.InvalidArgumentError(f"embed: the dataset has no column {self.column!r} (columns: "
                                          f"{', '.join(batch)})")
        texts = []
        for i, t in enumerate(batch[self.column].tolist()):
            if not isinstance(t, str):
                raise cp.InvalidArgumentError(f"embed: column {self.column!r} row {i} is "
                                              f"{type(t).__name__}, not str")
            texts.append(cp.normalize(t) if self.normalize else t)
        uniq = list(dict.fromkeys(texts))
        if self.cache is not None:
            before = self.cache.stats()["misses"]
            vecs = self.cache.get_or_encode(self.encoder, uniq)
            self.encoded += self.cache.stats()["misses"] - before
        else:
            vecs = self.encoder.encode(uniq, normalize=True)
            self.encoded += len(uniq)
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        if len(uniq) != len(texts):
            row = {t: j for j, t in enumerate(uniq)}
            vecs = vecs[[row[t] for t in texts]]
        out = dict(batch)
        out[self.output_column] = vecs
        return out


def embed(dataset, encoder: "str | Callable" = "minilm", column: str = "prompt", *, output_column: str = "embedding",
          batch_size: int = 256, concurrency: int = 2, num_threads: int = 1, num_cpus: float | None = None,
          normalize: bool = True, cache_bytes: int = 64 << 20):
    """``dataset`` with ``output_column`` added: one float32 vector per row (lazy: a new ``ray.data.Dataset``).

    concurrency  actors in the pool (each loads the encoder once); ``num_cpus`` CPUs reserved per actor
                 (default: ``num_threads``). See ``EmbedActor`` for the other arguments.
    """
    ray = _require_ray()
    for name, v in (("batch_size", batch_size), ("concurrency", concurrency), ("num_threads", num_threads)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise cp.InvalidArgumentError(f"embed: {name} must be a positive integer, got {v!r}")
    if batch_size > 1 << 20 or concurrency > 4096:
        raise cp.InvalidArgumentError("embed: batch_size <= 1,048,576 and concurrency <= 4096")
    if not isinstance(dataset, ray.data.Dataset):
        raise cp.InvalidArgumentError(f"embed: expected a ray.data.Dataset, got {type(dataset).__name__}")
    schema = dataset.schema(fetch_if_missing=False)  # known without running anything for most sources
    if schema is not None and column not in schema.names:
        raise cp.InvalidArgumentError(f"embed: the dataset has no column {column!r} (columns: "
                                      f"{', '.join(schema.names)})")
    return dataset.map_batches(
        EmbedActor,
        fn_constructor_kwargs=dict(encoder=encoder, column=column, output_column=output_column,
                                   num_threads=num_threads, normalize=normalize, cache_bytes=cache_bytes),
        batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=int(concurrency)),
        num_cpus=float(num_cpus if num_cpus is not None else num_threads), udf_modifying_row_count=False)


def build_index(dataset, column: str = "embedding", id_column: str | None = "id", *, dtype: Any = "float32",
                batch_size: int = 4096, path: "str | os.PathLike | None" = None):
    """A FlatIPIndex of the vectors in ``column`` (streamed batch by batch into the driver), labelled with the
    int64 ``id_column`` (None: 0..n-1 in the order the rows arrive). Saved to ``path`` when given."""
    _require_ray()
    index = None
    for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
        if column not in batch:
            raise cp.InvalidArgumentError(f"build_index: the dataset has no column {column!r}")
        vecs = np.ascontiguousarray(np.stack(list(batch[column])) if batch[column].dtype == object
                                    else batch[column], dtype=np.float32)
        if vecs.ndim != 2:
            raise cp.DimensionMismatchError(f"build_index: column {column!r} holds shape {vecs.shape}, expected "
                                            f"[n, D] vectors")
        if index is None:
            index = cp.FlatIPIndex(vecs.shape[1], dtype=dtype)
        if id_column is None:
            index.add(vecs)
        else:
            if id_column not in batch:
                raise cp.InvalidArgumentError(f"build_index: the dataset has no id column {id_column!r}")
            index.add(vecs, np.asarray(batch[id_column], dtype=np.int64))
    if index is None:
        raise cp.InvalidArgumentError("build_index: the dataset is empty")
    if path is not None:
        index.save(os.fspath(path))
    return index
