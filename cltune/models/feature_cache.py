"""A frozen vision tower runs once per image: its outputs are memoised per image.

:func:`cache_tower_features` wraps the ``forward`` of a model's vision tower (the parts that
:mod:`cltune.models.scopes` calls ``vision_tower``: LLaVA-family ``vision_tower``, Idefics3 /
SmolVLM ``vision_model``, cltune's ``tiny`` and ``smol``). A call is served from the memo when

- the tower's outputs cannot carry gradients or randomness: no tower parameter requires grad
  (a frozen tower is a fixed feature extractor and is computed in eval mode), or gradients are
  off and the tower is in eval mode;
- no forward hook watches a module inside the tower (importance measures such as OBS hook the
  layers they score; they see every image);
- it gets one image per row (``pixel_values`` of 4 dimensions), and every tensor it returns has
  one row per image. Towers fed flattened patches (Qwen2-VL's ``visual``) never qualify, since a
  row of theirs is not an image.

Each row is keyed by the bytes of its pixels (and of any other per-row tensor argument), the
call's other arguments (``output_hidden_states`` names the layers LLaVA reads), and a fingerprint
of the tower's weights and buffers, so features of changed weights are never reused. Only the
hidden states a call asks for are kept. The memo is bounded in bytes (least recently used rows go
first) and is not copied with the model: a copy starts empty.

The training option ``feature_memo`` (default on) turns it on or off for a run
(:func:`use_feature_memo`); ``results.json`` records what it did (``feature_memo``: on or off,
rows served and computed).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from cltune.models.scopes import part_module

DEFAULT_MAX_BYTES = 2**30
ATTRIBUTE = "cltune_feature_cache"


class _Rows(OrderedDict):
    """The memo's rows and their size in bytes; a deep copy of a model starts with none of them."""

    nbytes = 0

    def __deepcopy__(self, memo: dict) -> _Rows:
        return _Rows()


class TowerFeatureCache:
    """The memo of one vision tower; counts the rows it served (``hits``) and computed (``misses``)."""

    def __init__(self, tower: nn.Module, max_bytes: int = DEFAULT_MAX_BYTES):
        self.tower = tower
        self.compute: Callable[..., Any] = tower.forward
        self.max_bytes = max_bytes
        self.enabled = True
        self.rows = _Rows()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self.rows)

    def clear(self) -> None:
        """Forget every memoised row and the hit and miss counts."""
        self.rows = _Rows()
        self.hits = self.misses = 0

    def _cacheable(self) -> bool:
        if not self.enabled:
            return False
        frozen = not any(p.requires_grad for p in self.tower.parameters())
        return (frozen or (not torch.is_grad_enabled() and not self.tower.training)) and not self._observed()

    def _observed(self) -> bool:
        """Whether a forward hook watches a module inside the tower (a memo would starve it).

        transformers' own output-capturing hooks do not count: they collect the hidden states
        that the memo stores."""
        inner = [m for m in self.tower.modules() if m is not self.tower]
        hooks = [
            *nn.modules.module._global_forward_hooks.values(),
            *(h for m in inner for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())),
        ]
        return any(not getattr(h, "__module__", "").startswith("transformers.") for h in hooks)

    def _weights_key(self) -> str:
        """A fingerprint of the weights and buffers: per tensor its shape, sum and sum of squares."""
        digest = hashlib.sha1()
        with torch.no_grad():
            for name, t in self.tower.state_dict().items():
                wide = t.double() if t.is_floating_point() else t.long()
                stats = (wide.sum().item(), wide.square().sum().item())
                digest.update(repr((name, tuple(t.shape), stats)).encode())
        return digest.hexdigest()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The tower's forward, served per image from the memo when that cannot change the result."""
        pixels = args[0] if args else kwargs.get("pixel_values")
        if not (self._cacheable() and torch.is_tensor(pixels) and pixels.dim() == 4 and len(pixels)):
            return self.compute(*args, **kwargs)
        batch = len(pixels)
        row_args = [a for a in (*args, *kwargs.values()) if torch.is_tensor(a)]
        if any(a.dim() == 0 or len(a) != batch for a in row_args):
            return self.compute(*args, **kwargs)
        call = repr(
            (
                self._weights_key(),
                [a if not torch.is_tensor(a) else "row" for a in args],
                {k: v if not torch.is_tensor(v) else "row" for k, v in sorted(kwargs.items())},
            )
        )
        keys = [_row_key(call, [a[i] for a in row_args]) for i in range(batch)]
        found = {key: self.rows[key] for key in keys if key in self.rows}
        for key in found:
            self.rows.move_to_end(key)
        first: dict[str, int] = {}
        for i, key in enumerate(keys):
            first.setdefault(key, i)
        missing = [i for key, i in first.items() if key not in found]
        if missing:
            outputs = self._compute_rows(args, kwargs, missing)
            if outputs is None:
                return self.compute(*args, **kwargs)
            for i, row in zip(missing, outputs, strict=True):
                found[keys[i]] = row
                self._store(keys[i], row)
        self.misses += len(missing)
        self.hits += batch - len(missing)
        return _stack([found[key] for key in keys])

    def _compute_rows(self, args: tuple, kwargs: dict, rows: list[int]) -> list | None:
        """The tower's output for ``rows`` of the batch, split per row (None: not per-row)."""
        index = torch.tensor(rows)
        pick = lambda a: a.index_select(0, index.to(a.device)) if torch.is_tensor(a) else a  # noqa: E731
        training = self.tower.training
        self.tower.eval()
        try:
            with torch.no_grad():
                output = self.compute(*map(pick, args), **{k: pick(v) for k, v in kwargs.items()})
        finally:
            self.tower.train(training)
        return _split(output, len(rows), kwargs.get("output_hidden_states"))

    def _store(self, key: str, row: tuple) -> None:
        self.rows[key] = row
        self.rows.nbytes += _nbytes(row)
        while self.rows.nbytes > self.max_bytes and len(self.rows) > 1:
            _, dropped = self.rows.popitem(last=False)
            self.rows.nbytes -= _nbytes(dropped)


