"""The HTTP service: ``python -m clipprompt serve`` (FastAPI + uvicorn, the optional extra ``clipprompt[serve]``).

One process holds one encoder, one PromptCache, an optional FlatIPIndex (with the texts of its ids) and a
PromptExpander, and answers:

    POST /v1/embeddings   OpenAI-compatible: input str | [str], model, encoding_format float | base64
    POST /v1/normalize    /v1/segment   /v1/expand   /v1/search   /v1/inspect   /v1/sd/encode (CLIP encoders)
    GET  /health   /v1/models   /metrics (Prometheus text format)   /  (the inspector page)

Encoding path: request -> validate every item -> normalise -> PromptCache lookup -> misses go to the MicroBatcher,
which merges the misses of concurrent requests (up to ``max_batch`` texts, waiting at most ``max_wait_ms`` after the
first one arrived) into one ``encoder.encode`` call on one worker thread (the C forward pass releases the GIL, so the
event loop keeps accepting requests while it runs) -> the new vectors go into the cache -> each request gets its rows.

Bad input never costs the service: every item is checked before anything is queued, and the answer is a JSON body
``{"error": {"type": <ClipPromptError class>, "message": ..., "item": <index or null>, "field": ...}}`` with status
400 (bad value), 413 (body, list or item over a limit) or 422 (wrong JSON type). A batch whose C call fails is retried
request by request, and a failing request item by item, so one bad item fails alone. SIGTERM / Ctrl-C stops accepting
connections, lets the requests in flight finish (``drain_s``), drains the batcher, then saves the cache file.
"""
import asyncio
import base64
import collections
import concurrent.futures
import json
import math
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

import clipprompt as cp

__all__ = ["ApiError", "Metrics", "MicroBatcher", "ServeConfig", "create_app", "load_encoder", "run", "token_view"]

# ---------------------------------------------------------------------------------------------------------------------
# configuration


@dataclass
class ServeConfig:
    """Everything ``python -m clipprompt serve`` takes (see ``--help``); ``create_app(ServeConfig(...))`` in code."""

    host: str = "127.0.0.1"
    port: int = 8000
    encoder: str = "minilm"          # minilm[:DIR] | e5[:PATH] | use[:PATH] | clip:PATH
    index: str | None = None         # a saved FlatIPIndex (dim = the encoder's)
    corpus: str | None = None        # one text per line: the text of id i (and the index, when --index is absent)
    cache: str | None = None         # PromptCache file: loaded at start when present, saved at shutdown
    cache_bytes: int = 256 << 20     # PromptCache capacity; 0 turns the cache off
    pool: str | None = None          # PromptExpander pool file (default: the shipped product taxonomy)
    max_batch: int = 64              # texts per encoder call
    max_wait_ms: float = 2.0         # how long the first queued text waits for company
    max_body_bytes: int = 1 << 20    # 413 above
    max_items: int = 256             # 413 above (per request list)
    max_chars: int = 8192            # 413 above (per text)
    max_k: int = 100                 # largest k / top_k accepted
    threads: int | None = None       # cp.set_num_threads
    drain_s: float = 30.0            # graceful-shutdown limit for requests in flight
    log_level: str = "warning"

    def check(self) -> "ServeConfig":
        positive = ("max_batch", "max_body_bytes", "max_items", "max_chars", "max_k")
        for name in positive:
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise cp.InvalidArgumentError(f"serve: {name} must be a positive integer, got {v!r}")
        if self.max_batch > 4096 or self.max_items > 65536 or self.max_body_bytes > 1 << 30:
            raise cp.InvalidArgumentError("serve: max_batch <= 4096, max_items <= 65536, max_body_bytes <= 1 GiB")
        if not (0.0 <= float(self.max_wait_ms) <= 1000.0):
            raise cp.InvalidArgumentError(f"serve: max_wait_ms must be in [0, 1000], got {self.max_wait_ms}")
        if self.cache_bytes < 0:
            raise cp.InvalidArgumentError(f"serve: cache_bytes must be >= 0, got {self.cache_bytes}")
        if not (0 <= int(self.port) <= 65535):
            raise cp.InvalidArgumentError(f"serve: port must be in [0, 65535], got {self.port}")
        return self


