"""How far tuning moved a model: relative weight change per module, and representation
similarity per layer (linear CKA)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import pandas as pd
import torch
from torch import Tensor, nn

from cltune.analysis.layout import PEFT_PREFIX, base_name, place
from cltune.merging.lora import lora_delta_weights
from cltune.merging.task_vectors import task_vector

POOLINGS = ("mean", "tokens")
Weights = nn.Module | Mapping[str, Tensor]


def effective_weights(model: nn.Module) -> dict[str, Tensor]:
    """The model's parameters under the base model's names, with a PEFT LoRA adapter merged.

    For a ``PeftModel`` the active adapter's exact ``ΔW = s · B A``
    (:func:`cltune.merging.lora.lora_delta_weights`) is added to each adapted weight, so the
    result is what ``merge_and_unload`` would give, without copying the model. Other adapters
    than the active one are ignored.
    """
    config = getattr(model, "peft_config", None)
    if not config:
        return {name: p.detach() for name, p in model.named_parameters()}
    adapter = model.active_adapter
    factors: dict[str, Tensor] = {}
    weights: dict[str, Tensor] = {}
    for name, p in model.named_parameters():
        if ".lora_" in name:
            if f".{adapter}." in name:
                factors[name] = p.detach()
        else:
            weights[base_name(name)] = p.detach()
    fan_in_fan_out = getattr(config[adapter], "fan_in_fan_out", False)
    for module, delta in lora_delta_weights(factors, config[adapter]).items():
        key = module.removeprefix(PEFT_PREFIX) + ".weight"
        weight = weights[key]
        step = delta.T if fan_in_fan_out else delta
        weights[key] = (weight.float() + step.to(weight.device)).to(weight.dtype)
    return weights


def _weights(value: Weights) -> dict[str, Tensor]:
    return effective_weights(value) if isinstance(value, nn.Module) else dict(value)


def weight_drift(base: Weights, tuned: Weights) -> pd.DataFrame:
    """Relative change ``‖θ_tuned − θ_base‖ / ‖θ_base‖`` (Frobenius norms) of every module.

    ``base`` and ``tuned`` are models (a PEFT model counts with its adapter merged, see
    :func:`effective_weights`) or state dicts under the base model's names; a state dict may
    hold only the parameters that changed (e.g. a run's checkpoint), the others count as
    unchanged and are left out. A module's weight and bias are measured together. Returns one
    row per module: ``module``, ``layer``, ``module_type``, ``numel``, ``base_norm``,
    ``delta_norm`` and ``relative`` (0 for an unchanged module).
    """
    before, after = _weights(base), _weights(tuned)
    unknown = sorted(set(after) - set(before))
    if unknown:
        raise ValueError(
            f"the tuned weights have {len(unknown)} parameter(s) the base lacks, e.g. {unknown[0]!r}; "
            "give the tuned model itself (PEFT adapters are merged) or names of the base model"
        )
    delta = task_vector(before, after)
    if not delta:
        raise ValueError("the base and the tuned weights share no floating-point parameter")
    rows: dict[str, dict] = {}
    for name, step in delta.items():
        where = place(name)
        row = rows.setdefault(
            where.module,
            {
                "module": where.module,
                "layer": where.layer,
                "module_type": where.module_type,
                "numel": 0,
                "base_sq": 0.0,
                "delta_sq": 0.0,
            },
        )
        row["numel"] += step.numel()
        row["base_sq"] += float(before[name].detach().double().pow(2).sum())
        row["delta_sq"] += float(step.double().pow(2).sum())
    return _finish(pd.DataFrame(list(rows.values())))


def _finish(frame: pd.DataFrame) -> pd.DataFrame:
    frame["base_norm"] = frame.pop("base_sq") ** 0.5
    frame["delta_norm"] = frame.pop("delta_sq") ** 0.5
    frame["relative"] = (frame["delta_norm"] / frame["base_norm"]).where(frame["base_norm"] > 0, 0.0)
    return frame


def drift_by(frame: pd.DataFrame, by: str | Sequence[str] = "layer") -> pd.DataFrame:
    """Relative drift of groups of modules (e.g. per ``layer``): ``‖Δθ‖ / ‖θ‖`` over each group.

    The norms are pooled (square roots of summed squares), not averaged ratios, so a group's
    drift is that of all its parameters taken as one vector.
    """
    keys = [by] if isinstance(by, str) else list(by)
    squares = frame.assign(base_sq=frame["base_norm"] ** 2, delta_sq=frame["delta_norm"] ** 2)
    grouped = squares.groupby(keys, sort=False)[["numel", "base_sq", "delta_sq"]].sum().reset_index()
    return _finish(grouped)


def _centred(x: Tensor) -> Tensor:
    """``x`` in float64 with its column means removed; a column whose deviations are within
    rounding of its mean (``n · ε₆₄ · max|x_j|``) is constant and becomes exactly 0.

    Raises if every column is constant (CKA is then 0 / 0).
    """
    x = x.double()
    centred = x - x.mean(0, keepdim=True)
    rounding = x.shape[0] * torch.finfo(torch.float64).eps * x.abs().amax(0)
    constant = centred.abs().amax(0) <= rounding
    if bool(constant.all()):
        raise ValueError("CKA is undefined for a constant representation (zero variance)")
    return centred.masked_fill(constant, 0.0)


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear centred kernel alignment of two representations of the same ``n`` samples.

    ``CKA(X, Y) = ‖Yᵀ X‖²_F / (‖Xᵀ X‖_F ‖Yᵀ Y‖_F)`` with the columns of ``X`` (n × p) and ``Y``
    (n × q) centred: Kornblith et al., "Similarity of Neural Network Representations Revisited",
    ICML 2019, eq. (4). 1 means the same representation up to rotation and isotropic scaling.
    Computed in float64 through the n × n Gram matrices when ``n`` is the smaller dimension.
    Raises if fewer than two samples are given or a representation is constant: every column
    within rounding (``n · ε₆₄ · max|x_j|``) of its mean, so a float64 constant whose mean rounds
    is caught too.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"CKA needs two (n, features) matrices of the same n, got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    if x.shape[0] < 2:
        raise ValueError("CKA needs at least two samples")
    x, y = _centred(x), _centred(y)
    if x.shape[0] < max(x.shape[1], y.shape[1]):
        gram_x, gram_y = x @ x.T, y @ y.T
        cross, norm_x, norm_y = (gram_x * gram_y).sum(), gram_x.norm(), gram_y.norm()
    else:
        cross, norm_x, norm_y = (y.T @ x).pow(2).sum(), (x.T @ x).norm(), (y.T @ y).norm()
    return min(1.0, max(0.0, float(cross / (norm_x * norm_y))))  # in [0, 1]: clip rounding


@torch.no_grad()
def hidden_states(
    model: nn.Module, data: Iterable[Mapping[str, Tensor]], pooling: str = "mean"
) -> list[Tensor]:
    """Per layer (embeddings first), the hidden states of every sample, as rows (CPU float32).

    ``pooling="mean"``: one row per example, the mean over its attended tokens; ``"tokens"``:
    one row per attended token. The model runs in eval mode and is restored afterwards.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    layers: list[list[Tensor]] = []
    try:
        for batch in data:
            inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
            states = model(**inputs, output_hidden_states=True).hidden_states
            if not states:
                raise ValueError(f"{type(model).__name__} returned no hidden states")
            mask = inputs.get("attention_mask", torch.ones(states[0].shape[:2], device=device)).bool()
            if not layers:
                layers = [[] for _ in states]
            if len(states) != len(layers):
                raise ValueError("the model returned a different number of hidden states between batches")
            for store, state in zip(layers, states, strict=True):
                if pooling == "tokens":
                    store.append(state[mask].float().cpu())
                else:
                    weights = mask.unsqueeze(-1).to(state.dtype)
                    store.append(((state * weights).sum(1) / weights.sum(1).clamp(min=1)).float().cpu())
    finally:
        model.train(was_training)
    if not layers:
        raise ValueError("no batches were given to compute hidden states from")
    return [torch.cat(store) for store in layers]


def representation_drift(
    base: nn.Module, tuned: nn.Module, data: Iterable[Mapping[str, Tensor]], pooling: str = "mean"
) -> pd.DataFrame:
    """Linear CKA between the two models' hidden states at every layer, on the same inputs.

    Returns one row per layer (``layer`` 0 = embedding output, ``l`` = after decoder layer
    ``l``): ``cka`` (:func:`linear_cka`, 1 = unchanged) and ``drift = 1 − cka``. ``data`` is
    iterated twice, so pass a list of batches (see :func:`cltune.analysis.batches.task_batches`).
    """
    data = list(data)
    first, second = hidden_states(base, data, pooling), hidden_states(tuned, data, pooling)
    if len(first) != len(second):
        raise ValueError(
            f"the models have {len(first)} and {len(second)} hidden-state layers; compare one architecture"
        )
    scores = [linear_cka(a, b) for a, b in zip(first, second, strict=True)]
    return pd.DataFrame({"layer": range(len(scores)), "cka": scores, "drift": [1.0 - s for s in scores]})
