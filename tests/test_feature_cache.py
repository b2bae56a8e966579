"""The frozen vision tower's memo on the real tiny LLaVA (CLIP tower): same outputs, one tower run
per image, never stale, never across gradients, keyed by raw bytes in any dtype, an option of a run."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from cltune.data.encode import Encoder, collate
from cltune.experiment import RunSpec, run_experiment
from cltune.models.feature_cache import ATTRIBUTE, cache_tower_features, installed_memo, memo_summary
from cltune.models.loading import load_model
from cltune.models.scopes import part_module, set_trainable
from cltune.strategies.config import TrainConfig
from cltune.strategies.template import Template


@pytest.fixture
def batch(tiny, default_stream):
    model, processor = tiny
    encoder = Encoder(processor, "tiny")
    task = default_stream.tasks[0]
    return collate([encoder.encode(task.test, i, task.name, True) for i in range(6)], encoder.pad_id)


class TowerRuns:
    """Counts the images that really went through the tower's embeddings (by wrapping their
    forward: a hook inside the tower would turn the memo off)."""

    def __init__(self, tower: torch.nn.Module):
        self.images = 0
        tower.embeddings.forward = self._counting(tower.embeddings.forward)

    def _counting(self, forward):
        def counted(pixel_values, *args, **kwargs):
            self.images += len(pixel_values)
            return forward(pixel_values, *args, **kwargs)

        return counted


def _uncached(model, fn):
    cache = getattr(part_module(model, "vision_tower"), ATTRIBUTE)
    cache.enabled = False
    try:
        return fn()
    finally:
        cache.enabled = True


def test_load_model_installs_the_memo_and_keeps_the_state_dict(tiny):
    model, _ = tiny
    cache = cache_tower_features(model)
    assert cache is getattr(model.model.vision_tower, ATTRIBUTE)
    assert cache_tower_features(model) is cache  # idempotent
    assert not any(ATTRIBUTE in name for name in model.state_dict())


def test_frozen_tower_runs_once_per_image_with_identical_outputs_and_gradients(tiny, batch):
    model, _ = tiny
    set_trainable(model, "language_model")  # the tower is frozen, as in a language_model scope
    model.train()
    runs = TowerRuns(model.model.vision_tower)
    cache = cache_tower_features(model)

    def loss_and_grads():
        model.zero_grad(set_to_none=True)
        out = model(**batch)
        out.loss.backward()
        return out.logits.detach(), {
            n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
        }

    reference_logits, reference_grads = _uncached(model, loss_and_grads)
    assert runs.images == 6
    first_logits, first_grads = loss_and_grads()
    second_logits, second_grads = loss_and_grads()
    assert runs.images == 12  # the first cached call computed the six images, the second none
    assert (cache.misses, cache.hits, len(cache)) == (6, 6, 6)
    for logits, grads in ((first_logits, first_grads), (second_logits, second_grads)):
        assert torch.equal(logits, reference_logits)
        assert grads.keys() == reference_grads.keys()
        assert all(torch.equal(grads[n], reference_grads[n]) for n in grads)


def test_generate_gives_the_same_answers_from_the_memo(tiny, batch):
    model, _ = tiny
    prompts = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        expected = _uncached(model, lambda: model.generate(**prompts, max_new_tokens=4, do_sample=False))
        cache = cache_tower_features(model)
        first = model.generate(**prompts, max_new_tokens=4, do_sample=False)
        hits = cache.hits
        second = model.generate(**prompts, max_new_tokens=4, do_sample=False)
    assert torch.equal(first, expected) and torch.equal(second, expected)
    assert cache.hits == hits + 6  # no parameter is frozen, but gradients are off in eval mode


def test_a_tower_that_can_learn_is_computed_every_time_and_gets_gradients(tiny, batch):
    model, _ = tiny
    model.train()  # every parameter requires grad, gradients on
    runs = TowerRuns(model.model.vision_tower)
    cache = cache_tower_features(model)
    model(**batch).loss.backward()
    model(**batch)
    assert runs.images == 12 and len(cache) == 0
    assert model.model.vision_tower.embeddings.patch_embedding.weight.grad is not None


def test_changed_tower_weights_are_never_served_stale(tiny, batch):
    model, _ = tiny
    cache = cache_tower_features(model)
    tower = model.model.vision_tower
    with torch.no_grad():
        before = model(**batch).logits
        tower.encoder.layers[0].mlp.fc2.bias.add_(0.3)  # in place, as a merge would
        after = model(**batch).logits
        expected = _uncached(model, lambda: model(**batch).logits)
    assert cache.misses == 12
    assert torch.equal(after, expected) and not torch.equal(after, before)


def test_a_deep_copy_starts_empty_and_uses_its_own_weights(tiny, batch):
    model, _ = tiny
    with torch.no_grad():
        original = model(**batch).logits
        twin = copy.deepcopy(model)
        twin_cache = getattr(twin.model.vision_tower, ATTRIBUTE)
        assert len(twin_cache) == 0 and twin_cache.tower is twin.model.vision_tower
        twin.model.vision_tower.encoder.layers[0].mlp.fc2.weight.mul_(2.0)
        changed = twin(**batch).logits
        again = model(**batch).logits
    assert not torch.equal(changed, original) and torch.equal(again, original)


def test_the_memo_stays_within_its_byte_budget(tiny, batch):
    model, _ = tiny
    cache = cache_tower_features(model)
    with torch.no_grad():
        model(**{k: v[:1] for k, v in batch.items()})
    per_row = cache.rows.nbytes
    cache.max_bytes = 2 * per_row
    with torch.no_grad():
        logits = model(**batch).logits
        expected = _uncached(model, lambda: model(**batch).logits)
    assert len(cache) == 2 and cache.rows.nbytes == 2 * per_row
    assert torch.equal(logits, expected)


def test_an_image_repeated_in_a_batch_runs_once(tiny, batch):
    model, _ = tiny
    runs = TowerRuns(model.model.vision_tower)
    cache = cache_tower_features(model)
    repeated = {k: torch.cat([v[:2], v[:2]]) for k, v in batch.items()}
    with torch.no_grad():
        logits = model(**repeated).logits
        assert runs.images == 2 and (cache.misses, cache.hits) == (2, 2)
        expected = _uncached(model, lambda: model(**repeated).logits)
    assert torch.equal(logits, expected)


def test_a_hook_inside_the_tower_sees_every_image(tiny, batch):
    model, _ = tiny
    cache = cache_tower_features(model)
    seen = []
    layer = model.model.vision_tower.encoder.layers[0]
    handle = layer.register_forward_hook(lambda module, args, output: seen.append(len(args[0])))
    try:
        with torch.no_grad():
            model(**batch)
            model(**batch)
    finally:
        handle.remove()
    assert seen == [6, 6] and len(cache) == 0
    with torch.no_grad():
        model(**batch)
    assert len(cache) == 6  # without the hook, the memo serves again


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_pixels_are_keyed_by_their_raw_bytes(tiny, batch, dtype):
    # A tiny Llama4's processor returns bf16 pixels; numpy has no bfloat16, so hashing through it died.
    model, _ = tiny
    model.to(dtype)
    tower = model.model.vision_tower
    cache = cache_tower_features(model)
    pixels = batch["pixel_values"].to(dtype)
    nudged = pixels.clone()
    nudged.view(torch.int16)[0, 0, 0, 0] += 1  # one unit in the last place of one pixel of row 0
    with torch.no_grad():
        first = tower(pixels)
        served = tower(pixels)
        moved = tower(nudged)
        fresh = _uncached(model, lambda: tower(pixels))
        fresh_moved = _uncached(model, lambda: tower(nudged))
    assert served.last_hidden_state.dtype == dtype
    assert (cache.misses, cache.hits) == (6 + 1, 6 + 5)  # only the nudged row is new
    for output, expected in ((first, fresh), (served, fresh), (moved, fresh_moved)):
        assert torch.equal(output.last_hidden_state, expected.last_hidden_state)
        assert torch.equal(output.pooler_output, expected.pooler_output)


def test_the_training_option_turns_the_memo_on_and_off(tiny, batch, default_stream):
    model, processor = tiny
    encoder = Encoder(processor, "tiny")
    runs = TowerRuns(model.model.vision_tower)
    Template(model, encoder, TrainConfig(feature_memo=False))
    with torch.no_grad():
        model(**batch)
        model(**batch)
    assert runs.images == 12 and memo_summary(model) == {"enabled": False, "hits": 0, "misses": 0}
    Template(model, encoder, TrainConfig())
    with torch.no_grad():
        model(**batch)
        model(**batch)
    assert runs.images == 18 and memo_summary(model) == {"enabled": True, "hits": 6, "misses": 6}
    with pytest.raises(ValueError, match="feature_memo must be true or false, got 'no'"):
        TrainConfig(feature_memo="no")


def test_load_model_leaves_the_tower_alone_when_asked(tiny_cached, default_stream):
    plain, _ = load_model(
        "tiny", pretrain_tasks=default_stream.general, seed=default_stream.seed, feature_memo=False
    )
    assert installed_memo(plain) is None and memo_summary(plain) is None
    assert "forward" not in vars(plain.model.vision_tower)  # the class's own forward, not the memo's


def test_a_run_records_the_memo_and_gets_the_same_matrix_without_it(small_recipe, tmp_path, tiny_cached):
    runs = {
        memo: run_experiment(
            RunSpec.from_recipe(small_recipe, "naive", max_steps=1, feature_memo=memo),
            tmp_path / str(memo),
            progress=False,
        )
        for memo in (True, False)
    }
    np.testing.assert_array_equal(runs[True].matrix.values, runs[False].matrix.values)
    with_memo, without = runs[True].results["feature_memo"], runs[False].results["feature_memo"]
    assert with_memo["enabled"] and with_memo["hits"] > 0
    assert without == {"enabled": False, "hits": 0, "misses": 0}
