"""Tiny random-weight VLMs in the Hugging Face layout, for tests, benchmarks and ``engine bench``.

Every family the engine supports can be built from a config in a second,
seeded, with ``initializer_range`` 0.1 so greedy answers do not collapse to one
repeated token. The directory written is exactly what ``save_pretrained``
writes for a real checkpoint (config.json, model.safetensors, tokenizer,
processor, chat template), so the loader sees no difference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["TINY_FAMILIES", "build_tiny_model"]

TINY_FAMILIES = ("llava", "llava-qwen2", "gemma3", "qwen2_5_vl")

_CORPUS = [
    "a person walks past the red car in the parking lot at night",
    "the camera shows an empty room with a table and two chairs",
    "is there smoke or fire in the kitchen? yes or no",
    "a dog runs across the green grass near the white fence",
    "describe what is in this picture in one short sentence",
    "the door is open and a delivery van waits outside in the rain",
    "caf\u00e9 na\u00efve \u00fcber \u65e5\u672c \u2603 emoji \U0001f600 text",
]

_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>"
    "{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}{{ IMAGE }}"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|end|>"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _tokenizer(specials: list[str], **extra: Any) -> Any:
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    fast: Any = transformers.PreTrainedTokenizerFast

    bos, eos, pad, unk = "<s>", "</s>", "<pad>", "<unk>"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    names = [pad, bos, eos, unk, "<|user|>", "<|assistant|>", "<|system|>", "<|end|>", *specials]
    tok.train_from_iterator(_CORPUS * 4, trainers.BpeTrainer(
        vocab_size=420, special_tokens=names, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))])
    return fast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad, unk_token=unk,
                                   additional_special_tokens=names[4:], **extra)


def _qwen2_5_vl(hidden: int, layers: int) -> tuple[Any, Any, Any]:
    import transformers

    from .qwen import _image_only

    T: Any = transformers
    tok = _tokenizer(["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"])
    tok.chat_template = _TEMPLATE.replace("{{ IMAGE }}", "<|vision_start|><|image_pad|><|vision_end|>")
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    # 14 px patches merged 2x2; one full-attention block and one windowed, as in the real tower
    vision = {"depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4, "patch_size": 14,
              "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 56, "out_hidden_size": hidden,
              "fullatt_block_indexes": [1], "tokens_per_second": 2, "initializer_range": 0.1}
    # head_dim 32: mrope_section adds up to 16, split over the temporal, height and width axes
    text = {"vocab_size": len(tok), "hidden_size": hidden, "intermediate_size": hidden * 2 + 176,
            "num_hidden_layers": layers, "num_attention_heads": 8, "num_key_value_heads": 2,
            "max_position_embeddings": 1024, "initializer_range": 0.1,
            "rope_parameters": {"rope_type": "default", "mrope_section": [4, 6, 6], "rope_theta": 1e4}, **ids}
    cfg = T.Qwen2_5_VLConfig(vision_config=vision, text_config=text, tie_word_embeddings=False,
                             image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
                             video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
                             vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
                             vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"), **ids)
    model = T.Qwen2_5_VLForConditionalGeneration(cfg).eval()
    from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    # 112x112 px: a 64x48 test frame becomes an 8x10 patch grid, 20 image tokens (h != w tests mRoPE's axes)
    image = Qwen2VLImageProcessorPil(min_pixels=112 * 112, max_pixels=112 * 112, patch_size=14, merge_size=2,
                                     temporal_patch_size=2)
    proc = _image_only(Qwen2_5_VLProcessor)(image_processor=image, tokenizer=tok, chat_template=tok.chat_template)
    return model, proc, tok


def build_tiny_model(family: str, directory: str | Path, *, seed: int = 0, layers: int = 4,
                     hidden: int = 256) -> Path:
    """Write a tiny random ``family`` model (one of :data:`TINY_FAMILIES`) into ``directory`` and return it."""
    import torch
    import transformers

    T: Any = transformers

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if family in ("llava", "llava-qwen2"):
        tok = _tokenizer(["<image>"])
        tok.chat_template = _TEMPLATE.replace("{{ IMAGE }}", "<image>")
        vision = T.CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                    image_size=32, patch_size=8, projection_dim=64, initializer_range=0.1)
        ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
        text: Any
        if family == "llava":
            text = T.LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2 + 176,
                                 num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=4,
                                 max_position_embeddings=1024, tie_word_embeddings=False, initializer_range=0.1, **ids)
        else:
            text = T.Qwen2Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2 + 176,
                                 num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=2,
                                 max_position_embeddings=1024, tie_word_embeddings=True, initializer_range=0.1,
                                 rope_parameters={"rope_type": "default", "rope_theta": 1e6}, **ids)
        cfg = T.LlavaConfig(vision_config=vision, text_config=text,
                            image_token_index=tok.convert_tokens_to_ids("<image>"),
                            vision_feature_layer=-2, vision_feature_select_strategy="default")
        model = T.LlavaForConditionalGeneration(cfg).eval()
        proc = T.LlavaProcessor(image_processor=T.CLIPImageProcessor(size={"shortest_edge": 32},
                                                                    crop_size={"height": 32, "width": 32}),
                                tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
                                num_additional_image_tokens=1, chat_template=tok.chat_template)
    elif family == "gemma3":
        tok = _tokenizer(["<start_of_image>", "<image_soft_token>", "<end_of_image>"],
                         extra_special_tokens={"boi_token": "<start_of_image>", "image_token": "<image_soft_token>",
                                               "eoi_token": "<end_of_image>"})
        tok.chat_template = _TEMPLATE.replace("{{ IMAGE }}", "<start_of_image>")
        vision = T.SiglipVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, image_size=32, patch_size=8, vision_use_head=False)
        text = T.Gemma3TextConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2 + 176,
                                  num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                                  max_position_embeddings=1024, sliding_window=16, initializer_range=0.1,
                                  query_pre_attn_scalar=64, bos_token_id=tok.bos_token_id,
                                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                  layer_types=["sliding_attention", "full_attention"] * (layers // 2))
        cfg = T.Gemma3Config(vision_config=vision, text_config=text, mm_tokens_per_image=4,
                             boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
                             eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"),
                             image_token_index=tok.convert_tokens_to_ids("<image_soft_token>"), initializer_range=0.1,
                             tie_word_embeddings=False)
        # Untied: with a tied head the scaled input embedding dominates and greedy repeats the last token.
        model = T.Gemma3ForConditionalGeneration(cfg).eval()
        with torch.no_grad():  # the (1 + w) norms start at zero; random values test that the 1 is added
            for name, p in model.named_parameters():
                if "norm" in name and p.dim() == 1:
                    p.normal_(0.0, 0.1)
            # Zero at init in transformers: without values here the image would not reach the decoder.
            model.model.multi_modal_projector.mm_input_projection_weight.normal_(0.0, 0.1)
        proc = T.Gemma3Processor(image_processor=T.Gemma3ImageProcessor(size={"height": 32, "width": 32}),
                                 tokenizer=tok, image_seq_length=4, chat_template=tok.chat_template)
    elif family == "qwen2_5_vl":
        model, proc, tok = _qwen2_5_vl(hidden, layers)
    else:
        raise ValueError(f"unknown tiny family {family!r}; pick one of {', '.join(TINY_FAMILIES)}")
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out
