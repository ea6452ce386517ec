"""A loaded VLM: decoder, vision encoder, processor, and turning chat messages into a prompt.

:class:`LoadedModel` is what an engine runs. :meth:`LoadedModel.prompt` applies
the model's own chat template and image processor (transformers
``AutoProcessor`` from the model's files), so token ids and pixels are exactly
what the Hugging Face model would see. Each image's placeholder run is
recorded with a content hash, which is what the prefix cache keys on. For
Qwen2.5-VL the prompt also carries each image's patch grid and the mRoPE
positions (see :mod:`.qwen`), and the processor resizes to a fixed pixel budget.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from framelens import BackendError, ChatMessage, ConfigError, ImagePart, TextPart, VideoPart, decode_image

from .decoder import Decoder, DecoderSpec
from .loading import ModelFiles, read_weights
from .qwen import load_processor, rope_index, set_pixel_budget
from .vision import VisionEncoder

__all__ = ["ImageSpan", "LoadedModel", "Prompt", "pick_device"]

log = logging.getLogger("framelens.local")


@dataclass(frozen=True)
class ImageSpan:
    """The placeholder tokens of one image: ``ids[start:end]``, and the image's content hash."""

    start: int
    end: int
    digest: str


@dataclass
class Prompt:
    """Token ids, the pixels of each image (``[3, H, W]`` each) and where each image goes.

    Qwen2.5-VL: ``pixels`` are each image's flattened patches ``[patches, C*T*P*P]``, ``grids`` their
    ``(t, h, w)`` patch grids, ``rope`` the ``[3][len(ids)]`` mRoPE positions and ``rope_delta`` what a
    decode step adds to its KV index to get its rotary position.
    """

    ids: list[int]
    pixels: list[torch.Tensor] = field(default_factory=list)
    spans: list[ImageSpan] = field(default_factory=list)
    grids: list[tuple[int, int, int]] = field(default_factory=list)
    rope: list[list[int]] | None = None
    rope_delta: int = 0

    def boundaries(self) -> list[int]:
        """Prefix lengths that may be cached: the end of each image (never partway through one)."""
        return [s.end for s in self.spans]

    def clamp(self, n: int) -> int:
        """The longest prefix length ``<= n`` that does not cut an image in two."""
        for s in self.spans:
            if s.start < n < s.end:
                return s.start
        return n


