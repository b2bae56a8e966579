"""LoRA merging: one adapter per task trained from the base, all adapters so far merged after each
experience, evaluation on the merged adapter.

The merge is exact in ΔW: each adapter's ``ΔW_t = s_t B_t A_t`` is merged by the chosen method of
:mod:`cltune.merging` (task arithmetic, TIES, DARE, ...), then re-factorised by truncated SVD into one
adapter of rank ``merge_rank`` (:func:`cltune.merging.merge_lora_adapters`). ``merge_rank=None``
keeps every singular value (rank ``min(out, in)`` of the largest layer), so the evaluated model is
exactly base + merged ΔW; a smaller rank gives its best rank-``merge_rank`` approximation
(Eckart–Young) at a fraction of the memory. ``space="factors"`` merges the ``A`` and ``B`` factors
separately instead (LoraHub; PEFT's ``add_weighted_adapter`` linear/ties/dare;
:func:`cltune.merging.merge_lora_factors`): same rank as the task adapters, not exact in ΔW.
Task adapters are saved under ``<run dir>/adapters/<task>`` and the merged one under
``<run dir>/adapters/merged-<stage>``, both in PEFT's format.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from peft import LoraConfig, get_peft_model_state_dict, set_peft_model_state_dict

from cltune.adapters import AdapterBank, lora_layers
from cltune.merging import merge_lora_adapters, merge_lora_factors
from cltune.strategies.plugin import Plugin
from cltune.strategies.plugins.adapter_bank import bank_prepare, task_name
from cltune.strategies.plugins.lora import LoraSpec, with_lora_options
from cltune.strategies.plugins.task_vector_merge import MergeSpec
from cltune.strategies.registry import Preset, register


class LoraMergePlugin(Plugin):
    """Train each task's adapter alone from the base; after it, evaluate the merge of all of them."""

    full_parameters = "it adds an adapter per experience and merges adapter weights into whole parameters"

    def __init__(self, bank: AdapterBank, spec: MergeSpec, merge_rank: int | None, space: str):
        self.bank = bank
        self.spec = spec
        self.merge_rank = merge_rank
        self.space = space
        self.merged: dict[str, Any] | None = None  # name, config and weights of the merged adapter

    def adapt_model(self, strategy) -> None:
        name = task_name(strategy)
        self.bank.add(name)
        self.bank.activate([name], trainable=[name])

    def after_training_exp(self, strategy) -> None:
        model = self.bank.peft_model
        names = self.bank.names
        states = [get_peft_model_state_dict(model, adapter_name=name) for name in names]
        configs = [model.peft_config[name] for name in names]
        weights = self.spec.weights_for(len(names))
        options = self.spec.method_options(strategy.config.seed, len(names))
        if self.space == "factors":
            merged = merge_lora_factors(states, configs, self.spec.method, weights, **options)
        else:
            rank = self.merge_rank or max(
                min(layer.in_features, layer.out_features) for layer in lora_layers(model)
            )
            merged = merge_lora_adapters(states, configs, rank, self.spec.method, weights, **options)
        previous = self.merged
        self.merged = {"name": f"merged-{len(names)}", "config": merged.config, "state": merged.state_dict}
        self._install()
        if previous is not None:
            model.delete_adapter(previous["name"])
        if strategy.run_dir is not None:
            self.bank.save(task_name(strategy), strategy.run_dir)
            self.bank.save(self.merged["name"], strategy.run_dir)

    def _install(self) -> None:
        """Add the merged adapter with its weights and make it the only active one."""
        name = self.merged["name"]
        self.bank.add_other(name, self.merged["config"])
        result = set_peft_model_state_dict(self.bank.peft_model, self.merged["state"], adapter_name=name)
        if result.unexpected_keys:
            raise RuntimeError(f"merged adapter {name!r}: PEFT did not load {result.unexpected_keys[:3]}")
        self.bank.activate([name])

    def state_dict(self) -> dict[str, Any]:
        merged = self.merged
        if merged is not None:  # the config as PEFT writes it to adapter_config.json (sets as lists)
            config = {
                k: sorted(v) if isinstance(v, set) else v for k, v in merged["config"].to_dict().items()
            }
            merged = {**merged, "config": config}
        return {**self.bank.state_dict(), "merged": merged}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bank.load_state_dict(state)
        merged = state["merged"]
        self.merged = None if merged is None else {**merged, "config": LoraConfig(**merged["config"])}
        if self.merged is not None:
            self._install()


@register("lora-merge")
@with_lora_options
def lora_merge(
    lora: LoraSpec,
    method: str = "task_arithmetic",
    weights: float | Sequence[float] | None = None,
    density: float | None = None,
    merge_options: dict[str, Any] | None = None,
    merge_rank: int | None = None,
    space: str = "delta",
) -> Preset:
    """One LoRA adapter per task from the base; evaluate the merge of all adapters so far."""
    options = dict(merge_options or {})
    if density is not None:
        options["density"] = density
    spec = MergeSpec(method, weights, options)
    spec.check("lora-merge")
    if merge_rank is not None and (
        isinstance(merge_rank, bool) or not isinstance(merge_rank, int) or merge_rank < 1
    ):
        raise ValueError(
            f"lora-merge: merge_rank must be a positive integer or None (exact), got {merge_rank!r}"
        )
    if space not in ("delta", "factors"):
        raise ValueError(f"lora-merge: space must be 'delta' (exact ΔW) or 'factors', got {space!r}")
    if space == "factors" and merge_rank is not None:
        raise ValueError(
            "lora-merge: merge_rank applies to space='delta'; a factor-space merge keeps the adapters' rank"
        )
    lora.check("lora-merge")
    if lora.options.get("use_dora"):
        raise ValueError(
            "lora-merge: DoRA adapters are not a plain low-rank ΔW and cannot be merged; drop use_dora"
        )
    bank = AdapterBank()
    return Preset(plugins=[LoraMergePlugin(bank, spec, merge_rank, space)], prepare=bank_prepare(bank, lora))
