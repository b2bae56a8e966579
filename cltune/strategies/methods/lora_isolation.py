"""Adapter isolation: a new PEFT LoRA adapter per task, earlier adapters and the base frozen.

Each experience trains only its own adapter (named after the task) from the base model, so nothing
learnt earlier can change: with the task id at evaluation (``router="oracle"``) every old task keeps
its accuracy exactly (BWT = 0) and the general tasks run on the untouched base. Without a task id
(``router="prototype"``) each test row goes to the adapter of the nearest task prototype in the base
model's prompt features (hidden states ``feature_layer``, mean over the prompt; Mahalanobis distance
with a shared covariance, see :mod:`cltune.adapters.routing`), or to the base model when it is
farther than a fraction ``1 − reject_rate`` of the task's own training rows. Rows of a mixed batch
run through their own adapters (PEFT's ``adapter_names``). results.json ``extra.routing`` lists per
evaluation stage the routing accuracy of every evaluated task (share of rows sent to the task's own
adapter, or to the base for a task without one: general tasks and tasks not trained yet) and where
its rows went. Adapters are saved in PEFT's format under ``<run dir>/adapters/<task>/``.
"""

from __future__ import annotations

from typing import Any

from cltune.adapters import BASE, AdapterBank, PrototypeRouter, prompt_features, route_counts
from cltune.data.task import Task
from cltune.strategies.plugin import Plugin
from cltune.strategies.plugins.adapter_bank import bank_prepare, task_name
from cltune.strategies.plugins.lora import LoraSpec, with_lora_options
from cltune.strategies.registry import Preset, register

ROUTERS = ("oracle", "prototype")


class AdapterIsolationPlugin(Plugin):
    """Train a fresh adapter per task; route every evaluation row to one adapter (or the base)."""

    full_parameters = "it adds one adapter module per task between experiences and routes rows to them"

    def __init__(
        self, bank: AdapterBank, router: str, reject_rate: float | None = None, feature_layer: int = 0
    ):
        self.bank = bank
        self.router = router
        self.feature_layer = feature_layer
        self.prototypes = PrototypeRouter(reject_rate) if router == "prototype" else None
        self.routes: list[str] = []  # adapter per test row of the task being evaluated
        self.features: dict[str, Any] = {}  # base-model test features per task (the base never changes)
        self.history: list[dict[str, Any]] = []  # routing per evaluation stage
        self._stage: dict[str, Any] = {}

    def adapt_model(self, strategy) -> None:
        name = task_name(strategy)
        self.bank.add(name)
        self.bank.activate([name], trainable=[name])

    def after_training_exp(self, strategy) -> None:
        name = task_name(strategy)
        self.bank.activate([name])
        if strategy.run_dir is not None:
            self.bank.save(name, strategy.run_dir)
        if self.prototypes is not None:
            task = strategy.experience.tasks[0]
            self.prototypes.add(name, self._base_features(strategy, task, train=True))

    def _base_features(self, strategy, task: Task, train: bool):
        data, key = (task.train, f"{task.name}/train-prompts") if train else (task.test, task.name)
        with self.bank.peft_model.disable_adapter():
            return prompt_features(
                strategy.model,
                strategy.encoder,
                data,
                key,
                strategy.config.eval_batch_size,
                strategy.device,
                self.feature_layer,
            )

    def before_eval(self, strategy) -> None:
        self._stage = {"stage": len(self.bank.names), "accuracy": {}, "routes": {}}

    def before_eval_exp(self, strategy) -> None:
        task = strategy.eval_task
        own = task.name if task.name in self.bank.names else BASE
        if self.prototypes is None or not self.bank.names:
            self.routes = [own] * len(task.test)
            return
        if task.name not in self.features:
            self.features[task.name] = self._base_features(strategy, task, train=False)
        self.routes = self.prototypes.route(self.features[task.name])
        correct = sum(route == own for route in self.routes)
        self._stage["accuracy"][task.name] = 100.0 * correct / len(self.routes)
        self._stage["routes"][task.name] = route_counts(self.routes)

    def generation_kwargs(self, strategy, task: Task, rows: list[int]) -> dict[str, Any]:
        """PEFT's per-row ``adapter_names``: each row of a mixed batch runs through its own adapter."""
        if not self.bank.names:
            return {}
        return {"adapter_names": [self.routes[i] for i in rows]}

    def after_eval(self, strategy) -> None:
        if self.prototypes is not None and self.bank.names:
            self.history.append(self._stage)
            strategy.extra_results["routing"] = self.history

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {**self.bank.state_dict(), "history": self.history}
        if self.prototypes is not None:
            state["router"] = self.prototypes.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bank.load_state_dict(state)
        self.history = list(state["history"])
        if self.prototypes is not None:
            self.prototypes.load_state_dict(state["router"])


@register("lora-isolation")
@with_lora_options
def lora_isolation(
    lora: LoraSpec, router: str = "oracle", reject_rate: float | None = 0.01, feature_layer: int = 0
) -> Preset:
    """One frozen LoRA adapter per task, chosen per test row by the task id or a prototype router.

    ``reject_rate`` and ``feature_layer`` configure the prototype router (module docstring);
    ``reject_rate=None`` sends every row to some adapter.
    """
    if router not in ROUTERS:
        raise ValueError(f"lora-isolation: router must be one of {ROUTERS}, got {router!r}")
    lora.check("lora-isolation")
    bank = AdapterBank()
    try:
        plugin = AdapterIsolationPlugin(bank, router, reject_rate, feature_layer)
    except ValueError as err:
        raise ValueError(f"lora-isolation: {err}") from None
    return Preset(plugins=[plugin], prepare=bank_prepare(bank, lora))
