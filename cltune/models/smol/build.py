"""Assemble ``smol`` from its pretrained parts: tokenizer, processor, config, weights."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoTokenizer,
    CLIPImageProcessor,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaProcessor,
    set_seed,
)

from cltune.models.smol.modeling import (
    CltuneSmolConfig,
    CltuneSmolForConditionalGeneration,
    EfficientNetLiteConfig,
)
from cltune.models.smol.parts import converted_lm_dir, require_vision_code, vision_weights_path

IMAGE_SIZE = 224
GRID = 2  # the 7×7 feature map is pooled to GRID×GRID image tokens
IMAGE_TOKEN = "<image>"
# SmolLM2's ChatML turns, without the default system prompt (shorter sequences), with image parts.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_processor(lm_dir: Path) -> LlavaProcessor:
    """SmolLM2's tokenizer with an ``<image>`` token, and EfficientNet-Lite's preprocessing.

    EfficientNet-Lite expects RGB at 224 px scaled as ``(x - 127) / 128``.
    """
    tokenizer = AutoTokenizer.from_pretrained(str(lm_dir))
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    tokenizer.image_token = IMAGE_TOKEN
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "right"
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=[127 / 255] * 3,
        image_std=[128 / 255] * 3,
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=IMAGE_SIZE // GRID,
        vision_feature_select_strategy="full",
        num_additional_image_tokens=0,
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
    )


def build_config(text_config: LlamaConfig, processor: LlavaProcessor) -> CltuneSmolConfig:
    tokenizer = processor.tokenizer
    text = text_config.to_dict()
    text["vocab_size"] = len(tokenizer)
    return CltuneSmolConfig(
        vision_config=EfficientNetLiteConfig(image_size=IMAGE_SIZE, grid=GRID).to_dict(),
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=GRID * GRID,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        projector_hidden_act="gelu",
        tie_word_embeddings=text_config.tie_word_embeddings,
    )


def assemble(cache: Path, seed: int) -> tuple[CltuneSmolForConditionalGeneration, LlavaProcessor]:
    """The unaligned model: pretrained LM and tower, a freshly initialised projector."""
    require_vision_code()
    lm_dir = converted_lm_dir(cache)
    processor = build_processor(lm_dir)
    lm = LlamaForCausalLM.from_pretrained(str(lm_dir), dtype=torch.float32)
    set_seed(seed)  # the projector's random initialisation
    model = CltuneSmolForConditionalGeneration(build_config(lm.config, processor))
    n_vocab = lm.config.vocab_size
    with torch.no_grad():
        state = {k.removeprefix("model."): v for k, v in lm.state_dict().items() if k.startswith("model.")}
        embed = state.pop("embed_tokens.weight")
        model.model.language_model.load_state_dict(state, strict=False)
        new_embed = model.model.language_model.embed_tokens.weight
        new_embed[:n_vocab] = embed
        new_embed[n_vocab:] = embed.mean(0)  # the <image> token (never predicted, replaced by features)
        if not model.config.tie_word_embeddings:
            model.lm_head.weight[:n_vocab] = lm.lm_head.weight
        vision = torch.load(vision_weights_path(), map_location="cpu", weights_only=True)
        vision = {k: v for k, v in vision.items() if not k.startswith("_fc.")}
        model.model.vision_tower.net.load_state_dict(vision, strict=True)
    model.tie_weights()
    model.generation_config = lm.generation_config
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    return model, processor