def _require_web():
    """Import FastAPI and uvicorn, or raise DependencyError saying how to get them."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise cp.DependencyError(f"`clipprompt serve` needs FastAPI and uvicorn: pip install 'clipprompt[serve]' "
                                 f"({e})") from e


_ENCODER_CLASSES = {"minilm": "MiniLMEncoder", "e5": "E5Encoder", "use": "USEEncoder", "clip": "ClipTextEncoder"}


def load_encoder(spec: str):
    """An encoder from ``name[:path]``: minilm (the bundled model or a directory), e5, use, clip:PATH.

    The class is looked up by name on ``clipprompt`` at call time, so an encoder this build lacks raises
    DependencyError naming it; an unknown name raises InvalidArgumentError.
    """
    name, _, path = str(spec).partition(":")
    name = name.strip().lower()
    if name not in _ENCODER_CLASSES:
        raise cp.InvalidArgumentError(f"serve: unknown encoder {spec!r}; use minilm[:DIR], e5[:PATH], use[:PATH] "
                                      f"or clip:PATH")
    cls = getattr(cp, _ENCODER_CLASSES[name], None)
    if cls is None:
        raise cp.DependencyError(f"serve: encoder {name!r} needs clipprompt.{_ENCODER_CLASSES[name]}, which this "
                                 f"version of clipprompt does not have")
    if name == "clip" and not path:
        raise cp.InvalidArgumentError("serve: the CLIP encoder needs weights: --encoder clip:PATH")
    return cls.from_pretrained(path or None)


# ---------------------------------------------------------------------------------------------------------------------
# errors


class ApiError(Exception):
    """A request the service refuses: HTTP status, the ClipPromptError class name, a message, and where."""

    def __init__(self, status: int, kind: str, message: str, *, item: int | None = None, field: str | None = None):
        super().__init__(message)
        self.status, self.kind, self.message, self.item, self.field = status, kind, message, item, field

    def body(self) -> dict:
        return {"error": {"type": self.kind, "message": self.message, "item": self.item, "field": self.field,
                          "status": self.status}}

    @classmethod
    def from_cp(cls, e: cp.ClipPromptError, *, item: int | None = None, field: str | None = None) -> "ApiError":
        where = f"{field}[{item}]: " if item is not None and field else ""
        return cls(400, type(e).__name__, where + str(e), item=item, field=field)


def _err_body(kind: str, message: str, status: int) -> dict:
    return {"error": {"type": kind, "message": message, "item": None, "field": None, "status": status}}


# ---------------------------------------------------------------------------------------------------------------------
# request parsing: every check names the field and the item


def _parse_body(raw: bytes) -> dict:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ApiError(400, "TokenizerError", f"request body is not valid UTF-8: byte {e.start} "
                       f"({raw[e.start:e.start + 4]!r}) {e.reason}") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ApiError(400, "InvalidArgumentError", f"request body is not JSON: {e.msg} at line {e.lineno} "
                       f"column {e.colno}") from None
    except RecursionError:
        raise ApiError(400, "InvalidArgumentError", "request body nests JSON too deeply") from None
    if not isinstance(obj, dict):
        raise ApiError(422, "InvalidArgumentError", f"request body must be a JSON object, got {_jtype(obj)}")
    return obj


def _jtype(v) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number",
            type(None): "null"}.get(type(v), type(v).__name__)


def _texts(obj: dict, cfg: ServeConfig, field: str = "input", *, allow_str: bool = True) -> list[str]:
    """The list of texts in ``obj[field]`` (a string or a list of strings), each checked: a string, valid Unicode,
    not empty or whitespace only, at most ``max_chars``; the list non-empty and at most ``max_items``."""
    if field not in obj:
        raise ApiError(422, "InvalidArgumentError", f"missing field {field!r}", field=field)
    v = obj[field]
    if isinstance(v, str) and allow_str:
        items = [v]
    elif isinstance(v, list):
        items = v
    else:
        raise ApiError(422, "InvalidArgumentError", f"{field} must be a string or a list of strings, got "
                       f"{_jtype(v)}", field=field)
    if not items:
        raise ApiError(400, "InvalidArgumentError", f"{field} is an empty list", field=field)
    if len(items) > cfg.max_items:
        raise ApiError(413, "InvalidArgumentError", f"{field} has {len(items)} items; the limit is {cfg.max_items}",
                       field=field)
    for i, t in enumerate(items):
        _check_text(t, i, cfg, field)
    return items


def _check_text(t, i: int | None, cfg: ServeConfig, field: str) -> None:
    where = f"{field}[{i}]" if i is not None else field
    if not isinstance(t, str):
        kind = "token-id arrays are not accepted; send text" if isinstance(t, list) else f"got {_jtype(t)}"
        raise ApiError(422, "InvalidArgumentError", f"{where} must be a string ({kind})", item=i, field=field)
    if len(t) > cfg.max_chars:
        raise ApiError(413, "InvalidArgumentError", f"{where} has {len(t)} characters; the limit is {cfg.max_chars}",
                       item=i, field=field)
    try:
        t.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ApiError(400, "TokenizerError", f"{where}: lone surrogate U+{ord(t[e.start]):04X} at character "
                       f"{e.start} is not valid Unicode text", item=i, field=field) from None
    if not t.strip():
        raise ApiError(400, "EmptyPromptError", f"{where}: the prompt is {'empty' if not t else 'whitespace only'}",
                       item=i, field=field)


def _opt(obj: dict, name: str, kind, default, *, lo=None, hi=None, choices=None, nullable=False):
    """An optional scalar field: type check (422), range / choice check (400)."""
    if name not in obj or (obj[name] is None and (nullable or default is None)):
        return default
    v = obj[name]
    ok = {int: isinstance(v, int) and not isinstance(v, bool),
          float: isinstance(v, (int, float)) and not isinstance(v, bool),
          bool: isinstance(v, bool), str: isinstance(v, str)}[kind]
    if not ok:
        raise ApiError(422, "InvalidArgumentError", f"{name} must be {kind.__name__}, got {_jtype(v)}", field=name)
    if kind is float and not math.isfinite(v):
        raise ApiError(400, "InvalidArgumentError", f"{name} must be finite, got {v}", field=name)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ApiError(400, "InvalidArgumentError", f"{name} must be in [{lo}, {hi}], got {v}", field=name)
    if choices is not None and v not in choices:
        raise ApiError(400, "InvalidArgumentError", f"{name} must be one of {', '.join(map(str, choices))}, got "
                       f"{v!r}", field=name)
    return kind(v)


def _normalize_all(texts: list[str], field: str = "input") -> list[str]:
    out = []
    for i, t in enumerate(texts):
        try:
            out.append(cp.normalize(t))
        except cp.ClipPromptError as e:
            raise ApiError.from_cp(e, item=i, field=field) from None
    return out


# ---------------------------------------------------------------------------------------------------------------------
# metrics (Prometheus text exposition format 0.0.4, written here)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class _Histogram:
    def __init__(self, buckets):
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)  # per bucket (not cumulative); +Inf = count
        self.sum = 0.0
        self.count = 0

    def observe(self, v: float) -> None:
        for j, b in enumerate(self.buckets):
            if v <= b:
                self.counts[j] += 1
                break
        self.sum += v
        self.count += 1

    def lines(self, name: str, labels: str) -> list[str]:
        sep = "," if labels else ""
        out, acc = [], 0
        for b, c in zip(self.buckets, self.counts):
            acc += c
            out.append(f'{name}_bucket{{{labels}{sep}le="{b}"}} {acc}')
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        lab = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{lab} {self.sum:.9g}")
        out.append(f"{name}_count{lab} {self.count}")
        return out


class Metrics:
    """Counters and histograms behind GET /metrics; thread-safe (one lock, held only to add numbers)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests: collections.Counter[tuple[str, str]] = collections.Counter()  # (endpoint, status) -> n
        self.latency: dict[str, _Histogram] = {}       # endpoint -> seconds
        self.batch_size = _Histogram(_BATCH_BUCKETS)   # texts per encoder call
        self.encode_seconds = _Histogram(_LATENCY_BUCKETS)
        self.cache_hits = 0
        self.cache_misses = 0
        self.encoded_texts = 0
        self.inflight = 0
        self.started = time.time()

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(endpoint, str(status))] += 1
            h = self.latency.get(endpoint)
            if h is None:
                h = self.latency[endpoint] = _Histogram(_LATENCY_BUCKETS)
            h.observe(seconds)

    def batch(self, n: int, seconds: float) -> None:
        with self._lock:
            self.batch_size.observe(n)
            self.encode_seconds.observe(seconds)
            self.encoded_texts += n

    def cache(self, hits: int, misses: int) -> None:
        with self._lock:
            self.cache_hits += hits
            self.cache_misses += misses

    def render(self, gauges: dict[str, tuple[str, float]]) -> str:
        out = []

        def head(name, kind, text):
            out.append(f"# HELP {name} {text}")
            out.append(f"# TYPE {name} {kind}")

        with self._lock:
            head("clipprompt_requests_total", "counter", "HTTP requests by endpoint and status code.")
            for (ep, st), n in sorted(self.requests.items()):
                out.append(f'clipprompt_requests_total{{endpoint="{ep}",status="{st}"}} {n}')
            head("clipprompt_request_duration_seconds", "histogram", "HTTP request latency by endpoint.")
            for ep, h in sorted(self.latency.items()):
                out += h.lines("clipprompt_request_duration_seconds", f'endpoint="{ep}"')
            head("clipprompt_batch_size", "histogram", "Texts per encoder call made by the micro-batcher.")
            out += self.batch_size.lines("clipprompt_batch_size", "")
            head("clipprompt_encode_duration_seconds", "histogram", "Wall time of one batched encoder call.")
            out += self.encode_seconds.lines("clipprompt_encode_duration_seconds", "")
            head("clipprompt_cache_hits_total", "counter", "Prompt-cache hits on the encoding path.")
            out.append(f"clipprompt_cache_hits_total {self.cache_hits}")
            head("clipprompt_cache_misses_total", "counter", "Prompt-cache misses on the encoding path.")
            out.append(f"clipprompt_cache_misses_total {self.cache_misses}")
            head("clipprompt_encoded_texts_total", "counter", "Texts run through the encoder.")
            out.append(f"clipprompt_encoded_texts_total {self.encoded_texts}")
            head("clipprompt_inflight_requests", "gauge", "Requests being handled now.")
            out.append(f"clipprompt_inflight_requests {self.inflight}")
        for name, (text, value) in gauges.items():
            head(name, "gauge", text)
            out.append(f"{name} {value:.9g}")
        return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------------------------
