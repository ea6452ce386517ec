"""Finding a model's files (a local folder or the Hugging Face hub), checking them, reading its weights.

Everything here fails with a :class:`~framelens.ConfigError` that names the file
or model at fault and what to do, before anything is put on the device, so a
bad model never leaves an engine half loaded.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framelens import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["SUPPORTED_ARCHITECTURES", "ModelFiles", "read_weights", "resolve_model"]

log = logging.getLogger("framelens.local")

# architecture in config.json -> family of framelens's decoder and vision code
SUPPORTED_ARCHITECTURES = {
    "LlavaForConditionalGeneration": "llava",
    "Gemma3ForConditionalGeneration": "gemma3",
    "Qwen2_5_VLForConditionalGeneration": "qwen2_5_vl",
}
# text decoders a Llava checkpoint may carry
LLAVA_TEXT_TYPES = ("llama", "mistral", "qwen2")

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
_ALLOW = ["*.json", "*.safetensors", "*.model", "*.jinja", "*.txt"]


@dataclass(frozen=True)
class ModelFiles:
    """A checked model folder: its config, family and weight files."""

    path: Path
    name: str
    config: dict[str, Any]
    family: str
    weights: tuple[Path, ...]

    @property
    def text_config(self) -> dict[str, Any]:
        text = self.config.get("text_config")
        if not text and self.family == "qwen2_5_vl":
            # older Qwen2.5-VL checkpoints keep the decoder settings at the top level
            return {**self.config, "model_type": "qwen2_5_vl_text"}
        return dict(text or {})

    @property
    def text_type(self) -> str:
        return str(self.text_config.get("model_type", "llama"))


def _download(model_id: str, revision: str | None) -> Path:
    try:
        from huggingface_hub import HfApi, snapshot_download
        from huggingface_hub.errors import (
            GatedRepoError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError:  # pragma: no cover - part of the local extra
        raise ConfigError("local-model: downloading needs huggingface_hub: pip install 'framelens[local]'") from None
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if not offline:
        try:
            info = HfApi().model_info(model_id, revision=revision, files_metadata=True)
            size = sum(s.size or 0 for s in info.siblings or () if s.rfilename.endswith(".safetensors"))
            if size:
                log.warning("downloading %s (%.2f GB of weights) into the Hugging Face cache; "
                            "later runs start from the cache", model_id, size / 1e9)
        except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError):
            pass  # snapshot_download below says which
        except Exception as exc:  # no network: snapshot_download may still find the cache
            log.debug("model_info(%s) failed: %s", model_id, exc)
    try:
        # resumable, with tqdm progress bars; HF_HUB_OFFLINE makes it use the cache only
        return Path(snapshot_download(model_id, revision=revision, allow_patterns=_ALLOW))
    except GatedRepoError:
        raise ConfigError(f"local-model={model_id}: the model is gated on the Hugging Face hub; accept its licence "
                          "there and log in (`hf auth login`), or pick an open model") from None
    except RepositoryNotFoundError:
        raise ConfigError(f"local-model={model_id}: no such model on the Hugging Face hub and no such local "
                          "directory; check the id (owner/name) or the path") from None
    except RevisionNotFoundError:
        raise ConfigError(f"local-model={model_id}: revision {revision!r} does not exist on the hub") from None
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if offline else "the hub cannot be reached"
        raise ConfigError(f"local-model={model_id}: the model is not in the Hugging Face cache and {why}; "
                          "download it once with network access (`hf download MODEL`) or pass a local "
                          "directory") from None
    except OSError as exc:
        raise ConfigError(f"local-model={model_id}: download failed: {exc}") from None


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or os.sep in model.strip("/").split("/", 2)[-1] \
        or Path(model).expanduser().exists()


def resolve_model(model: str, revision: str | None = None) -> ModelFiles:
    """The checked files of ``model``: a local folder, else a hub id downloaded into the HF cache."""
    local = Path(model).expanduser()
    if local.is_dir():
        path = local
    elif _looks_like_path(model) or model.count("/") != 1:
        raise ConfigError(f"local-model={model}: no such directory, and not a Hugging Face id (owner/name)")
    else:
        path = _download(model, revision)
    return check_model_dir(path, name=model)


def check_model_dir(path: Path, *, name: str | None = None) -> ModelFiles:
    """Check that ``path`` holds a complete model in the Hugging Face layout and detect its family."""
    label = name or str(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"local-model={label}: {path} has no config.json (expected a Hugging Face model folder "
                          "as save_pretrained writes it)")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"local-model={label}: {config_file} is not valid JSON: {exc}") from None
    archs = config.get("architectures") or []
    family = next((SUPPORTED_ARCHITECTURES[a] for a in archs if a in SUPPORTED_ARCHITECTURES), None)
    if family is None:
        raise ConfigError(f"local-model={label}: architecture {', '.join(archs) or '(none in config.json)'} is not "
                          f"supported by the local engine; supported: {', '.join(SUPPORTED_ARCHITECTURES)} "
                          f"(Llava with a {'/'.join(LLAVA_TEXT_TYPES)} decoder, Gemma 3 4B and up, Qwen2.5-VL)")
    if family == "llava":
        text_type = (config.get("text_config") or {}).get("model_type", "llama")
        if text_type not in LLAVA_TEXT_TYPES:
            raise ConfigError(f"local-model={label}: Llava with a {text_type!r} decoder is not supported; "
                              f"supported decoders: {', '.join(LLAVA_TEXT_TYPES)}")
    weights = tuple(sorted(path.glob("*.safetensors")))
    if not weights:
        bins = sorted(p.name for p in path.glob("*.bin"))
        hint = f" (it has {', '.join(bins)}: convert them to safetensors)" if bins else ""
        raise ConfigError(f"local-model={label}: {path} has no *.safetensors weights{hint}")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"local-model={label}: {index} is unreadable: {exc}") from None
        missing = sorted(s for s in shards if not (path / s).is_file())
        if missing:
            raise ConfigError(f"local-model={label}: weight shards missing from {path}: {', '.join(missing)}")
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        raise ConfigError(f"local-model={label}: {path} has no tokenizer (tokenizer.json or tokenizer.model)")
    if not any((path / f).is_file() for f in _PROCESSOR_FILES):
        raise ConfigError(f"local-model={label}: {path} has no image processor config "
                          "(processor_config.json or preprocessor_config.json)")
    has_template = (path / "chat_template.jinja").is_file() or (path / "chat_template.json").is_file() or any(
        "chat_template" in _json_keys(path / f) for f in ("tokenizer_config.json", "processor_config.json"))
    if not has_template:
        raise ConfigError(f"local-model={label}: {path} has no chat template (chat_template.jinja, or "
                          "chat_template in tokenizer_config.json)")
    return ModelFiles(path, label, config, family, weights)


def _json_keys(file: Path) -> set[str]:
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError):
        return set()
    return set(data) if isinstance(data, dict) else set()


def _normalise(name: str) -> str:
    """One naming for both checkpoint layouts (``language_model.model.*`` and ``model.language_model.*``)."""
    for old, new in (("model.language_model.", "lm."), ("language_model.model.", "lm."),
                     ("language_model.lm_head.", "lm_head."), ("model.vision_tower.", "vision."),
                     ("vision_tower.", "vision."), ("model.multi_modal_projector.", "proj."),
                     ("multi_modal_projector.", "proj."), ("model.visual.", "vision."), ("visual.", "vision."),
                     # Qwen2.5-VL's saved layout keeps its decoder directly under model.
                     ("model.layers.", "lm.layers."), ("model.embed_tokens.", "lm.embed_tokens."),
                     ("model.norm.", "lm.norm.")):
        if name.startswith(old):
            return new + name[len(old):]
    return name


def _tensor_names(files: ModelFiles, file: Path) -> list[str]:
    """The tensor names stored in ``file`` (its header only); a broken file is a ConfigError."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), "pt") as f:
            return list(f.keys())
    except (SafetensorError, OSError, ValueError) as exc:
        raise ConfigError(f"local-model={files.name}: {file} is not a valid safetensors file ({exc}); "
                          "download it again") from None


def iter_weights(files: ModelFiles) -> Iterator[tuple[str, Path]]:
    """``(normalised name, file)`` for every tensor, reading only the headers."""
    for file in files.weights:
        for n in _tensor_names(files, file):
            yield _normalise(n), file


def read_weights(files: ModelFiles, prefix: str, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The tensors whose normalised name starts with ``prefix`` (prefix removed), on ``device`` in ``dtype``."""
    from safetensors import SafetensorError, safe_open

    out: dict[str, torch.Tensor] = {}
    by_file: dict[Path, list[str]] = {}
    for file in files.weights:
        by_file[file] = [n for n in _tensor_names(files, file) if _normalise(n).startswith(prefix)]
    for file, names in by_file.items():
        if not names:
            continue
        try:
            with safe_open(str(file), "pt", device="cpu") as f:
                for n in names:
                    t = f.get_tensor(n)
                    out[_normalise(n)[len(prefix):]] = t.to(device=device, dtype=dtype if t.is_floating_point()
                                                            else t.dtype)
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"local-model={files.name}: reading {file} failed ({exc}); the file is damaged or "
                              "truncated, download it again") from None
    return out
