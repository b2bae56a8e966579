"""Tiny random-weight image-text-to-text models of several families, with working processors.

Everything is built offline: a byte-level BPE tokenizer trained on a few sentences (with the
special tokens each family's processor expects), the family's own image processor, a chat template
written for the family, and a config small enough to train and generate in well under a second on
a CPU. Used by ``test_model_families.py`` to show that cltune's mechanisms are model-agnostic.

Families: LLaVA (CLIP + Llama), Qwen2-VL (its own ViT with a patch merger + Qwen2 decoder with
M-RoPE) and Idefics3 (SigLIP-style encoder + pixel-shuffle connector + Llama, with image splitting).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessor,
    Idefics3Processor,
    Idefics3VisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
)

CORPUS = [
    "USER: What colour is the shape in the image? ASSISTANT: The shape is red.",
    "User: How many circles are there? Assistant: There are two circles.",
    "<|im_start|>user\nIs the square blue?<|im_end|>\n<|im_start|>assistant\nyes<|im_end|>",
    "What is in the picture? A small green triangle on a white background.",
    "Answer with the option's text. A. red B. green C. blue D. yellow",
    "The quick brown fox jumps over the lazy dog 0 1 2 3 4 5 6 7 8 9.",
    "system user assistant question answer image picture photo colour shape",
]

# One small, tiny-but-real text decoder shape for every family.
TEXT = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
}


def build_tokenizer(
    special: list[str], pad: str, eos: str, chat_template: str, vocab_size: int = 400, **extra
) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on :data:`CORPUS`; ``special`` tokens are single, unsplittable ids."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=pad, eos_token=eos, padding_side="right", **extra
    )
    fast.chat_template = chat_template
    return fast


def _content(image: str) -> str:
    """Jinja for one message's content: a plain string, or a list of image / text parts."""
    return (
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for part in message['content'] %}"
        "{% if part['type'] == 'image' %}" + image + "{% elif part['type'] == 'text' %}"
        "{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    )


# ----------------------------------------------------------------------------------------- LLaVA
LLAVA_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    + _content("<image>\n")
    + "{% if message['role'] == 'assistant' %}</s>{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def build_llava(chat_template: str | None = LLAVA_TEMPLATE, seed: int = 0):
    image_size, patch = 28, 7
    tokenizer = build_tokenizer(
        ["<pad>", "</s>", "<image>"],
        pad="<pad>",
        eos="</s>",
        chat_template=chat_template,
        extra_special_tokens={"image_token": "<image>"},
    )
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        ),
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=chat_template,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            image_size=image_size,
            patch_size=patch,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=None,
            **TEXT,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=(image_size // patch) ** 2,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(seed)
    return _finish(LlavaForConditionalGeneration(config), tokenizer), processor


# -------------------------------------------------------------------------------------- Qwen2-VL
QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    + _content("<|vision_start|><|image_pad|><|vision_end|>")
    + "<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


def build_qwen2_vl(chat_template: str | None = QWEN_TEMPLATE, seed: int = 0):
    patch, merge, temporal = 14, 2, 2
    tokenizer = build_tokenizer(
        QWEN_SPECIAL, pad="<|endoftext|>", eos="<|im_end|>", chat_template=chat_template
    )
    image_processor = Qwen2VLImageProcessor(
        # 28x28 .. 56x56 pixels: 1 to 4 merged image tokens per image.
        size={"shortest_edge": 28 * 28, "longest_edge": 56 * 56},
        patch_size=patch,
        merge_size=merge,
        temporal_patch_size=temporal,
    )
    video_processor = Qwen2VLVideoProcessor(patch_size=patch, merge_size=merge, temporal_patch_size=temporal)
    processor = Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=chat_template,
    )
    ids = tokenizer.convert_tokens_to_ids
    mrope = [2, 3, 3]  # M-RoPE (temporal, height, width) sections: they sum to head_dim / 2
    assert sum(mrope) == TEXT["hidden_size"] // TEXT["num_attention_heads"] // 2
    config = Qwen2VLConfig(
        vision_config={
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": TEXT["hidden_size"],
            "mlp_ratio": 2,
            "num_heads": 2,
            "patch_size": patch,
            "spatial_merge_size": merge,
            "temporal_patch_size": temporal,
        },
        text_config={
            "vocab_size": len(tokenizer),
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "bos_token_id": None,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
            **TEXT,
        },
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    torch.manual_seed(seed)
    return _finish(Qwen2VLForConditionalGeneration(config), tokenizer), processor


# -------------------------------------------------------------------------------------- Idefics3
IDEFICS3_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is not string and message['content'][0]['type'] == 'image' %}:"
    "{% else %}: {% endif %}"
    + _content("<image>")
    + "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)
IDEFICS3_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<end_of_utterance>",
    "<fake_token_around_image>",
    "<image>",
    "<global-img>",
    *(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)),
]


def build_idefics3(chat_template: str | None = IDEFICS3_TEMPLATE, seed: int = 0):
    tile, patch, scale = 32, 8, 2  # each 32x32 tile -> 16 patches -> 4 tokens after pixel shuffle
    tokenizer = build_tokenizer(
        IDEFICS3_SPECIAL, pad="<|endoftext|>", eos="<end_of_utterance>", chat_template=chat_template
    )
    image_processor = Idefics3ImageProcessor(
        # Longest edge to 64 px, split into 32 px tiles plus a global view: a square image becomes
        # 2x2 tiles + 1, a 2:1 image 1x2 tiles + 1 (so rows of one batch differ in image count).
        size={"longest_edge": 2 * tile},
        max_image_size={"longest_edge": tile},
        do_image_splitting=True,
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=(tile // patch) ** 2 // scale**2,
        chat_template=chat_template,
    )
    config = Idefics3Config(
        vision_config=Idefics3VisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=tile,
            patch_size=patch,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=None,
            **TEXT,
        ),
        scale_factor=scale,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return _finish(Idefics3ForConditionalGeneration(config), tokenizer), processor


def _finish(model, tokenizer):
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None
    return model.eval()


@dataclass(frozen=True)
class Family:
    name: str
    build: Callable  # (chat_template=..., seed=...) -> (model, processor)
    vision_prefix: str  # where the vision tower lives on the model
    projector_prefix: str
    # Whether a bare suffix list of the language model's linear names (q_proj, ...) would also hit
    # linears of the vision tower / projector: true where the vision encoder names them alike.
    bare_suffix_hits_vision: bool


FAMILIES = {
    "llava": Family("llava", build_llava, "model.vision_tower", "model.multi_modal_projector", True),
    # Qwen2-VL's ViT uses fused ``qkv`` / ``proj`` / ``fc1`` / ``fc2`` names, disjoint from the LM's.
    "qwen2_vl": Family("qwen2_vl", build_qwen2_vl, "model.visual", "model.visual.merger", False),
    "idefics3": Family("idefics3", build_idefics3, "model.vision_model", "model.connector", True),
}
