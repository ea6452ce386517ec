"""The ``brightness`` backend: a VLMBackend that needs no model, to show the contract.

It answers every question with how bright the last image of the request is, so
``-p describe -c describe-backend=brightness`` and ``serve --backend brightness``
work without any change to framelens.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import numpy as np

from framelens import (
    BackendError,
    ChatChunk,
    ChatMessage,
    ChatResult,
    Field,
    GenerationParams,
    ImagePart,
    ModelInfo,
    Options,
    Usage,
    VLMBackend,
    decode_image,
)

__all__ = ["BrightnessBackend", "BrightnessOptions"]


class BrightnessOptions(Options):
    model: str = Field("brightness-1", description="The model name the backend reports")
    timeout: float = Field(5.0, gt=0, description="Seconds a call may take")


class BrightnessBackend(VLMBackend):
    """Answers "The image is dark/dim/bright (mean N/255)." about the last image sent."""

    name = "brightness"
    supports = frozenset({"images", "stream", "max_tokens"})

    def __init__(self, options: BrightnessOptions) -> None:
        self.options = options

    @property
    def default_model(self) -> str | None:
        return self.options.model

    @property
    def request_timeout(self) -> float:
        return self.options.timeout

    def _answer(self, messages: Sequence[ChatMessage]) -> str:
        images = [p for m in messages for p in m.parts() if isinstance(p, ImagePart)]
        if not images:
            raise BackendError("brightness needs an image in the request", kind="bad_request", status=400)
        part = images[-1]
        image = part.image if part.image is not None else decode_image(part.data or b"")
        mean = float(np.mean(image))
        word = "dark" if mean < 64 else "dim" if mean < 128 else "bright"
        return f"The image is {word} (mean {mean:.0f}/255)."

    async def chat(self, messages: Sequence[ChatMessage], params: GenerationParams) -> ChatResult:
        text = self._answer(messages)
        return ChatResult(text, usage=Usage(1, len(text.split())), model=params.model or self.options.model)

    async def stream(self, messages: Sequence[ChatMessage], params: GenerationParams) -> AsyncIterator[ChatChunk]:
        words = self._answer(messages).split(" ")
        model = params.model or self.options.model
        for i, word in enumerate(words):
            yield ChatChunk(word if i == 0 else " " + word, model=model)
        # The last chunk carries finish_reason and usage: that is the streaming contract.
        yield ChatChunk("", finish_reason="stop", usage=Usage(1, len(words)), model=model)

    async def models(self) -> list[ModelInfo]:
        return [ModelInfo(self.options.model, owned_by="framelens-grayscale", capabilities=("vision",))]
