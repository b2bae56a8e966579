"""Tiny random-weight image-text-to-text models of several families, with working processors.

Everything is built offline: a byte-level BPE tokenizer trained on a few sentences (with the
special tokens each family's processor expects), the family's own image processor, a chat template
written for the family, and a config small enough to train and generate in well under a second on
a CPU. Used by ``test_model_families.py`` to show that cltune's mechanisms are model-agnostic.

Families: LLaVA (CLIP + Llama), Qwen2-VL and Qwen2.5-VL (their own ViT with a patch merger, the
latter with window attention, + Qwen2 decoder with M-RoPE), Idefics3 and SmolVLM (SigLIP-style
encoder + pixel-shuffle connector + Llama, with image splitting), LLaVA-OneVision (SigLIP +
any-resolution grids + Qwen2), InternVL (InternViT tiles + pixel shuffle + Qwen2), Gemma3 (SigLIP
+ pooled soft tokens + Gemma3), PaliGemma (SigLIP + Gemma, prefix-LM) and Llama4 (tiled ViT with a
pixel-shuffle adapter + a mixture-of-experts decoder; in bfloat16, which its image processor
returns whatever the model's dtype).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3ImageProcessor,
    Gemma3Processor,
    GotOcr2ImageProcessor,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessor,
    Idefics3Processor,
    Idefics3VisionConfig,
    InternVLConfig,
    InternVLForConditionalGeneration,
    InternVLProcessor,
    InternVLVideoProcessor,
    InternVLVisionConfig,
    Llama4Config,
    Llama4ForConditionalGeneration,
    Llama4ImageProcessor,
    Llama4Processor,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessor,
    LlavaOnevisionProcessor,
    LlavaOnevisionVideoProcessor,
    LlavaProcessor,
    PaliGemmaConfig,
    PaliGemmaForConditionalGeneration,
    PaliGemmaProcessor,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
    SiglipImageProcessor,
    SiglipVisionConfig,
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
    SmolVLMImageProcessor,
    SmolVLMProcessor,
    SmolVLMVideoProcessor,
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


QWEN_PATCH, QWEN_MERGE, QWEN_TEMPORAL = 14, 2, 2


def _qwen_parts(processor_class, chat_template: str | None):
    """What Qwen2-VL and Qwen2.5-VL share: the tokenizer, the processor of ``processor_class``
    (28x28 .. 56x56 pixels: 1 to 4 merged image tokens per image) and the config's text part and
    special token ids."""
    tokenizer = build_tokenizer(
        QWEN_SPECIAL, pad="<|endoftext|>", eos="<|im_end|>", chat_template=chat_template
    )
    sizes = {"patch_size": QWEN_PATCH, "merge_size": QWEN_MERGE, "temporal_patch_size": QWEN_TEMPORAL}
    processor = processor_class(
        image_processor=Qwen2VLImageProcessor(
            size={"shortest_edge": 28 * 28, "longest_edge": 56 * 56}, **sizes
        ),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**sizes),
        chat_template=chat_template,
    )
    ids = tokenizer.convert_tokens_to_ids
    mrope = [2, 3, 3]  # M-RoPE (temporal, height, width) sections: they sum to head_dim / 2
    assert sum(mrope) == TEXT["hidden_size"] // TEXT["num_attention_heads"] // 2
    config = {
        "text_config": {
            "vocab_size": len(tokenizer),
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "bos_token_id": None,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
            **TEXT,
        },
        "image_token_id": ids("<|image_pad|>"),
        "video_token_id": ids("<|video_pad|>"),
        "vision_start_token_id": ids("<|vision_start|>"),
        "vision_end_token_id": ids("<|vision_end|>"),
    }
    return tokenizer, processor, config


def build_qwen2_vl(chat_template: str | None = QWEN_TEMPLATE, seed: int = 0):
    tokenizer, processor, shared = _qwen_parts(Qwen2VLProcessor, chat_template)
    config = Qwen2VLConfig(
        vision_config={
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": TEXT["hidden_size"],
            "mlp_ratio": 2,
            "num_heads": 2,
            "patch_size": QWEN_PATCH,
            "spatial_merge_size": QWEN_MERGE,
            "temporal_patch_size": QWEN_TEMPORAL,
        },
        **shared,
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


# ------------------------------------------------------------------------------------ Qwen2.5-VL
def build_qwen2_5_vl(chat_template: str | None = QWEN_TEMPLATE, seed: int = 0):
    tokenizer, processor, shared = _qwen_parts(Qwen2_5_VLProcessor, chat_template)
    config = Qwen2_5_VLConfig(
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": TEXT["hidden_size"],
            "patch_size": QWEN_PATCH,
            "spatial_merge_size": QWEN_MERGE,
            "temporal_patch_size": QWEN_TEMPORAL,
            "window_size": 56,
            "fullatt_block_indexes": [1],
        },
        **shared,
    )
    torch.manual_seed(seed)
    return _finish(Qwen2_5_VLForConditionalGeneration(config), tokenizer), processor


# ------------------------------------------------------------------------------- LLaVA-OneVision
ONEVISION_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    + _content("<image>\n")
    + "<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_llava_onevision(chat_template: str | None = ONEVISION_TEMPLATE, seed: int = 0):
    size, patch = 28, 7  # a 28 px base view of 16 patches; any-resolution grids of up to 2x2 views
    tokenizer = build_tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"],
        pad="<|endoftext|>",
        eos="<|im_end|>",
        chat_template=chat_template,
    )
    pinpoints = [[size, size], [size, 2 * size], [2 * size, size], [2 * size, 2 * size]]
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(
            size={"height": size, "width": size}, image_grid_pinpoints=pinpoints
        ),
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(size={"height": size, "width": size}),
        num_image_tokens=(size // patch) ** 2,
        vision_feature_select_strategy="full",
        chat_template=chat_template,
    )
    config = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=size,
            patch_size=patch,
        ),
        text_config={
            "model_type": "qwen2",
            "vocab_size": len(tokenizer),
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "bos_token_id": None,
            **TEXT,
        },
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    return _finish(LlavaOnevisionForConditionalGeneration(config), tokenizer), processor


# -------------------------------------------------------------------------------------- InternVL
INTERNVL_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    + _content("<IMG_CONTEXT>\n")
    + "<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
INTERNVL_TOKENS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}


def build_internvl(chat_template: str | None = INTERNVL_TEMPLATE, seed: int = 0):
    tile, patch, downsample = 28, 7, 0.5  # each 28 px tile: 16 patches -> 4 tokens after pixel shuffle
    tokenizer = build_tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *INTERNVL_TOKENS.values()],
        pad="<|endoftext|>",
        eos="<|im_end|>",
        chat_template=chat_template,
        extra_special_tokens=INTERNVL_TOKENS,
    )
    processor = InternVLProcessor(
        # Up to 4 tiles plus a thumbnail: the square and the 2:1 image get different tile counts.
        image_processor=GotOcr2ImageProcessor(
            size={"height": tile, "width": tile}, crop_to_patches=True, min_patches=1, max_patches=4
        ),
        tokenizer=tokenizer,
        video_processor=InternVLVideoProcessor(size={"height": tile, "width": tile}),
        image_seq_length=int((tile // patch) ** 2 * downsample**2),
        chat_template=chat_template,
    )
    config = InternVLConfig(
        vision_config=InternVLVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=tile,
            patch_size=patch,
        ),
        text_config={
            "model_type": "qwen2",
            "vocab_size": len(tokenizer),
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "bos_token_id": None,
            **TEXT,
        },
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=int((tile // patch) ** 2 * downsample**2),
        downsample_ratio=downsample,
    )
    torch.manual_seed(seed)
    return _finish(InternVLForConditionalGeneration(config), tokenizer), processor


# ---------------------------------------------------------------------------------------- Gemma3
GEMMA_TEMPLATE = (
    "{% for message in messages %}<start_of_turn>"
    "{% if message['role'] == 'assistant' %}model{% else %}{{ message['role'] }}{% endif %}{{ '\\n' }}"
    + _content("<start_of_image>")
    + "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
GEMMA3_TOKENS = {
    "boi_token": "<start_of_image>",
    "eoi_token": "<end_of_image>",
    "image_token": "<image_soft_token>",
}


def build_gemma3(chat_template: str | None = GEMMA_TEMPLATE, seed: int = 0):
    size, patch, tokens = 28, 7, 4  # 4x4 patches, average-pooled to 2x2 = 4 soft tokens per image
    tokenizer = build_tokenizer(
        ["<pad>", "<eos>", "<start_of_turn>", "<end_of_turn>", *GEMMA3_TOKENS.values()],
        pad="<pad>",
        eos="<end_of_turn>",
        chat_template=chat_template,
        extra_special_tokens=GEMMA3_TOKENS,
    )
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessor(size={"height": size, "width": size}),
        tokenizer=tokenizer,
        image_seq_length=tokens,
        chat_template=chat_template,
    )
    ids = tokenizer.convert_tokens_to_ids
    config = Gemma3Config(
        vision_config=SiglipVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=size,
            patch_size=patch,
        ),
        text_config={
            "vocab_size": len(tokenizer),
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "bos_token_id": None,
            "head_dim": 16,
            "sliding_window": 16,
            **TEXT,
        },
        mm_tokens_per_image=tokens,
        boi_token_index=ids(GEMMA3_TOKENS["boi_token"]),
        eoi_token_index=ids(GEMMA3_TOKENS["eoi_token"]),
        image_token_index=ids(GEMMA3_TOKENS["image_token"]),
    )
    torch.manual_seed(seed)
    return _finish(Gemma3ForConditionalGeneration(config), tokenizer), processor


# ------------------------------------------------------------------------------------- PaliGemma
# PaliGemma has no chat format: the prompt is "<image>question" (its processor expands the image
# tokens, puts <bos> after them and "\n" at the end); the answer is the processor's ``suffix``.
PALIGEMMA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}"
    + _content("<image>")
    + "{% endif %}{% endfor %}"
)


def build_paligemma(chat_template: str | None = PALIGEMMA_TEMPLATE, seed: int = 0):
    size, patch = 28, 7
    tokenizer = build_tokenizer(
        ["<pad>", "<eos>", "<bos>", "<image>"],
        pad="<pad>",
        eos="<eos>",
        chat_template=chat_template,
        bos_token="<bos>",
        extra_special_tokens={"image_token": "<image>"},
    )
    image_processor = SiglipImageProcessor(size={"height": size, "width": size})
    image_processor.image_seq_length = (size // patch) ** 2
    processor = PaliGemmaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template
    )
    config = PaliGemmaConfig(
        vision_config=SiglipVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=size,
            patch_size=patch,
        ),
        text_config={
            "model_type": "gemma",
            "vocab_size": len(tokenizer),
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "head_dim": 16,
            **TEXT,
        },
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        projection_dim=TEXT["hidden_size"],
    )
    torch.manual_seed(seed)
    return _finish(PaliGemmaForConditionalGeneration(config), tokenizer), processor


# --------------------------------------------------------------------------------------- SmolVLM
def build_smolvlm(chat_template: str | None = IDEFICS3_TEMPLATE, seed: int = 0):
    tile, patch, scale = 32, 8, 2  # as Idefics3: 32 px tiles of 16 patches -> 4 tokens each
    tokenizer = build_tokenizer(
        [*IDEFICS3_SPECIAL, "<video>"],
        pad="<|endoftext|>",
        eos="<end_of_utterance>",
        chat_template=chat_template,
    )
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(
            size={"longest_edge": 2 * tile}, max_image_size={"longest_edge": tile}, do_image_splitting=True
        ),
        tokenizer=tokenizer,
        video_processor=SmolVLMVideoProcessor(
            size={"longest_edge": tile}, max_image_size={"longest_edge": tile}
        ),
        image_seq_len=(tile // patch) ** 2 // scale**2,
        chat_template=chat_template,
    )
    config = SmolVLMConfig(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": tile,
            "patch_size": patch,
        },
        text_config={
            "model_type": "llama",
            "vocab_size": len(tokenizer),
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "bos_token_id": None,
            **TEXT,
        },
        scale_factor=scale,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return _finish(SmolVLMForConditionalGeneration(config), tokenizer), processor


# ---------------------------------------------------------------------------------------- Llama4
LLAMA4_TEMPLATE = (
    "{% for message in messages %}<|header_start|>{{ message['role'] }}<|header_end|>{{ '\\n\\n' }}"
    + _content("<|image|>")
    + "<|eot|>{% endfor %}{% if add_generation_prompt %}<|header_start|>assistant<|header_end|>"
    "{{ '\\n\\n' }}{% endif %}"
)
LLAMA4_SPECIAL = [
    "<|finetune_right_pad|>",
    "<|eot|>",
    "<|header_start|>",
    "<|header_end|>",
    "<|image|>",
    "<|image_start|>",
    "<|image_end|>",
    "<|patch|>",
    "<|tile_x_separator|>",
    "<|tile_y_separator|>",
]


def build_llama4(chat_template: str | None = LLAMA4_TEMPLATE, seed: int = 0):
    tile, patch, shuffle = 28, 7, 0.5  # each 28 px tile: 16 patches -> 4 tokens after pixel shuffle
    tokenizer = build_tokenizer(
        LLAMA4_SPECIAL, pad="<|finetune_right_pad|>", eos="<|eot|>", chat_template=chat_template
    )
    processor = Llama4Processor(
        # Up to 4 tiles plus a global view: the square and the 2:1 image get different tile counts.
        image_processor=Llama4ImageProcessor(size={"height": tile, "width": tile}, max_patches=4),
        tokenizer=tokenizer,
        patch_size=patch,
        pixel_shuffle_ratio=shuffle,
        chat_template=chat_template,
    )
    ids = tokenizer.convert_tokens_to_ids
    config = Llama4Config(
        vision_config={
            # the pixel-shuffle MLP reads hidden_size / shuffle² = 128 channels (intermediate_size)
            "hidden_size": 32,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": tile,
            "patch_size": patch,
            "pixel_shuffle_ratio": shuffle,
            "vision_output_dim": 32,
            "projector_input_dim": 32,
            "projector_output_dim": 32,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        },
        text_config={
            "vocab_size": len(tokenizer),
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "bos_token_id": None,
            "head_dim": 16,
            "intermediate_size_mlp": 64,
            "num_local_experts": 2,
            "interleave_moe_layer_step": 2,
            "attention_chunk_size": 64,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
            **TEXT,
        },
        boi_token_index=ids("<|image_start|>"),
        eoi_token_index=ids("<|image_end|>"),
        image_token_index=ids("<|patch|>"),
    )
    torch.manual_seed(seed)
    return _finish(Llama4ForConditionalGeneration(config).to(torch.bfloat16), tokenizer), processor


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
    projector_linears: bool = True  # Gemma3's projector is a bare weight matrix, not an nn.Linear
    projector_extra: tuple[str, ...] = ()  # projector parameters outside its module
    # The tower takes one image (or tile) per row, so the vision memo serves it; False where it takes
    # a flat stream of patches (Qwen2-VL), which the memo must never store.
    memo_serves_rows: bool = True


MP = "model.multi_modal_projector"
FAMILIES = {
    "llava": Family("llava", build_llava, "model.vision_tower", MP, True),
    # Qwen2-VL's ViT uses fused ``qkv`` / ``proj`` / ``fc1`` / ``fc2`` names, disjoint from the LM's.
    "qwen2_vl": Family(
        "qwen2_vl", build_qwen2_vl, "model.visual", "model.visual.merger", False, memo_serves_rows=False
    ),
    # Qwen2.5-VL's ViT keeps ``qkv`` / ``proj`` but has a gated MLP named like the LM's (gate_proj, ...).
    "qwen2_5_vl": Family(
        "qwen2_5_vl", build_qwen2_5_vl, "model.visual", "model.visual.merger", True, memo_serves_rows=False
    ),
    "idefics3": Family("idefics3", build_idefics3, "model.vision_model", "model.connector", True),
    "smolvlm": Family("smolvlm", build_smolvlm, "model.vision_model", "model.connector", True),
    "llava_onevision": Family(
        "llava_onevision",
        build_llava_onevision,
        "model.vision_tower",
        MP,
        True,
        projector_extra=("model.image_newline",),
    ),
    "internvl": Family("internvl", build_internvl, "model.vision_tower", MP, True),
    "gemma3": Family("gemma3", build_gemma3, "model.vision_tower", MP, True, projector_linears=False),
    "paligemma": Family("paligemma", build_paligemma, "model.vision_tower", MP, True),
    # No ``model.`` level: vision_model, multi_modal_projector and language_model (with its lm_head).
    "llama4": Family("llama4", build_llama4, "vision_model", "multi_modal_projector", True),
}