# the micro-batcher


class _Pending:
    __slots__ = ("future", "t", "texts")

    def __init__(self, texts, future, t):
        self.texts, self.future, self.t = texts, future, t


class MicroBatcher:
    """Merges the texts of concurrent ``submit`` calls into one ``encode_fn`` call.

    A batch closes when ``max_batch`` texts are pending or ``max_wait`` seconds have passed since its first text
    was queued (whichever is first); whole requests are never split, and a request larger than ``max_batch`` goes
    alone. Texts repeated within a batch are encoded once. ``encode_fn(list[str]) -> float32 [n, D]`` runs on one
    worker thread (the C call releases the GIL). If it raises ClipPromptError for a merged batch, each request is
    retried alone, and a failing request item by item, so the error reaches only the request holding the bad item
    (as ``(item_index, error)``). Must be started and closed on the event loop that calls ``submit``.
    """

    def __init__(self, encode_fn, *, max_batch: int = 64, max_wait_s: float = 0.002, metrics: Metrics | None = None,
                 after_encode=None):
        self.encode_fn = encode_fn
        self.after_encode = after_encode  # called on the worker thread with (texts, vectors): fills the cache
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_s)
        self.metrics = metrics
        self._pending: collections.deque[_Pending] = collections.deque()
        self._npending = 0
        self._wake = asyncio.Event()  # created unbound; bound to the running loop on first use (Python >= 3.10)
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="clipprompt-encode")

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Encode everything still queued, then stop the worker."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            await self._task
        self.executor.shutdown(wait=True)

    async def submit(self, texts: list[str]) -> np.ndarray:
        if self._closing:
            raise ApiError(503, "ServiceUnavailable", "the service is shutting down")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[np.ndarray] = loop.create_future()
        self._pending.append(_Pending(list(texts), fut, loop.time()))
        self._npending += len(texts)
        self._wake.set()
        return await fut

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        n = 0
        while self._pending and (not batch or n + len(self._pending[0].texts) <= self.max_batch):
            p = self._pending.popleft()
            batch.append(p)
            n += len(p.texts)
        self._npending -= n
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
            deadline = self._pending[0].t + self.max_wait_s
            while self._npending < self.max_batch and not self._closing:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            batch = [p for p in self._take() if not p.future.cancelled()]
            if batch:
                await self._process(batch)

    def _encode_sync(self, texts: list[str]) -> np.ndarray:
        t0 = time.perf_counter()
        vecs = np.ascontiguousarray(self.encode_fn(texts), dtype=np.float32)
        if self.metrics is not None:
            self.metrics.batch(len(texts), time.perf_counter() - t0)
        if self.after_encode is not None:
            self.after_encode(texts, vecs)
        return vecs

    async def _encode(self, texts: list[str]) -> np.ndarray:
        uniq = list(dict.fromkeys(texts))
        vecs = await asyncio.get_running_loop().run_in_executor(self.executor, self._encode_sync, uniq)
        if len(uniq) == len(texts):
            return vecs
        row = {t: i for i, t in enumerate(uniq)}
        return vecs[[row[t] for t in texts]]

    async def _process(self, batch: list[_Pending]) -> None:
        texts = [t for p in batch for t in p.texts]
        try:
            vecs = await self._encode(texts)
        except cp.ClipPromptError:
            if len(batch) == 1:
                await self._isolate(batch[0])
            else:
                for p in batch:
                    await self._process([p])
            return
        except Exception as e:
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(e)
            return
        pos = 0
        for p in batch:
            if not p.future.done():
                p.future.set_result(vecs[pos:pos + len(p.texts)])
            pos += len(p.texts)

    async def _isolate(self, p: _Pending) -> None:
        """A request whose encode failed: encode item by item and fail it with the first bad item."""
        rows = []
        for i, t in enumerate(p.texts):
            try:
                rows.append((await self._encode([t]))[0])
            except cp.ClipPromptError as e:
                if not p.future.done():
                    p.future.set_exception(ApiError.from_cp(e, item=i, field="input"))
                return
            except Exception as e:
                if not p.future.done():
                    p.future.set_exception(e)
                return
        if not p.future.done():
            p.future.set_result(np.stack(rows) if rows else np.zeros((0, 0), np.float32))


