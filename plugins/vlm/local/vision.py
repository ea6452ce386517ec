"""The vision side of a VLM: the transformers vision tower and projector, loaded from the checkpoint.

``VisionEncoder(files, device, dtype)(pixel_values)`` returns the image features
``[images, tokens, hidden]`` that replace the image placeholder tokens, computed
exactly as the transformers model computes them (Llava: a chosen hidden layer,
CLS dropped for the ``default`` strategy, the MLP projector; Gemma 3: SigLIP's
last layer, average-pooled to ``mm_tokens_per_image``, RMS-normed and projected;
Qwen2.5-VL: the windowed ViT with its patch merger, over flattened patches and
their ``(t, h, w)`` grid).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from framelens import ConfigError

from .loading import ModelFiles, read_weights

__all__ = ["VisionEncoder"]


class VisionEncoder(nn.Module):
    """Vision tower + projector of a Llava, Gemma 3 or Qwen2.5-VL checkpoint (see the module docstring)."""

    def __init__(self, files: ModelFiles, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__()
        import transformers

        hf: Any = transformers
        config: Any = hf.AutoConfig.from_pretrained(files.path)
        self.family = files.family
        self.config = config
        with torch.device("meta"):
            if files.family == "qwen2_5_vl":
                from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl

                qwen: Any = modeling_qwen2_5_vl.Qwen2_5_VisionTransformerPretrainedModel
                self.tower: nn.Module = qwen._from_config(config.vision_config)
            else:
                self.tower = hf.AutoModel.from_config(config.vision_config)
            if files.family == "qwen2_5_vl":
                self.projector: nn.Module = nn.Identity()  # the patch merger is part of the tower
            elif files.family == "llava":
                from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

                self.projector = LlavaMultiModalProjector(config)
            else:
                from transformers.models.gemma3.modeling_gemma3 import Gemma3MultiModalProjector

                self.projector = Gemma3MultiModalProjector(config)
        tower = read_weights(files, "vision.", device, dtype)
        proj = read_weights(files, "proj.", device, dtype)
        for module, weights, what in ((self.tower, tower, "vision tower"), (self.projector, proj, "projector")):
            expected = module.state_dict()
            missing = sorted(set(expected) - set(weights))
            if missing:
                raise ConfigError(f"local-model={files.name}: the checkpoint lacks {what} weights "
                                  f"({', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''})")
            module.load_state_dict({k: weights[k] for k in expected}, strict=True, assign=True)
        # buffers that are not in the checkpoint (position ids) are still on meta: rebuild them
        for mod in self.modules():
            for name, buf in list(mod.named_buffers(recurse=False)):
                if buf.is_meta:
                    if "inv_freq" in name and hasattr(mod, "config"):
                        # rotary tables are not in checkpoints: a fresh module on the CPU computes them
                        fresh = type(mod)(mod.config)
                        mod.register_buffer(name, getattr(fresh, name).to(device), persistent=False)
                    elif "position_ids" in name:
                        mod.register_buffer(name, torch.arange(buf.shape[-1], device=device).expand(buf.shape),
                                            persistent=False)
                    else:
                        raise ConfigError(f"local-model={files.name}: vision buffer {name} could not be set up")
        self.tower.to(device=device, dtype=dtype)
        self.projector.to(device=device, dtype=dtype)
        self.eval()
        self.dtype, self.device = dtype, device

    def forward(self, pixel_values: torch.Tensor, grid: tuple[int, int, int] | None = None) -> torch.Tensor:
        """Features ``[images, tokens, hidden]`` of ``pixel_values`` (Qwen2.5-VL: ``[images, patches, D]``
        patches of images that all have the patch ``grid``)."""
        pv = pixel_values.to(device=self.device, dtype=self.dtype)
        if self.family == "qwen2_5_vl":
            if grid is None:
                raise ValueError("Qwen2.5-VL vision needs the image grid")
            n = pv.shape[0]
            thw = torch.tensor([grid] * n, dtype=torch.long, device=self.device)
            merged: torch.Tensor = self.tower(pv.reshape(-1, pv.shape[-1]), grid_thw=thw).pooler_output
            return merged.reshape(n, -1, merged.shape[-1])
        if self.family == "llava":
            layer = self.config.vision_feature_layer
            out = self.tower(pv, output_hidden_states=True, return_dict=True)
            layers = [layer] if isinstance(layer, int) else list(layer)
            picked = [out.hidden_states[i] for i in layers]
            if self.config.vision_feature_select_strategy == "default":
                picked = [h[:, 1:] for h in picked]
            features: torch.Tensor = self.projector(torch.cat(picked, dim=-1))
            return features
        out = self.tower(pixel_values=pv, return_dict=True)
        features = self.projector(out.last_hidden_state)
        return features