def pick_device(device: str, dtype: str) -> tuple[torch.device, torch.dtype]:
    """The torch device and dtype for the ``device``/``dtype`` options."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("local-device=cuda: torch sees no CUDA GPU (this torch build: "
                          f"{torch.__version__}); use local-device=cpu or install a CUDA build of torch")
    dev = torch.device("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu")
    if dtype != "auto":
        dt = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    elif dev.type == "cuda":
        dt = torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    else:
        dt = torch.float32
    return dev, dt


def _eos_ids(files: ModelFiles, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    for source in (files.path / "generation_config.json",):
        try:
            value = json.loads(source.read_text()).get("eos_token_id")
        except (OSError, ValueError):
            value = None
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(int(v) for v in value)
    for value in (files.text_config.get("eos_token_id"), getattr(tokenizer, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
    return frozenset(ids)


class LoadedModel:
    """A checkpoint on the device: see the module docstring. Construction loads everything or raises."""

    def __init__(self, files: ModelFiles, device: torch.device, dtype: torch.dtype, *, max_images: int = 4,
                 max_pixels: int = 0) -> None:
        self.files, self.device, self.dtype, self.max_images = files, device, dtype, max_images
        tied = bool(files.config.get("tie_word_embeddings", files.text_config.get("tie_word_embeddings", False)))
        self.spec = DecoderSpec.from_config(files.text_config, tied=tied)
        try:
            self.processor: Any = load_processor(files.path, files.config.get("architectures") or [])
        except (OSError, ValueError, TypeError, KeyError, ImportError) as exc:
            raise ConfigError(f"local-model={files.name}: its processor/tokenizer files do not load: {exc}") from None
        self.mrope = self.spec.mrope is not None
        self.max_pixels = 0
        self.merge = 1
        if self.mrope:
            try:
                self.max_pixels = set_pixel_budget(self.processor, max_pixels)
            except (ValueError, KeyError, AttributeError) as exc:
                raise ConfigError(f"local-max-pixels={max_pixels}: {exc}") from None
            self.merge = int(files.config.get("vision_config", {}).get("spatial_merge_size", 2))
        self.tokenizer = self.processor.tokenizer
        key = "image_token_index" if "image_token_index" in files.config else "image_token_id"
        self.image_token = int(files.config[key])
        self.eos = _eos_ids(files, self.tokenizer)
        weights = read_weights(files, "lm.", device, dtype)
        head = read_weights(files, "lm_head.", device, dtype)
        weights.update({f"lm_head.{k}": v for k, v in head.items()})
        with torch.device("meta"):
            decoder = Decoder(self.spec)
        decoder.load(weights)
        self.decoder = decoder.eval()
        self.vision = VisionEncoder(files, device, dtype)
        self.parameters = sum(p.numel() for p in self.decoder.parameters()) + sum(
            p.numel() for p in self.vision.parameters())
        self.key = hashlib.sha256(f"{files.path.resolve()}|{dtype}".encode()).hexdigest()[:16]

    @property
    def name(self) -> str:
        return self.files.name

    # -- prompts -------------------------------------------------------------------------------

    def _image(self, part: ImagePart) -> np.ndarray:
        if part.image is not None:
            image = part.image
        else:
            assert part.data is not None
            try:
                image = decode_image(part.data)
            except ValueError:
                raise BackendError(f"an image ({part.mime}, {len(part.data)} bytes) does not decode",
                                   kind="bad_request", status=400, param="messages") from None
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] < 3 or image.shape[0] < 1 or image.shape[1] < 1:
            raise BackendError(f"an image has shape {image.shape}; expected height x width x 3",
                               kind="bad_request", status=400, param="messages")
        return np.ascontiguousarray(image[:, :, 2::-1])  # BGR -> RGB

    def prompt(self, messages: Sequence[ChatMessage], *, generation: bool = True) -> Prompt:
        """Chat messages -> token ids and pixels, via the model's chat template and image processor."""
        from PIL import Image

        hf: list[dict[str, Any]] = []
        images: list[np.ndarray] = []
        for m in messages:
            parts: list[dict[str, Any]] = []
            for p in m.parts():
                if isinstance(p, TextPart):
                    parts.append({"type": "text", "text": p.text})
                elif isinstance(p, ImagePart):
                    images.append(self._image(p))
                    parts.append({"type": "image"})
                elif isinstance(p, VideoPart):
                    raise BackendError("the local engine takes still images, not video clips; send frames as "
                                       "images", kind="unsupported", status=400, param="messages")
            hf.append({"role": m.role, "content": parts})
        if len(images) > self.max_images:
            raise BackendError(f"the request has {len(images)} images; this engine takes at most "
                               f"{self.max_images} per request (local-max-images)", kind="bad_request",
                               status=400, param="messages")
        try:
            text = self.processor.apply_chat_template(hf, add_generation_prompt=generation, tokenize=False)
            inputs = self.processor(text=text, images=[Image.fromarray(i) for i in images] or None,
                                    return_tensors="pt")
        except (ValueError, TypeError, KeyError) as exc:
            raise BackendError(f"the model's processor rejected the request: {exc}", kind="bad_request",
                               status=400, param="messages") from None
        ids = [int(i) for i in inputs["input_ids"][0].tolist()]
        spans: list[ImageSpan] = []
        i = 0
        while i < len(ids):
            if ids[i] == self.image_token:
                j = i
                while j < len(ids) and ids[j] == self.image_token:
                    j += 1
                spans.append(ImageSpan(i, j, ""))
                i = j
            else:
                i += 1
        if len(spans) != len(images):
            raise BackendError(f"the prompt has {len(spans)} image placeholders for {len(images)} images",
                               kind="bad_request", status=400, param="messages")
        grids: list[tuple[int, int, int]] = []
        if self.mrope and images:
            grids = [(int(t), int(h), int(w)) for t, h, w in inputs["image_grid_thw"].tolist()]
            pixels = list(torch.split(inputs["pixel_values"], [t * h * w for t, h, w in grids]))
        else:
            pixels = list(inputs["pixel_values"]) if images else []
        rope: list[list[int]] | None = None
        delta = 0
        if self.mrope:
            try:
                rope, delta = rope_index(ids, self.image_token, grids, self.merge)
            except ValueError as exc:
                raise BackendError(f"the model's processor gave inconsistent image tokens: {exc}",
                                   kind="bad_request", status=400, param="messages") from None
        spans = [ImageSpan(s.start, s.end, hashlib.sha256(np.ascontiguousarray(img).tobytes()
                                                          + str(img.shape).encode()).hexdigest())
                 for s, img in zip(spans, images, strict=True)]
        return Prompt(ids, pixels, spans, grids, rope, delta)

    def token_type_ids(self, ids: Sequence[int]) -> list[int]:
        return [1 if t == self.image_token else 0 for t in ids]
