"""What Qwen2.5-VL needs beyond the other families: its processor, a fixed pixel budget, mRoPE positions.

- **Processor.** Without torchvision, transformers cannot build Qwen's video
  processor, so ``AutoProcessor`` refuses the whole checkpoint. The engine only
  takes still images, so :func:`load_processor` falls back to an image-only
  subclass of the checkpoint's own processor class (same tokenizer, chat
  template and image processor; no video processor).
- **Pixel budget.** Qwen resizes each image to *about* ``max_pixels`` keeping
  its aspect ratio, so a large frame would yield thousands of tokens. Setting
  ``min_pixels = max_pixels`` (:func:`set_pixel_budget`) makes every frame of a
  stream (one resolution) yield the same token count, which keeps prefill cost
  and KV use per request constant.
- **mRoPE.** :func:`rope_index` computes the 3-D (temporal, height, width)
  positions of one prompt on the host, exactly as transformers'
  ``get_rope_index`` does for images: text advances all three axes by one,
  an image block gets its grid coordinates offset by the position it starts
  at, and the text after it continues from ``start + max(h, w) / merge``, not
  from the token count. The difference (``delta``) is what decode positions
  add to the KV write index.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["QWEN_ARCHITECTURES", "load_processor", "rope_index", "set_pixel_budget"]

QWEN_ARCHITECTURES = ("Qwen2_5_VLForConditionalGeneration",)


def _image_only(cls: Any) -> Any:
    """A subclass of processor ``cls`` that has no video processor (see the module docstring)."""

    def __init__(self: Any, image_processor: Any = None, tokenizer: Any = None, video_processor: Any = None,
                 chat_template: Any = None, **kw: Any) -> None:
        cls.__init__(self, image_processor, tokenizer, video_processor, chat_template=chat_template, **kw)
        self.video_processor = None

    return type(cls.__name__, (cls,), {"__init__": __init__,
                                       "get_attributes": classmethod(lambda c: ["image_processor", "tokenizer"])})


def load_processor(path: Path, architectures: Sequence[str]) -> Any:
    """The checkpoint's processor: ``AutoProcessor``, or the image-only Qwen processor when that fails.

    Raises what ``from_pretrained`` raises (OSError, ValueError, ...); the caller turns it into a ConfigError.
    """
    import transformers

    hf: Any = transformers
    try:
        return hf.AutoProcessor.from_pretrained(path)
    except (OSError, ValueError, TypeError, KeyError, ImportError) as exc:
        if not any(a in QWEN_ARCHITECTURES for a in architectures):
            raise
        first = exc
    from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor

    try:
        return _image_only(Qwen2_5_VLProcessor).from_pretrained(path)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise OSError(f"{first}; the image-only fallback failed too: {exc}") from None


def set_pixel_budget(processor: Any, pixels: int) -> int:
    """Make the image processor resize every image to about ``pixels`` (min = max); return the budget used.

    ``pixels <= 0`` keeps the checkpoint's own ``max_pixels`` as the fixed budget.
    """
    ip = processor.image_processor
    size = ip.size
    budget = pixels if pixels > 0 else int(size["longest_edge"] if "longest_edge" in size else ip.max_pixels)
    factor = int(ip.patch_size) * int(ip.merge_size)
    if budget < factor * factor:
        raise ValueError(f"a pixel budget of {budget} is below one image token ({factor}x{factor} pixels)")
    ip.size = type(size)(shortest_edge=budget, longest_edge=budget)
    for name in ("min_pixels", "max_pixels"):
        if hasattr(ip, name):
            setattr(ip, name, budget)
    return budget


def rope_index(ids: Sequence[int], image_token: int, grids: Sequence[tuple[int, int, int]],
               merge: int) -> tuple[list[list[int]], int]:
    """The ``[3][len(ids)]`` mRoPE positions of one prompt and its decode ``delta`` (next position - length).

    ``grids`` holds the ``(t, h, w)`` patch grid of each image block in order, as the processor's
    ``image_grid_thw`` gives it.
    """
    axes: list[list[int]] = [[], [], []]
    pos, i, k = 0, 0, 0
    n = len(ids)
    while i < n:
        if ids[i] != image_token:
            for a in axes:
                a.append(pos)
            pos += 1
            i += 1
            continue
        j = i
        while j < n and ids[j] == image_token:
            j += 1
        if k >= len(grids):
            raise ValueError("the prompt has more image blocks than image grids")
        t, h, w = grids[k][0], grids[k][1] // merge, grids[k][2] // merge
        if t * h * w != j - i:
            raise ValueError(f"image block {k} has {j - i} tokens but its grid {grids[k]} gives {t * h * w}")
        for tt in range(t):
            for hh in range(h):
                for ww in range(w):
                    axes[0].append(pos + tt)
                    axes[1].append(pos + hh)
                    axes[2].append(pos + ww)
        # transformers advances by the larger spatial side only (images have t = 1)
        pos += max(h, w)
        k, i = k + 1, j
    top = max((max(a) for a in axes if a), default=-1)
    return axes, top + 1 - n
