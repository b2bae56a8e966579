"""Shared fixtures: one pre-trained tiny model per test session, the real data folder, small streams."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# The tiny model is pre-trained once and cached; tests share the cache (set before cltune imports).
os.environ.setdefault("CLTUNE_CACHE", str(REPO / ".pytest_cache" / "cltune-cache"))
if SHARED_DATA.is_dir():
    os.environ.setdefault("CLTUNE_DATA_DIR", str(SHARED_DATA))


@pytest.fixture(scope="session")
def default_stream():
    """The default stream, built once (real digits data)."""
    from cltune.data.recipe import load_stream

    return load_stream("default")


@pytest.fixture(scope="session")
def tiny_cached(default_stream):
    """Ensure the tiny model for the default stream is pre-trained and cached (once per session)."""
    from cltune.models.loading import load_model

    load_model("tiny", pretrain_tasks=default_stream.general, seed=default_stream.seed)
    return True


@pytest.fixture
def tiny(tiny_cached, default_stream):
    """A fresh copy of the pre-trained tiny model and its processor (loaded from the cache)."""
    from cltune.models.loading import load_model

    return load_model("tiny", pretrain_tasks=default_stream.general, seed=default_stream.seed)


@pytest.fixture(scope="session")
def smol():
    """The assembled ``smol`` model (pretrained LM and tower, untrained projector) and its processor.

    Shared by the session: tests that change its weights work on a copy.
    """
    import torch

    from cltune.models.cache import cache_dir
    from cltune.models.smol.build import assemble

    torch.manual_seed(0)
    model, processor = assemble(cache_dir(), seed=0)
    return model.eval(), processor


# The default stream's general task (so the cached tiny model, pre-trained on it, is reused), at a
# small test size.
DIGIT_GENERAL = """
[[general]]
name = "digit"
source = "digits"
question_type = "label"
train_size = 1300
test_size = 16
"""


def small_recipe_text(
    tasks: tuple[str, ...] = ("parity", "greater_than_4"), train_size: int = 48, test_size: int = 16
) -> str:
    """A reduced default stream: these digits question types in this order, and the general task."""
    blocks = "".join(f'\n[[tasks]]\nname = "{t}"\nsource = "digits"\nquestion_type = "{t}"\n' for t in tasks)
    return f"""
name = "small"
seed = 0
description = "a reduced default stream for tests"

[defaults]
train_size = {train_size}
test_size = {test_size}
{blocks}{DIGIT_GENERAL}
[train]
lr = 1e-3
epochs = 1
batch_size = 16
"""


SMALL_RECIPE = small_recipe_text()


@pytest.fixture(scope="session")
def small_recipe(tmp_path_factory) -> Path:
    """A two-task recipe on the digits data whose general task equals the default stream's
    (same pre-training set, so the cached tiny model is reused); written once, read only."""
    path = tmp_path_factory.mktemp("recipe") / "small.toml"
    path.write_text(SMALL_RECIPE)
    return path