# ---------------------------------------------------------------------------------------------------------------------
# what the inspector shows (pure functions over the C parts; the page renders this JSON and nothing else)

_SPECIAL = {49406: "<|startoftext|>", 49407: "<|endoftext|>"}


def token_view(tok, text: str, context_length: int = 77) -> dict:
    """CLIP tokens of ``text`` as the encoder sees them, plus what the 77-token window drops.

    tokens: the whole stream SOT, content ids..., EOT (not truncated), each ``{"id", "text", "cont", "special"}``.
    Byte-level BPE splits one character over several ids; ``text`` is the characters a token completes and ``cont``
    marks the ids that only continue a character started earlier (their ``text`` is ""). ``cut``: index in
    ``tokens`` of the first id the window drops (None when it all fits); ``kept``: content ids the encoder sees,
    read from the tokenizer's own truncated row.
    """
    ids = [int(i) for i in tok.encode(text)]
    row = np.asarray(tok([text], context_length=context_length, truncate=True))[0]
    eot = np.flatnonzero(row == 49407)
    kept = int(eot[0]) - 1 if len(eot) else context_length - 2
    tokens = [{"id": 49406, "text": _SPECIAL[49406], "cont": False, "special": True}]
    i = 0
    while i < len(ids):
        # Grow a group of ids until it decodes to whole characters (at most 8 ids: 2 UTF-8 sequences).
        j = i + 1
        piece = tok.decode(ids[i:j])
        while "\ufffd" in piece and j < len(ids) and j - i < 8:
            nxt = tok.decode(ids[i:j + 1])
            j += 1
            piece = nxt
        if "\ufffd" in piece and j - i > 1:  # never completed: show each id on its own
            j, piece = i + 1, tok.decode(ids[i:i + 1])
        tokens.append({"id": ids[i], "text": piece, "cont": False, "special": False})
        tokens += [{"id": ids[m], "text": "", "cont": True, "special": False} for m in range(i + 1, j)]
        i = j
    tokens.append({"id": 49407, "text": _SPECIAL[49407], "cont": False, "special": True})
    cut = 1 + kept if kept < len(ids) else None
    return {"context_length": context_length, "n_tokens": len(ids) + 2, "tokens": tokens, "cut": cut,
            "kept": kept, "dropped": len(ids) - kept}


def chunk_view(tok, text: str, n_content: list[int]) -> dict:
    """Stable Diffusion's 75-token windows of ``text`` (``cp.sd.chunk_prompt``): each chunk's text, its token count
    and ``start``, the index in the token stream of ``token_view`` where it begins; ``aligned`` says whether the
    chunks' ids concatenated equal the stream (cuts inside a CJK run can re-tokenise differently)."""
    from . import sd

    chunks = sd.chunk_prompt(text, tok)
    out, start, cat = [], 1, []
    for c in chunks:
        cids = [int(i) for i in tok.encode(c)] if c else []
        out.append({"text": c, "n_tokens": len(cids), "start": start})
        start += len(cids)
        cat += cids
    return {"window": sd.WINDOW, "chunks": out, "aligned": cat == n_content}


# ---------------------------------------------------------------------------------------------------------------------
# the service state


