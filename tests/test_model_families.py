"""cltune's model mechanisms on real image-text-to-text families: LLaVA, Qwen2-VL, Qwen2.5-VL,
Idefics3, SmolVLM, LLaVA-OneVision, InternVL, Gemma3, PaliGemma and Llama4.

Each family is a tiny random-weight model with a working processor built offline
(``tiny_families.py``), saved with ``save_pretrained`` and reloaded through
:func:`cltune.models.loading.load_model`. The tests check scope resolution, a real PEFT LoRA
training step through cltune's encoder and collator, and left-padded batched generation.
"""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import check_target_module_exists
from PIL import Image
from tiny_families import FAMILIES
from torch import nn

from cltune.data.encode import IGNORE_INDEX, ChatTemplateMissing, Encoder, collate
from cltune.models.feature_cache import cache_tower_features
from cltune.models.loading import load_model
from cltune.models.scopes import lora_target_modules, scope_parameters, scope_prefixes

PEFT_PREFIX = "base_model.model."


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _image(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def rows() -> datasets.Dataset:
    """Two VQA rows whose images differ in shape (so per-image token / tile counts differ)."""
    return datasets.Dataset.from_dict(
        {
            "image": [_image(56, 56, 0), _image(56, 28, 1)],
            "question": ["What colour is the shape?", "How many circles are there in the picture?"],
            "answer": ["red", "There are two circles."],
        }
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict:
    """Each family built once and saved; tests reload it fresh through ``load_model``."""
    out = {}
    for name, family in FAMILIES.items():
        model, processor = family.build()
        path = tmp_path_factory.mktemp(name)
        model.save_pretrained(path)
        processor.save_pretrained(path)
        out[name] = (str(path), model, processor)
    return out


family_names = pytest.mark.parametrize("name", list(FAMILIES))


def _encode(processor, rows, train: bool) -> tuple[Encoder, list[dict]]:
    encoder = Encoder(processor)
    return encoder, [encoder.encode(rows, i, "vqa", train=train) for i in range(len(rows))]


@family_names
def test_save_and_reload_through_load_model(name, saved, rows):
    path, original, original_processor = saved[name]
    model, processor = load_model(path)
    assert type(model) is type(original)
    assert type(processor) is type(original_processor)
    assert type(processor.image_processor) is type(original_processor.image_processor)
    reloaded = model.state_dict()
    for key, value in original.state_dict().items():
        assert torch.equal(reloaded[key], value), key
    # The processor round-trips: same chat template, tokenizer and image processing.
    assert processor.chat_template == original_processor.chat_template
    _, before = _encode(original_processor, rows, train=True)
    _, after = _encode(processor, rows, train=True)
    for b, a in zip(before, after, strict=True):
        assert b.keys() == a.keys()
        for key in b:
            assert torch.equal(b[key], a[key]), key


@family_names
def test_scopes_are_per_family_and_never_hit_the_vision_tower(name, saved):
    family = FAMILIES[name]
    model, _ = load_model(saved[name][0])
    every = dict(model.named_parameters())
    lm, vision, projector = (
        scope_parameters(model, s) for s in ("language_model", "vision_tower", "projector")
    )
    assert lm and vision and projector
    # The three scopes partition the model.
    assert not (lm.keys() & vision.keys() or lm.keys() & projector.keys())
    assert not vision.keys() & projector.keys()
    assert lm.keys() | vision.keys() | projector.keys() == every.keys()
    assert scope_parameters(model, "all").keys() == every.keys()
    assert not any(_under(n, family.vision_prefix) for n in lm)
    assert all(_under(n, family.vision_prefix) for n in vision)
    assert all(_under(n, family.projector_prefix) or n in family.projector_extra for n in projector)
    assert set(family.projector_extra) <= projector.keys()
    # Qwen2-VL's merger sits inside ``model.visual`` but belongs to the projector only.
    assert not any(_under(n, family.projector_prefix) for n in vision)

    linears = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    not_lm = {n for n in linears if _under(n, family.vision_prefix) or _under(n, family.projector_prefix)}
    assert not_lm
    lm_body = scope_prefixes(model, "language_model")[0]
    targets = lora_target_modules(model, "language_model")
    assert not set(targets) & not_lm
    # Exactly the decoder's linears: the LM head is excluded (Llama4's sits inside language_model).
    # Llama4's MoE routers are nn.Linear subclasses that return a tuple: never LoRA targets.
    heads = {n for n in linears if n.rsplit(".", 1)[-1] == "lm_head"}
    routers = {n for n in linears if n.endswith(".feed_forward.router")}
    assert len(heads) == 1 and bool(routers) == (name == "llama4")
    assert set(targets) == {n for n in linears if _under(n, lm_body)} - heads - routers

    # A bare suffix list (what PEFT would get without cltune's scoping) matches vision-side
    # linears in the families whose encoder names them like the LM; the resolved list never does.
    suffixes = sorted({t.rsplit(".", 1)[-1] for t in targets})
    assert {"q_proj", "k_proj", "v_proj", "o_proj"} <= set(suffixes)
    bare_hits = {n for n in not_lm if check_target_module_exists(LoraConfig(target_modules=suffixes), n)}
    assert bool(bare_hits) == family.bare_suffix_hits_vision, sorted(bare_hits)[:5]
    resolved = LoraConfig(target_modules=targets)
    assert not any(check_target_module_exists(resolved, n) for n in not_lm)

    narrowed = lora_target_modules(model, "language_model", ["q_proj", "v_proj"])
    assert narrowed and set(narrowed) < set(targets)
    assert {n.rsplit(".", 1)[-1] for n in narrowed} == {"q_proj", "v_proj"}

    vision_targets = lora_target_modules(model, "vision_tower")
    assert vision_targets
    assert all(_under(n, family.vision_prefix) for n in vision_targets)
    assert not any(_under(n, family.projector_prefix) for n in vision_targets)
    if family.projector_linears:
        projector_targets = lora_target_modules(model, "projector")
        assert projector_targets and all(_under(n, family.projector_prefix) for n in projector_targets)
    else:
        with pytest.raises(ValueError, match="no linear layers in scope 'projector'"):
            lora_target_modules(model, "projector")


@family_names
def test_lora_training_step_changes_only_language_model_adapters(name, saved, rows):
    family = FAMILIES[name]
    model, processor = load_model(saved[name][0])
    targets = lora_target_modules(model, "language_model")
    lm_prefixes = scope_prefixes(model, "language_model")
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets)
    )
    wrapped = {n.removeprefix(PEFT_PREFIX) for n, m in peft_model.named_modules() if isinstance(m, LoraLayer)}
    assert wrapped == set(targets)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    for n in trainable:
        inner = n.removeprefix(PEFT_PREFIX)
        assert any(_under(inner, p) for p in lm_prefixes), n
        assert not _under(inner, family.vision_prefix), n

    encoder, features = _encode(processor, rows, train=True)
    batch = collate(features, encoder.pad_id)
    assert batch["input_ids"].shape[0] == 2
    # Labels supervise the answer only (padding and prompt are ignored).
    for i, row in enumerate(rows):
        supervised = batch["labels"][i][batch["labels"][i] != IGNORE_INDEX]
        assert row["answer"] in encoder.tokenizer.decode(supervised)
        assert (batch["labels"][i][batch["attention_mask"][i] == 0] == IGNORE_INDEX).all()
    if name == "paligemma":  # prefix-LM: the answer (the processor's suffix) alone is attended causally
        assert torch.equal(batch["token_type_ids"] == 1, batch["labels"] != IGNORE_INDEX)

    before = {n: p.detach().clone() for n, p in peft_model.named_parameters()}
    optimizer = torch.optim.AdamW(
        [p for p in peft_model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0
    )
    peft_model.train()
    loss = peft_model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    changed = {n for n, p in peft_model.named_parameters() if not torch.equal(p, before[n])}
    # B starts at zero, so A gets no gradient on the first step; every B moves, nothing else does.
    lora_b = {n for n in trainable if ".lora_B." in n}
    assert lora_b and changed == lora_b
    peft_model.eval()
    with torch.no_grad():
        assert peft_model(**batch).loss < loss


@family_names
def test_left_padded_generation_matches_rows_alone(name, saved, rows):
    model, processor = load_model(saved[name][0])
    encoder, features = _encode(processor, rows, train=False)
    assert all("labels" not in f for f in features)
    batch = collate(features, encoder.pad_id, left=True)
    lengths = [f["input_ids"].shape[1] for f in features]
    assert lengths[0] != lengths[1]
    short = int(np.argmin(lengths))
    assert batch["attention_mask"][short, 0] == 0 and batch["attention_mask"][:, -1].all()
    assert (batch["input_ids"][short, : max(lengths) - min(lengths)] == encoder.pad_id).all()

    n_new, prompt_len = 3, batch["input_ids"].shape[1]
    kwargs = {"max_new_tokens": n_new, "min_new_tokens": n_new, "do_sample": False}
    with torch.no_grad():
        out = model.generate(**batch, **kwargs, output_logits=True, return_dict_in_generate=True)
    assert torch.equal(out.sequences[:, :prompt_len], batch["input_ids"])
    new = out.sequences[:, prompt_len:]
    assert new.shape == (2, n_new)
    texts = processor.batch_decode(new, skip_special_tokens=True)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    # Padding and image collation do not change what a row sees: the first-step logits of each
    # row in the batch equal those of the row generated alone.
    for i, feature in enumerate(features):
        with torch.no_grad():
            alone = model.generate(**feature, **kwargs, output_logits=True, return_dict_in_generate=True)
        torch.testing.assert_close(out.logits[0][i], alone.logits[0][0], atol=1e-4, rtol=1e-4)


def test_processor_without_chat_template_is_refused():
    _, processor = FAMILIES["llava"].build(chat_template=None)
    assert not processor.chat_template and not processor.tokenizer.chat_template
    with pytest.raises(ChatTemplateMissing, match=r"processor\.chat_template") as err:
        Encoder(processor, model_name="tiny-llava")
    assert "tiny-llava" in str(err.value)


def test_load_model_on_missing_folder_names_the_path(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError) as err:
        load_model(str(missing))
    assert str(missing) in str(err.value)


@family_names
def test_vision_memo_serves_image_rows_and_never_patch_streams(name, saved, rows):
    """Most towers take one image (or tile) per row: the memo serves them, with the same logits.
    Qwen2-VL's and Qwen2.5-VL's take a flat stream of patches: the memo must never store it."""
    model, processor = load_model(saved[name][0])
    cache = cache_tower_features(model)
    encoder, features = _encode(processor, rows, train=True)
    batch = collate(features, encoder.pad_id)
    with torch.no_grad():
        cache.enabled = False
        expected = model(**batch).logits
        cache.enabled = True
        first, second = model(**batch).logits, model(**batch).logits
    assert torch.equal(first, expected) and torch.equal(second, expected)
    if not FAMILIES[name].memo_serves_rows:
        assert len(cache) == 0 and cache.hits == 0
    else:
        assert len(cache) >= len(rows) and cache.hits == cache.misses == len(cache)
