"""Options of the ``local`` backend (``-c local-KEY=VALUE``)."""

from __future__ import annotations

from typing import Literal

from framelens import Field, Options

__all__ = ["DEFAULT_MODEL", "LocalOptions"]

# Llava-Interleave on Qwen2-0.5B: Apache-2.0, no licence click-through, 0.9 B parameters (1.8 GB in
# bf16), so it runs on a CPU-only box and fits any Jetson; and it is the Llava family the tests cover.
DEFAULT_MODEL = "llava-hf/llava-interleave-qwen-0.5b-hf"


class LocalOptions(Options):
    """Options of the in-process engine. One engine per model, runtime and device is shared by every user."""

    model: str = Field(DEFAULT_MODEL, min_length=1,
                       description="Hugging Face model id or a local directory in the Hugging Face layout")
    runtime: Literal["auto", "torch", "onnx", "tensorrt"] = Field(
        "auto", description="torch (CUDA or CPU), onnx (ONNX Runtime over `framelens engine export` graphs) "
                            "or tensorrt (engines from `framelens engine build`); auto = onnx on a CPU when "
                            "exported graphs are there, else torch")
    device: Literal["auto", "cuda", "cpu"] = Field("auto", description="Where the model runs (auto: cuda if "
                                                   "torch sees a GPU)")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="Weight and activation type (auto: bfloat16 on GPUs that have it, float16 on older "
                            "ones and Jetson Orin, float32 on CPU)")
    max_context: int = Field(2048, ge=64, description="Tokens per sequence (prompt + answer) the KV cache holds")
    max_batch: int = Field(8, ge=1, le=256, description="Sequences decoded together (KV slots)")
    prefix_cache: int = Field(4, ge=0, description="Prompt prefixes (system prompt + images) whose KV is kept "
                              "for reuse, least recently used dropped first (0 = off)")
    max_images: int = Field(4, ge=1, description="Most images one request may carry")
    max_pixels: int = Field(448 * 448, ge=0, description="Qwen2.5-VL: pixels each image is resized to (min = "
                            "max, aspect kept), so every frame of a stream yields the same number of image "
                            "tokens (448x448 = 256 tokens); 0 = the checkpoint's own max_pixels")
    cuda_graphs: bool = Field(True, description="On a GPU, replay the decode step as CUDA graphs (one per batch "
                              "bucket and key window, captured on first use); false = launch its kernels eagerly")
    max_tokens: int = Field(256, ge=1, description="Answer length when a request sets none")
    timeout: float = Field(120.0, gt=0, description="Seconds one request may take, queueing included")
    onnx_dir: str | None = Field(None, description="Folder of `framelens engine export` graphs for runtime=onnx "
                                 "(default: MODEL/onnx for a local model)")
    engine_dir: str | None = Field(None, description="Folder of `framelens engine build` engines for "
                                   "runtime=tensorrt")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) to download")