class _State:
    """What one server process holds. Built by ``create_app``; the lifespan starts the batcher and the warm-up."""

    def __init__(self, cfg: ServeConfig, encoder=None):
        self.cfg = cfg
        if cfg.threads:
            cp.set_num_threads(int(cfg.threads))
        self.encoder = encoder if encoder is not None else load_encoder(cfg.encoder)
        self.model_id = str(cfg.encoder).partition(":")[0].lower() or "minilm"
        self.fingerprint = str(getattr(self.encoder, "fingerprint", self.model_id))
        self.dim = int(self.encoder.dim)
        self.is_clip = type(self.encoder).__name__ == "ClipTextEncoder"
        self.tok = cp.ClipTokenizer()
        self.metrics = Metrics()
        self.cache = self._open_cache()
        self.corpus = None
        if cfg.corpus:
            from .expand import read_pool

            self.corpus = read_pool(cfg.corpus)
        self.index = None
        if cfg.index:
            self.index = cp.FlatIPIndex.load(cfg.index)
            if self.index.dim != self.dim:
                raise cp.DimensionMismatchError(f"serve: index {cfg.index} has dim {self.index.dim}, the encoder "
                                                f"gives {self.dim}")
        self.batcher = MicroBatcher(self._encode_texts, max_batch=cfg.max_batch, max_wait_s=cfg.max_wait_ms / 1e3,
                                    metrics=self.metrics, after_encode=self._fill_cache)
        self.expander: Any = None  # a PromptExpander once the warm-up has built it
        self._warm = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="clipprompt-warm")
        self.expander_future: concurrent.futures.Future[Any] | None = None
        self.index_future: concurrent.futures.Future[Any] | None = None
        self.draining = False
        self.started = time.time()

    def _open_cache(self):
        cfg = self.cfg
        if cfg.cache_bytes == 0:
            return None
        if cfg.cache and os.path.exists(cfg.cache):
            c = cp.PromptCache.load(cfg.cache)
            return c
        return cp.PromptCache(capacity_bytes=int(cfg.cache_bytes))

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.encoder.encode(texts, normalize=True), dtype=np.float32)

    def _fill_cache(self, texts, vecs) -> None:
        if self.cache is not None:
            for t, v in zip(texts, vecs):
                self.cache.put(self.fingerprint, t, v)

    # -- warm-up: the expander's pool and the corpus index are embedded on a background thread ----------------------
    def start_warmup(self) -> None:
        self.expander_future = self._warm.submit(self._build_expander)
        if self.index is None and self.corpus is not None:
            self.index_future = self._warm.submit(self._build_index)

    def _build_expander(self):
        from .expand import PromptExpander

        cache = self.cache if self.cache is not None else cp.PromptCache()
        self.expander = PromptExpander(self.cfg.pool, self.encoder, cache=cache,
                                       tokenizer=self.tok)
        return self.expander

    def _build_index(self):
        vecs = (self.cache.get_or_encode(self.encoder, self.corpus) if self.cache is not None
                else self.encoder.encode(self.corpus, normalize=True))
        index = cp.FlatIPIndex(self.dim)
        index.add(np.ascontiguousarray(vecs, np.float32))
        self.index = index
        return index

    async def get_expander(self):
        if self.expander is None and self.expander_future is not None:
            try:
                await asyncio.wrap_future(self.expander_future)
            except cp.ClipPromptError as e:
                raise ApiError(503, type(e).__name__, f"the expander could not be built: {e}") from None
        return self.expander

    async def get_index(self):
        if self.index is None and self.index_future is not None:
            try:
                await asyncio.wrap_future(self.index_future)
            except cp.ClipPromptError as e:
                raise ApiError(503, type(e).__name__, f"the corpus index could not be built: {e}") from None
        if self.index is None:
            raise ApiError(400, "IndexStateError", "no index is loaded: start the service with --index FILE or "
                           "--corpus FILE")
        return self.index

    def warm_status(self, fut) -> str:
        if fut is None:
            return "off"
        if not fut.done():
            return "loading"
        return "error" if fut.exception() is not None else "ready"

    # -- the encoding path: cache in front of the micro-batcher -------------------------------------------------------
    async def embed(self, texts: list[str]) -> tuple[np.ndarray, list[bool]]:
        """Vectors [n, dim] of already normalised texts, and per text whether the cache answered."""
        out = np.empty((len(texts), self.dim), np.float32)
        hit = [False] * len(texts)
        miss = []
        if self.cache is not None:
            for i, t in enumerate(texts):
                v = self.cache.get(self.fingerprint, t)
                if v is None:
                    miss.append(i)
                else:
                    out[i] = v
                    hit[i] = True
        else:
            miss = list(range(len(texts)))
        self.metrics.cache(len(texts) - len(miss), len(miss))
        if miss:
            try:
                vecs = await self.batcher.submit([texts[i] for i in miss])
            except ApiError as e:
                if e.item is not None:  # the batcher names the item of the sub-list it was given
                    e.item = miss[e.item]
                    e.message = f"input[{e.item}]: " + e.message.split(": ", 1)[-1]
                raise
            out[miss] = vecs
        return out, hit

    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens each text costs the encoder (CLS/SEP or SOT/EOT included), for ``usage``."""
        enc = self.encoder
        if hasattr(enc, "count_tokens"):
            return [int(n) for n in enc.count_tokens(texts)]
        if self.is_clip:
            return [min(len(self.tok.encode(t)) + 2, int(getattr(enc, "context_length", 77))) for t in texts]
        tokenize = getattr(enc, "_tokenize", None)
        if tokenize is not None:
            r = tokenize(texts)
            if isinstance(r, tuple) and len(r) == 2:
                return [int(n) for n in np.asarray(r[1]).sum(axis=1)]
        return [len(self.tok.encode(t)) + 2 for t in texts]


# ---------------------------------------------------------------------------------------------------------------------
# the app


_ENDPOINTS = ("/", "/health", "/metrics", "/v1/models", "/v1/embeddings", "/v1/normalize", "/v1/segment",
              "/v1/expand", "/v1/search", "/v1/inspect", "/v1/sd/encode")


class _MetricsASGI:
    """Request counts, latency and in-flight gauge for /metrics: a plain ASGI middleware (no body buffering)."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in _ENDPOINTS else "other"
        status = [500]

        async def send_wrap(msg: Any) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        t0 = time.perf_counter()
        self.metrics.inflight += 1
        try:
            await self.app(scope, receive, send_wrap)
        finally:
            self.metrics.inflight -= 1
            self.metrics.request(endpoint, status[0], time.perf_counter() - t0)