def _row_key(call: str, tensors: list[torch.Tensor]) -> str:
    """A digest of the call and of each tensor's dtype, shape and raw bytes (any dtype: the bytes
    are read as ``uint8``, so bfloat16, which numpy lacks, hashes like every other dtype)."""
    digest = hashlib.sha1(call.encode())
    for t in tensors:
        digest.update(repr((t.dtype, tuple(t.shape))).encode())
        digest.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _kept_layers(requested: Any, count: int) -> set[int]:
    """Indices of the hidden states a call asked for (``output_hidden_states``: bool, int or list)."""
    if requested is True or requested is None:
        return set(range(count))
    if requested is False:
        return set()
    layers = [requested] if isinstance(requested, int) else list(requested)
    return {layer % count for layer in layers}


def _split(output: Any, batch: int, requested: Any) -> list | None:
    """``output`` as one ``(class, fields)`` tuple per row, or None when a field is not per row."""
    if not hasattr(output, "items"):
        return None
    fields: dict[str, Any] = {}
    for name, value in output.items():
        if torch.is_tensor(value) and value.dim() and len(value) == batch:
            fields[name] = value.detach()
        elif name == "hidden_states" and isinstance(value, tuple):
            if any(
                h is not None and (not torch.is_tensor(h) or h.dim() == 0 or len(h) != batch) for h in value
            ):
                return None
            kept = _kept_layers(requested, len(value))
            fields[name] = tuple(
                h.detach() if i in kept and h is not None else None for i, h in enumerate(value)
            )
        elif value is not None:
            return None
    rows = []
    for i in range(batch):
        row = {
            name: tuple(h[i].clone() if h is not None else None for h in value)
            if isinstance(value, tuple)
            else value[i].clone()
            for name, value in fields.items()
        }
        rows.append((type(output), row))
    return rows


def _stack(rows: list[tuple]) -> Any:
    output_class, first = rows[0]
    fields = {}
    for name, value in first.items():
        if isinstance(value, tuple):
            fields[name] = tuple(
                _batch([row[name][i] for _, row in rows]) if h is not None else None
                for i, h in enumerate(value)
            )
        else:
            fields[name] = _batch([row[name] for _, row in rows])
    return output_class(**fields)


def _batch(rows: list[torch.Tensor]) -> torch.Tensor:
    """The rows as one batch laid out in memory as the tower laid out its own (a row's clone keeps
    that layout): a matmul rounds differently on a transposed layout, so a plain ``stack`` would
    change the results downstream in their last bits."""
    order = sorted(range(rows[0].dim()), key=rows[0].stride, reverse=True)  # outermost dim first
    stacked = torch.stack([row.permute(order) for row in rows])
    return stacked.permute(0, *(order.index(d) + 1 for d in range(len(order))))


def _nbytes(row: tuple) -> int:
    _, fields = row
    tensors = [t for v in fields.values() for t in (v if isinstance(v, tuple) else (v,)) if t is not None]
    return sum(t.numel() * t.element_size() for t in tensors)


def cache_tower_features(model: nn.Module, max_bytes: int = DEFAULT_MAX_BYTES) -> TowerFeatureCache | None:
    """Memoise the outputs of ``model``'s vision tower per image (idempotent); returns the memo,
    or None for a model without a vision tower. ``cache.enabled = False`` turns it off."""
    tower = part_module(model, "vision_tower")
    if tower is None:
        return None
    cache = getattr(tower, ATTRIBUTE, None)
    if cache is None:
        cache = TowerFeatureCache(tower, max_bytes)
        setattr(tower, ATTRIBUTE, cache)
        tower.forward = cache.forward
    return cache


def installed_memo(model: nn.Module) -> TowerFeatureCache | None:
    """The memo on ``model``'s vision tower, or None when none was installed."""
    tower = part_module(model, "vision_tower")
    return None if tower is None else getattr(tower, ATTRIBUTE, None)


def use_feature_memo(model: nn.Module, enabled: bool) -> TowerFeatureCache | None:
    """The training option ``feature_memo``: install and turn on the memo, or turn an installed
    one off (the tower then computes every image); returns the memo (None: none, or no tower)."""
    cache = cache_tower_features(model) if enabled else installed_memo(model)
    if cache is not None:
        cache.enabled = enabled
    return cache


def memo_summary(model: nn.Module) -> dict[str, Any] | None:
    """For ``results.json``: whether ``model``'s memo is on and the rows it served (``hits``) and
    computed (``misses``) in this process; None when the model has no memo."""
    cache = installed_memo(model)
    return None if cache is None else {"enabled": cache.enabled, "hits": cache.hits, "misses": cache.misses}
