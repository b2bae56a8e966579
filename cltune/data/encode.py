"""Turn task rows into model inputs through the processor's chat template, and pad them into batches.

Training features hold the whole conversation with ``labels`` = −100 everywhere but on the answer
(and the end-of-turn tokens the template puts after it); generation features hold the prompt only.
Encoded rows are memoised per (task, split, row), so the processor runs once per example per run.
"""

from __future__ import annotations

import inspect
from typing import Any

import datasets
import torch

IGNORE_INDEX = -100
# Keys aligned with the token sequence (padded); every other tensor is image data (concatenated).
SEQUENCE_KEYS = ("input_ids", "attention_mask", "labels", "token_type_ids", "mm_token_type_ids")


class ChatTemplateMissing(ValueError):
    """The processor has no chat template, so cltune cannot build prompts for it."""


def user_message(question: str, has_image: bool, choices: list[str] | None = None) -> dict:
    text = question
    if choices:
        options = "\n".join(f"{chr(65 + i)}. {c}" for i, c in enumerate(choices))
        text = f"{question}\n{options}\nAnswer with the option's text."
    content = ([{"type": "image"}] if has_image else []) + [{"type": "text", "text": text}]
    return {"role": "user", "content": content}


class Encoder:
    """Encodes task rows with one model's processor; memoises the results."""

    def __init__(self, processor: Any, model_name: str = "the model"):
        template = getattr(processor, "chat_template", None) or getattr(
            getattr(processor, "tokenizer", None), "chat_template", None
        )
        if not template:
            raise ChatTemplateMissing(
                f"{model_name} has no chat template, so prompts cannot be built; use an instruction-"
                "tuned checkpoint, put a chat_template.jinja file (a Jinja template) in the model "
                "folder, or set processor.chat_template in Python before running"
            )
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        # PaliGemma's processor encodes the answer as a ``suffix`` (prefix-LM attention), not by its template.
        self.prefix_lm = "suffix" in inspect.signature(type(processor).__call__).parameters
        self._cache: dict[tuple, dict[str, torch.Tensor]] = {}

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return self.tokenizer.eos_token_id if pad is None else pad

    def _tokenize(self, text: str, image: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        if image is not None:
            kwargs["images"] = [image]
        enc = self.processor(text=[text], return_tensors="pt", **kwargs)
        return {k: v for k, v in enc.items() if isinstance(v, torch.Tensor)}

    def _encode(self, row: dict, train: bool) -> dict[str, torch.Tensor]:
        image = row.get("image")
        if image is not None:
            image = image.convert("RGB")
        messages = [user_message(row["question"], image is not None, row.get("choices"))]
        prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        prompt_enc = self._tokenize(prompt, image)
        prompt_enc.pop("labels", None)  # PaliGemma's processor labels every text; cltune labels the answer
        if not train:
            return prompt_enc
        if self.prefix_lm:
            return self._encode_suffix(prompt, row["answer"], image, prompt_enc)
        answer = {"role": "assistant", "content": [{"type": "text", "text": row["answer"]}]}
        full = self.processor.apply_chat_template([*messages, answer])
        if not full.startswith(prompt):
            raise ValueError("the chat template's prompt is not a prefix of the full conversation")
        enc = self._tokenize(full, image)
        n_prompt = prompt_enc["input_ids"].shape[1]
        if not torch.equal(enc["input_ids"][0, :n_prompt], prompt_enc["input_ids"][0]):
            raise ValueError("the tokenized prompt is not a prefix of the tokenized conversation")
        labels = enc["input_ids"].clone()
        labels[:, :n_prompt] = IGNORE_INDEX
        enc["labels"] = labels
        return enc

    def _encode_suffix(
        self, prompt: str, answer: str, image: Any, prompt_enc: dict
    ) -> dict[str, torch.Tensor]:
        """A prefix-LM processor (PaliGemma) takes the answer as ``suffix``: it marks the answer with
        ``token_type_ids`` 1 (attended causally, the prompt bidirectionally) and labels it."""
        enc = self._tokenize(prompt, image, suffix=[answer])
        n_prompt = prompt_enc["input_ids"].shape[1]
        if not torch.equal(enc["input_ids"][0, :n_prompt], prompt_enc["input_ids"][0]):
            raise ValueError("the tokenized prompt is not a prefix of the tokenized prompt and answer")
        return enc

    def encode(self, data: datasets.Dataset, index: int, key: str, train: bool) -> dict:
        cache_key = (key, index, train)
        if cache_key not in self._cache:
            self._cache[cache_key] = self._encode(data[index], train)
        return self._cache[cache_key]


def _pad_sequence(tensors: list[torch.Tensor], value: int, left: bool) -> torch.Tensor:
    length = max(t.shape[-1] for t in tensors)
    out = torch.full((len(tensors), length), value, dtype=tensors[0].dtype)
    for i, t in enumerate(tensors):
        t = t.reshape(-1)
        if left:
            out[i, length - len(t) :] = t
        else:
            out[i, : len(t)] = t
    return out


def _stack_images(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate per-example image tensors along dim 0, zero-padding trailing dims if they differ."""
    shape = [max(t.shape[d] for t in tensors) for d in range(1, tensors[0].dim())]
    padded = []
    for t in tensors:
        if list(t.shape[1:]) != shape:
            pad = torch.zeros((t.shape[0], *shape), dtype=t.dtype)
            pad[tuple(slice(0, s) for s in t.shape)] = t
            t = pad
        padded.append(t)
    return torch.cat(padded, dim=0)


def collate(features: list[dict[str, torch.Tensor]], pad_id: int, left: bool = False) -> dict:
    """Pad a list of encoded rows into one batch (left padding for generation)."""
    keys = dict.fromkeys(k for f in features for k in f)
    batch: dict[str, torch.Tensor] = {}
    for key in keys:
        values = [f[key] for f in features if key in f]
        if key in SEQUENCE_KEYS:
            pad = {"input_ids": pad_id, "labels": IGNORE_INDEX}.get(key, 0)
            batch[key] = _pad_sequence(values, pad, left)
        else:
            batch[key] = _stack_images(values)
    return batch