def inspector_page() -> tuple[bytes, str]:
    """The inspector page (clipprompt/inspector.html: one file, its script and style inline) and the
    Content-Security-Policy that serves it: nothing loads from elsewhere, and only that exact script and style
    may run (their sha256 hashes), so text from a prompt can never become markup or code."""
    import hashlib
    import re
    from importlib import resources

    html = resources.files("clipprompt").joinpath("inspector.html").read_bytes()

    def hashes(tag):
        return " ".join("'sha256-" + base64.b64encode(hashlib.sha256(m.group(1)).digest()).decode() + "'"
                        for m in re.finditer(rb"<" + tag + rb">(.*?)</" + tag + rb">", html, re.S))

    csp = (f"default-src 'none'; script-src {hashes(b'script')}; style-src {hashes(b'style')}; "
           "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return html, csp


def create_app(cfg: ServeConfig | None = None, *, encoder=None):
    """The FastAPI application for ``cfg`` (encoder loaded here unless given; raises ClipPromptError on a bad
    encoder, index or cache file)."""
    _require_web()
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException

    cfg = (cfg or ServeConfig()).check()
    st = _State(cfg, encoder)

    @asynccontextmanager
    async def lifespan(app):
        st.batcher.start()
        st.start_warmup()
        try:
            yield
        finally:
            st.draining = True
            await st.batcher.close()
            st._warm.shutdown(wait=True, cancel_futures=True)
            if cfg.cache and st.cache is not None:
                try:
                    os.makedirs(os.path.dirname(os.path.abspath(cfg.cache)), exist_ok=True)
                    st.cache.save(cfg.cache)
                except (OSError, cp.ClipPromptError) as e:
                    print(f"clipprompt serve: could not save the cache to {cfg.cache}: {e}", file=sys.stderr)

    app = FastAPI(title="clipprompt", version=cp.__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None)  # FastAPI's docs pages load their scripts from a CDN: off
    app.state.clipprompt = st

    # -- metrics + in-flight accounting: a plain ASGI middleware (no body buffering) --------------------------------
    app.add_middleware(_MetricsASGI, metrics=st.metrics)

    # -- error mapping: every refusal is JSON naming the error class -------------------------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(request, e: ApiError):
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(cp.ClipPromptError)
    async def _cp_error(request, e: cp.ClipPromptError):
        return JSONResponse(ApiError.from_cp(e).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, e):
        kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(e.status_code, "HTTPError")
        return JSONResponse(_err_body(kind, str(e.detail), e.status_code), status_code=e.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, e):
        return JSONResponse(_err_body("InvalidArgumentError", str(e.errors()), 422), status_code=422)

    @app.exception_handler(Exception)
    async def _internal(request, e):  # a bug, not a bad input: say what it was
        return JSONResponse(_err_body(type(e).__name__, f"internal error: {e}", 500), status_code=500)

    async def body(request: Request) -> dict:
        cl = request.headers.get("content-length")
        if cl is not None:
            if not cl.isdigit():
                raise ApiError(400, "InvalidArgumentError", f"bad Content-Length {cl[:32]!r}")
            if int(cl) > cfg.max_body_bytes:
                raise ApiError(413, "InvalidArgumentError", f"request body is {cl} bytes; the limit is "
                               f"{cfg.max_body_bytes}")
        parts, n = [], 0
        async for chunk in request.stream():
            n += len(chunk)
            if n > cfg.max_body_bytes:
                raise ApiError(413, "InvalidArgumentError", f"request body is over the limit of "
                               f"{cfg.max_body_bytes} bytes")
            parts.append(chunk)
        return _parse_body(b"".join(parts))

    def check_model(obj: dict) -> None:
        m = _opt(obj, "model", str, None)
        if m is not None and m not in (st.model_id, st.fingerprint, cfg.encoder):
            raise ApiError(400, "InvalidArgumentError", f"unknown model {m!r}; this service serves "
                           f"{st.model_id!r} ({st.fingerprint})", field="model")

    # -- endpoints ---------------------------------------------------------------------------------------------------
    @app.get("/health")
    async def health():
        ok = not st.draining
        return JSONResponse({"status": "ok" if ok else "draining", "model": st.model_id, "encoder": st.fingerprint,
                             "dim": st.dim, "expander": st.warm_status(st.expander_future),
                             "index": (len(st.index) if st.index is not None else
                                       st.warm_status(st.index_future)),
                             "cache": st.cache.stats() if st.cache is not None else None,
                             "uptime_s": round(time.time() - st.started, 3), "version": cp.__version__},
                            status_code=200 if ok else 503)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": st.model_id, "object": "model", "owned_by": "clipprompt",
                                            "created": int(st.started), "fingerprint": st.fingerprint,
                                            "dim": st.dim}]}

    @app.get("/metrics")
    async def metrics():
        gauges = {"clipprompt_uptime_seconds": ("Seconds since the service started.", time.time() - st.started)}
        if st.cache is not None:
            s = st.cache.stats()
            gauges["clipprompt_cache_entries"] = ("Entries in the prompt cache.", s["entries"])
            gauges["clipprompt_cache_bytes"] = ("Bytes held by the prompt cache.", s["bytes"])
            gauges["clipprompt_cache_hit_rate"] = ("Prompt-cache hit rate since start (all users).", s["hit_rate"])
        if st.index is not None:
            gauges["clipprompt_index_vectors"] = ("Vectors in the loaded index.", len(st.index))
        return Response(st.metrics.render(gauges), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        obj = await body(request)
        check_model(obj)
        fmt = _opt(obj, "encoding_format", str, "float", choices=("float", "base64"))
        dims = _opt(obj, "dimensions", int, None)
        if dims is not None and dims != st.dim:
            raise ApiError(400, "DimensionMismatchError", f"dimensions={dims}: this model gives {st.dim}",
                           field="dimensions")
        texts = _normalize_all(_texts(obj, cfg))
        vecs, _ = await st.embed(texts)
        ntok = sum(st.token_counts(texts))
        data = []
        for i, v in enumerate(vecs):
            emb = base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") if fmt == "base64" else v.tolist()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        return {"object": "list", "data": data, "model": st.model_id,
                "usage": {"prompt_tokens": ntok, "total_tokens": ntok}}

    @app.post("/v1/normalize")
    async def normalize(request: Request):
        obj = await body(request)
        lower = _opt(obj, "lowercase", bool, False)
        form = _opt(obj, "form", str, "NFKC", choices=("NFC", "NFKC", "none"))
        texts = _texts(obj, cfg)
        out = []
        for i, t in enumerate(texts):
            try:
                out.append({"index": i, "text": cp.normalize(t, lowercase=lower, form=form)})
            except cp.ClipPromptError as e:
                raise ApiError.from_cp(e, item=i, field="input") from None
        return {"object": "list", "data": out}

    @app.post("/v1/segment")
    async def segment(request: Request):
        obj = await body(request)
        lang = _opt(obj, "lang", str, "auto", choices=("auto", "zh", "ja", "none"))
        texts = _texts(obj, cfg)
        out = []
        for i, t in enumerate(texts):
            try:
                out.append({"index": i, "segments": list(cp.segment(t, lang=lang))})
            except cp.ClipPromptError as e:
                raise ApiError.from_cp(e, item=i, field="input") from None
        return {"object": "list", "data": out}

    def expand_args(obj):
        return dict(top_k=_opt(obj, "top_k", int, 5, lo=0, hi=cfg.max_k),
                    min_score=_opt(obj, "min_score", float, None, lo=-1.0, hi=1.0),
                    max_tokens=_opt(obj, "max_tokens", int, 77, lo=2, hi=77 * 64),
                    mmr=_opt(obj, "mmr", float, None, lo=0.0, hi=1.0))

    def expansion_json(e) -> dict:
        return {"text": e.text, "tokens": e.tokens,
                "added": [{"phrase": p, "score": float(s)} for p, s in e.added],
                "dropped": [{"phrase": p, "score": float(s), "reason": r} for p, s, r in e.dropped]}

    @app.post("/v1/expand")
    async def expand(request: Request):
        obj = await body(request)
        kw = expand_args(obj)
        texts = _normalize_all(_texts(obj, cfg))
        await st.embed(texts)  # through the batcher: the expander then finds the query vectors in the cache
        exp = await st.get_expander()
        outs = await asyncio.to_thread(exp.expand_batch, texts, **kw)
        return {"object": "list", "data": [dict(index=i, **expansion_json(e)) for i, e in enumerate(outs)]}

    def neighbours(index, D, I) -> list[list[dict]]:
        rows = []
        for d, ids in zip(D, I):
            row = []
            for s, j in zip(d.tolist(), ids.tolist()):
                if j < 0:
                    continue
                n = {"id": int(j), "score": float(s)}
                if st.corpus is not None and 0 <= j < len(st.corpus):
                    n["text"] = st.corpus[j]
                row.append(n)
            rows.append(row)
        return rows

    @app.post("/v1/search")
    async def search(request: Request):
        obj = await body(request)
        k = _opt(obj, "k", int, 10, lo=1, hi=cfg.max_k)
        texts = _normalize_all(_texts(obj, cfg))
        index = await st.get_index()
        if len(index) == 0:
            raise ApiError(400, "IndexStateError", "the loaded index is empty")
        q, _ = await st.embed(texts)
        D, I = await asyncio.to_thread(index.search, q, k)
        return {"object": "list", "data": [{"index": i, "neighbors": n}
                                           for i, n in enumerate(neighbours(index, D, I))]}

    @app.post("/v1/sd/encode")
    async def sd_encode(request: Request):
        obj = await body(request)
        if not st.is_clip:
            raise ApiError(400, "DependencyError", f"/v1/sd/encode needs CLIP text weights; this service runs "
                           f"{st.model_id!r} (start it with --encoder clip:PATH)")
        if "prompt" not in obj:
            raise ApiError(422, "InvalidArgumentError", "missing field 'prompt'", field="prompt")
        prompt = obj["prompt"]
        _check_text(prompt, None, cfg, "prompt")
        negative = obj.get("negative")
        if negative is not None:
            if not isinstance(negative, str):
                raise ApiError(422, "InvalidArgumentError", f"negative must be a string or null, got "
                               f"{_jtype(negative)}", field="negative")
            if len(negative) > cfg.max_chars:
                raise ApiError(413, "InvalidArgumentError", f"negative has {len(negative)} characters; the limit "
                               f"is {cfg.max_chars}", field="negative")
        layer = _opt(obj, "layer", int, -1, lo=-int(st.encoder.config["num_hidden_layers"]),
                     hi=int(st.encoder.config["num_hidden_layers"]))
        fmt = _opt(obj, "encoding_format", str, "base64", choices=("float", "base64"))
        from . import sd

        def run_pair():
            return sd.encode_pair(st.encoder, cp.normalize(prompt), negative, layer, tokenizer=st.tok,
                                  cache=st.cache)

        try:  # on the encoder's thread, between micro-batches
            cond, uncond = await asyncio.get_running_loop().run_in_executor(st.batcher.executor, run_pair)
        except cp.ClipPromptError as e:
            raise ApiError.from_cp(e, field="prompt") from None

        def arr(a):
            a = np.ascontiguousarray(a, np.float32)
            return base64.b64encode(a.astype("<f4").tobytes()).decode("ascii") if fmt == "base64" else a.tolist()

        return {"object": "sd.embeddings", "model": st.model_id, "shape": list(cond.shape), "dtype": "float32",
                "encoding_format": fmt, "prompt_embeds": arr(cond), "negative_prompt_embeds": arr(uncond),
                "chunks": len(sd.chunk_prompt(cp.normalize(prompt), st.tok))}

    @app.post("/v1/inspect")
    async def inspect(request: Request):
        obj = await body(request)
        kw = expand_args(obj)
        k = _opt(obj, "k", int, 5, lo=1, hi=cfg.max_k)
        v = obj.get("input")
        if not isinstance(v, list):
            _texts(obj, cfg)  # one prompt: a bad one is refused like everywhere else; wrong types -> 422
        raw = [v] if isinstance(v, str) else v
        if not raw:
            raise ApiError(400, "InvalidArgumentError", "input is an empty list", field="input")
        if len(raw) > cfg.max_items:
            raise ApiError(413, "InvalidArgumentError", f"input has {len(raw)} items; the limit is "
                           f"{cfg.max_items}", field="input")
        t_all = time.perf_counter()
        # Stage 1 (per item, CPU): validate, normalise, segment, tokenise, chunk. A bad item reports its own error.
        items = await asyncio.to_thread(lambda: [_inspect_text(st, cfg, i, t) for i, t in enumerate(raw)])
        good = [it for it in items if "error" not in it]
        if good:
            # Stage 2: one batched encode through the cache for every good item.
            t0 = time.perf_counter()
            vecs, hit = await st.embed([it["normalized"] for it in good])
            t_enc = (time.perf_counter() - t0) * 1e3
            exp = await st.get_expander()
            index = st.index
            if index is None and st.index_future is not None:
                index = await st.get_index()

            def stage3():
                for it, vec, h in zip(good, vecs, hit):
                    it["cache"] = "hit" if h else "miss"
                    it["times_ms"]["encode"] = t_enc
                    t = time.perf_counter()
                    e = exp.expand_batch([it["normalized"]], words=[it["segments"]], **kw)[0]
                    it["expansion"] = expansion_json(e)
                    it["times_ms"]["expand"] = (time.perf_counter() - t) * 1e3
                    t = time.perf_counter()
                    D, I = exp.index.search(vec[None, :], k)
                    it["neighbors"] = {"pool": [{"phrase": exp.pool[j], "score": float(s)}
                                                for s, j in zip(D[0].tolist(), I[0].tolist()) if j >= 0],
                                       "index": None}
                    if index is not None and len(index):
                        D, I = index.search(vec[None, :], k)
                        it["neighbors"]["index"] = neighbours(index, D, I)[0]
                    it["times_ms"]["search"] = (time.perf_counter() - t) * 1e3

            await asyncio.to_thread(stage3)
        return {"object": "inspection", "model": st.model_id, "encoder": st.fingerprint, "items": items,
                "params": dict(kw, k=k), "times_ms": {"total": (time.perf_counter() - t_all) * 1e3}}

    html, csp = inspector_page()

    @app.get("/")
    async def page():
        return Response(html, media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff",
                                 "Cache-Control": "no-cache"})

    return app


def _inspect_text(st: _State, cfg: ServeConfig, i: int, raw) -> dict:
    """Stage 1 of /v1/inspect for one item: the CPU stages, or {"error": ...} for a bad item."""
    # echo the input; a lone surrogate cannot be UTF-8 encoded, so it is shown as its escape (\\ud800)
    echo = raw.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(raw, str) else None
    it: dict[str, Any] = {"index": i, "input": echo}
    times = {}
    try:
        _check_text(raw, i, cfg, "input")
        t = time.perf_counter()
        try:
            norm = cp.normalize(raw)
        except cp.ClipPromptError as e:
            raise ApiError.from_cp(e, item=i, field="input") from None
        times["normalize"] = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
        segs = list(cp.segment(norm))
        times["segment"] = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
        clip = token_view(st.tok, norm)
        times["tokenize"] = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
        content = [tk["id"] for tk in clip["tokens"][1:-1]]
        sdv = chunk_view(st.tok, norm, content)
        times["chunk"] = (time.perf_counter() - t) * 1e3
    except ApiError as e:
        it["error"] = e.body()["error"]
        return it
    it.update({"normalized": norm, "segments": segs, "clip": clip, "sd": sdv, "times_ms": times})
    return it


# ---------------------------------------------------------------------------------------------------------------------
# running it


def run(cfg: ServeConfig) -> int:
    """Load everything, serve until SIGTERM / SIGINT, drain, return 0. ClipPromptError before binding -> raised."""
    _require_web()
    import uvicorn

    app = create_app(cfg)
    st = app.state.clipprompt
    print(f"clipprompt serve: http://{cfg.host}:{cfg.port}/  encoder {st.fingerprint} (dim {st.dim}), "
          f"max_batch {cfg.max_batch}, max_wait {cfg.max_wait_ms} ms, cache "
          f"{'off' if st.cache is None else cfg.cache or 'in memory'}, index "
          f"{cfg.index or (cfg.corpus and 'from corpus') or 'none'}", flush=True)
    config = uvicorn.Config(app, host=cfg.host, port=int(cfg.port), log_level=cfg.log_level, access_log=False,
                            timeout_graceful_shutdown=math.ceil(cfg.drain_s), lifespan="on")
    # uvicorn drains on SIGTERM / SIGINT, then re-raises the signal to the handler that was installed before it
    # ran; with these no-op handlers in place, a drained shutdown ends the process with status 0.
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: None)
    uvicorn.Server(config).run()
    return 0


def add_arguments(p) -> None:
    """The ``serve`` subcommand's options (used by clipprompt.cli)."""
    d = ServeConfig()
    p.add_argument("--host", default=d.host, help="address to bind (default: %(default)s)")
    p.add_argument("--port", type=int, default=d.port, help="TCP port (default: %(default)s)")
    p.add_argument("--encoder", default=d.encoder, help="minilm[:DIR] | e5[:PATH] | use[:PATH] | clip:PATH "
                   "(default: %(default)s)")
    p.add_argument("--index", metavar="FILE", help="a saved FlatIPIndex for /v1/search")
    p.add_argument("--corpus", metavar="FILE", help="one text per line: the text of id i (and the index, "
                   "embedded at start, when --index is absent)")
    p.add_argument("--cache", metavar="FILE", help="PromptCache file: loaded at start if present, saved at exit")
    p.add_argument("--cache-bytes", type=int, default=d.cache_bytes, help="cache capacity; 0 = no cache")
    p.add_argument("--pool", metavar="FILE", help="expansion phrase pool (default: the shipped taxonomy)")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="texts per encoder call (%(default)s)")
    p.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms,
                   help="longest wait for a batch to fill (%(default)s ms)")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes)
    p.add_argument("--max-items", type=int, default=d.max_items, help="texts per request")
    p.add_argument("--max-chars", type=int, default=d.max_chars, help="characters per text")
    p.add_argument("--max-k", type=int, default=d.max_k, help="largest k / top_k a request may ask for")
    p.add_argument("--threads", type=int, help="C threads (cp.set_num_threads)")
    p.add_argument("--drain-seconds", type=float, default=d.drain_s, dest="drain_s",
                   help="how long shutdown waits for requests in flight")
    p.add_argument("--log-level", default=d.log_level, choices=["critical", "error", "warning", "info", "debug"])


def config_from_args(args) -> ServeConfig:
    names = set(asdict(ServeConfig()))
    return ServeConfig(**{k: v for k, v in vars(args).items() if k in names and v is not None}).check()


# ---------------------------------------------------------------------------------------------------------------------
# a service in a child process (tests, benchmarks, notebooks)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (the OS picks it)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ServiceProcess:
    """``python -m clipprompt serve ARGS`` in a child process on a free loopback port.

    ``with ServiceProcess(["--pool", "pool.txt"]) as svc: httpx.get(svc.url + "/health")``. ``start`` waits (at
    most ``timeout`` s) until /health answers 200 and raises ClipPromptError with the child's output if it exits or
    never gets there; ``stop`` sends SIGTERM (the service drains) and waits at most ``timeout`` s, then kills.
    """

    def __init__(self, args=(), *, host: str = "127.0.0.1", port: int | None = None, timeout: float = 180.0,
                 env: dict | None = None, cwd: str | None = None):
        self.host, self.port = host, port or free_port(host)
        self.args = [str(a) for a in args]
        self.timeout = float(timeout)
        self.env, self.cwd = env, cwd
        self.proc: Any = None  # subprocess.Popen while running
        self.url = f"http://{host}:{self.port}"
        self.returncode: int | None = None
        self.output = ""

    def start(self) -> "ServiceProcess":
        import subprocess
        import tempfile
        import urllib.request

        self._log = tempfile.TemporaryFile()  # noqa: SIM115  (held until stop(), which closes it)
        cmd = [sys.executable, "-m", "clipprompt", "serve", "--host", self.host, "--port", str(self.port), *self.args]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd)
        t_end = time.monotonic() + self.timeout
        while time.monotonic() < t_end:
            if self.proc.poll() is not None:
                self._collect()
                raise cp.ClipPromptError(f"the service exited with {self.proc.returncode}:\n{self.output}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                    h = json.loads(r.read())
                    if r.status == 200 and "loading" not in (h.get("expander"), h.get("index")):
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise cp.ClipPromptError(f"the service did not become healthy in {self.timeout:.0f} s:\n{self.output}")

    def pid(self) -> int:
        return int(self.proc.pid)

    def _collect(self) -> None:
        self._log.seek(0)
        self.output = self._log.read().decode("utf-8", "replace")

    def stop(self) -> int | None:
        """SIGTERM, wait for the drain; the exit code (or -9 if it had to be killed)."""
        import signal
        import subprocess

        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self.returncode = self.proc.returncode
        self._collect()
        self._log.close()
        self.proc = None
        return self.returncode

    def __enter__(self) -> "ServiceProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
