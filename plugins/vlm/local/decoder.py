"""framelens's own text decoder: Llama/Mistral/Qwen2, Gemma 3 and Qwen2.5-VL, over the engine's KV pool.

One module runs both shapes of step. *Prefill*: ``[B, S]`` new tokens per row
at their own positions, written into the KV pool at those positions and
attending to what is there under a given mask. *Decode*: the same with
``S = 1`` and a fixed key window, so the step has fixed shapes for a given
batch bucket and can be captured as a CUDA graph. Positions and KV write
offsets are tensors; nothing in the step reads a value back to the host.

Gemma 3's differences are switches: the ``sqrt(hidden)`` embedding scale,
``(1 + w)`` RMSNorm computed in float32, q/k norms, sandwich norms around
attention and MLP, GELU-tanh, ``query_pre_attn_scalar`` scaling, per-layer
RoPE bases and sliding-window layers. The mask (built by the engine) carries
the bidirectional image blocks. Qwen2.5-VL's is mRoPE: each frequency band
(``mrope_section``) rotates by one of three position axes (temporal, height,
width), which the caller passes as ``rope_positions [3, B, S]`` apart from the
KV write index, since after an image the two differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from framelens import ConfigError

__all__ = ["Decoder", "DecoderSpec", "KVPool"]


@dataclass(frozen=True)
class DecoderSpec:
    """The shapes and switches of one decoder, read from a ``text_config``."""

    style: str  # "llama" (Llama, Mistral, Qwen2) or "gemma3"
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    eps: float
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    act: str
    scaling: float
    rope: tuple[tuple[float, ...], ...]  # inverse frequencies per layer
    rope_scale: tuple[float, ...]  # attention scaling of cos/sin per layer
    sliding: tuple[int | None, ...]  # window per layer (None: global attention)
    tied: bool
    final_softcap: float | None
    max_positions: int
    mrope: tuple[int, ...] | None = None  # Qwen2.5-VL: frequency bands per position axis (t, h, w)

    @staticmethod
    def from_config(text: dict[str, Any], *, tied: bool) -> DecoderSpec:
        """Read a transformers ``text_config`` dict; unsupported settings are a ConfigError."""
        mt = str(text.get("model_type", "llama"))
        style = "gemma3" if mt.startswith("gemma3") else "llama"
        hidden, heads = int(text["hidden_size"]), int(text["num_attention_heads"])
        head_dim = int(text.get("head_dim") or hidden // heads)
        layers = int(text["num_hidden_layers"])
        if text.get("attn_logit_softcapping"):
            raise ConfigError(f"text decoder {mt}: attention logit soft-capping is not supported")
        types = list(text.get("layer_types") or [])
        window = text.get("sliding_window")
        if not types:
            types = ["sliding_attention" if window and text.get("use_sliding_window", True) and mt == "mistral"
                     else "full_attention"] * layers
        sliding = tuple(int(window) if t == "sliding_attention" and window else None for t in types)
        rope, scale = [], []
        params = text.get("rope_parameters") or {}
        mrope: tuple[int, ...] | None = None
        if mt.startswith("qwen2_5_vl"):
            # older configs call it rope_scaling {"type": "mrope", ...}; the frequencies are the default ones
            params = dict(params or text.get("rope_scaling") or {})
            section = params.get("mrope_section")
            if not section or sum(int(x) for x in section) != head_dim // 2:
                raise ConfigError(f"text decoder {mt}: mrope_section {section} must add up to head_dim/2 "
                                  f"= {head_dim // 2}")
            mrope = tuple(int(x) for x in section)
            params = {"rope_type": "default", "rope_theta": params.get("rope_theta", text.get("rope_theta", 1e6))}
        for t in types:
            p = params.get(t, params) if style == "gemma3" else params
            inv, s = _rope(text, p or {}, head_dim, t if style == "gemma3" else None)
            rope.append(tuple(inv))
            scale.append(s)
        scaling = (float(text["query_pre_attn_scalar"]) ** -0.5 if style == "gemma3"
                   else head_dim ** -0.5)
        act = str(text.get("hidden_activation") or text.get("hidden_act") or "silu")
        if act not in ("silu", "gelu_pytorch_tanh", "gelu"):
            raise ConfigError(f"text decoder {mt}: activation {act!r} is not supported")
        qwen = mt == "qwen2" or mt.startswith("qwen2_5_vl")
        bias = bool(text.get("attention_bias", qwen))
        return DecoderSpec(
            style=style, vocab=int(text["vocab_size"]), hidden=hidden, layers=layers, heads=heads,
            kv_heads=int(text.get("num_key_value_heads") or heads), head_dim=head_dim,
            intermediate=int(text["intermediate_size"]), eps=float(text.get("rms_norm_eps", 1e-6)),
            qkv_bias=bias or qwen, o_bias=bias and not qwen, mlp_bias=bool(text.get("mlp_bias", False)),
            act=act, scaling=scaling, rope=tuple(rope), rope_scale=tuple(scale), sliding=sliding, tied=tied,
            final_softcap=text.get("final_logit_softcapping"), max_positions=int(text.get("max_position_embeddings",
                                                                                         4096)),
            mrope=mrope,
        )

    def kv_bytes_per_token(self, dtype: torch.dtype) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * torch.finfo(dtype).bits // 8


def _rope(text: dict[str, Any], p: dict[str, Any], dim: int, layer_type: str | None) -> tuple[list[float], float]:
    kind = p.get("rope_type", "default")
    theta = float(p.get("rope_theta", text.get("rope_theta", 10000.0)))
    inv = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    if kind == "default":
        return inv.tolist(), 1.0
    if kind == "linear":
        return (inv / float(p["factor"])).tolist(), 1.0
    try:  # llama3, yarn, ...: transformers' reference formulas
        from transformers import PretrainedConfig
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        cfg = PretrainedConfig(**{**text, "rope_parameters": text.get("rope_parameters")})
        if layer_type is not None:
            f, s = ROPE_INIT_FUNCTIONS[kind](cfg, None, layer_type=layer_type)
        else:
            f, s = ROPE_INIT_FUNCTIONS[kind](cfg, None)
        return f.tolist(), float(s)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"rope type {kind!r} is not supported ({exc})") from None


class RMSNorm(nn.Module):
    """Llama's RMSNorm (``w * x``), or Gemma's (``(1 + w) * x`` in float32).

    One fused ``rms_norm`` over the float32 input instead of the half-dozen
    elementwise kernels of the textbook formula: a decode step runs six of these
    per Gemma layer, and at batch 1 their launches, not their bytes, cost time.
    """

    def __init__(self, dim: int, eps: float, gemma: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim))
        self.eps, self.gemma = eps, gemma
        self.gemma_weight: torch.Tensor | None = None

    def prepare(self) -> None:
        """Precompute Gemma's ``1 + w`` in float32 once the weights are loaded."""
        if self.gemma:
            self.gemma_weight = 1.0 + self.weight.detach().float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (x.shape[-1],)
        if self.gemma:
            w = self.gemma_weight if self.gemma_weight is not None else 1.0 + self.weight.float()
            return F.rms_norm(x.float(), shape, w, self.eps).type_as(x)
        return self.weight * F.rms_norm(x.float(), shape, None, self.eps).to(x.dtype)


class KVPool:
    """The preallocated KV cache: ``k``/``v`` of shape ``[slots, layers, kv_heads, capacity, head_dim]``.

    Slot-major so that forking a prefix into another slot is one contiguous copy.
    The last slot is scratch: padded rows of a batch write there.
    """

    def __init__(self, spec: DecoderSpec, slots: int, capacity: int, device: torch.device, dtype: torch.dtype) -> None:
        shape = (slots + 1, spec.layers, spec.kv_heads, capacity, spec.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.slots, self.capacity, self.scratch = slots, capacity, slots
        self.heads = torch.arange(spec.kv_heads, device=device)

    def copy(self, src: int, dst: int, length: int) -> None:
        """Copy the first ``length`` positions of slot ``src`` into slot ``dst`` (a prefix fork)."""
        self.k[dst, :, :, :length].copy_(self.k[src, :, :, :length])
        self.v[dst, :, :, :length].copy_(self.v[src, :, :, :length])

    @property
    def nbytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()


def _fuse(module: nn.Module, name: str, parts: tuple[nn.Linear, ...]) -> None:
    # the parameters become views of the stacked matrix: the weights stay in memory once, and state_dict()
    # still has the Hugging Face names
    weight = torch.cat([p.weight.detach() for p in parts])
    bias = torch.cat([p.bias.detach() for p in parts]) if parts[0].bias is not None else None
    at = 0
    for p in parts:
        n = p.weight.shape[0]
        p.weight = nn.Parameter(weight[at:at + n], requires_grad=False)
        if bias is not None:
            p.bias = nn.Parameter(bias[at:at + n], requires_grad=False)
        at += n
    setattr(module, f"{name}_weight", weight)
    setattr(module, f"{name}_bias", bias)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class _Attention(nn.Module):
    def __init__(self, spec: DecoderSpec, layer: int) -> None:
        super().__init__()
        self.spec, self.layer = spec, layer
        hd = spec.head_dim
        self.q_proj = nn.Linear(spec.hidden, spec.heads * hd, bias=spec.qkv_bias)
        self.k_proj = nn.Linear(spec.hidden, spec.kv_heads * hd, bias=spec.qkv_bias)
        self.v_proj = nn.Linear(spec.hidden, spec.kv_heads * hd, bias=spec.qkv_bias)
        self.o_proj = nn.Linear(spec.heads * hd, spec.hidden, bias=spec.o_bias)
        if spec.style == "gemma3":
            self.q_norm = RMSNorm(hd, spec.eps, True)
            self.k_norm = RMSNorm(hd, spec.eps, True)
        # set by fuse(); plain attributes, not buffers: state_dict() keeps the Hugging Face layout
        self.qkv_weight: torch.Tensor | None = None
        self.qkv_bias: torch.Tensor | None = None

    def fuse(self) -> None:
        """Stack the q, k and v weights into one matrix (the three parameters become views of it), so a step
        runs one projection instead of three."""
        _fuse(self, "qkv", (self.q_proj, self.k_proj, self.v_proj))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, pool: KVPool, rows: torch.Tensor,
                write: torch.Tensor, read: torch.Tensor, window: int, mask: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        hd = self.spec.head_dim
        if self.qkv_weight is not None:
            nq, nk = self.spec.heads * hd, self.spec.kv_heads * hd
            fq, fk, fv = torch.split(F.linear(x, self.qkv_weight, self.qkv_bias), [nq, nk, nk], dim=-1)
        else:
            fq, fk, fv = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = fq.view(b, s, -1, hd).transpose(1, 2)
        k = fk.view(b, s, -1, hd).transpose(1, 2)
        v = fv.view(b, s, -1, hd).transpose(1, 2)
        if self.spec.style == "gemma3":
            q, k = self.q_norm(q), self.k_norm(k)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        # write the new keys at their positions: rows[b, s] is the slot (scratch for padding)
        idx = (rows[:, :, None], pool.heads[None, None, :], write[:, :, None])
        kl, vl = pool.k[:, self.layer], pool.v[:, self.layer]
        kl.index_put_(idx, k.transpose(1, 2))
        vl.index_put_(idx, v.transpose(1, 2))
        # index_select on the window view: advanced indexing (kl[read, :, :window]) copies ~20x slower on CPU
        keys = torch.index_select(kl[:, :, :window], 0, read)
        values = torch.index_select(vl[:, :, :window], 0, read)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=self.spec.scaling,
                                             enable_gqa=self.spec.heads != self.spec.kv_heads)
        result: torch.Tensor = self.o_proj(out.transpose(1, 2).reshape(b, s, -1))
        return result


class _MLP(nn.Module):
    def __init__(self, spec: DecoderSpec) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(spec.hidden, spec.intermediate, bias=spec.mlp_bias)
        self.up_proj = nn.Linear(spec.hidden, spec.intermediate, bias=spec.mlp_bias)
        self.down_proj = nn.Linear(spec.intermediate, spec.hidden, bias=spec.mlp_bias)
        self.tanh = spec.act == "gelu_pytorch_tanh"
        self.silu = spec.act == "silu"
        self.gate_up_weight: torch.Tensor | None = None
        self.gate_up_bias: torch.Tensor | None = None

    def fuse(self) -> None:
        """One matrix for the gate and up projections (see :meth:`_Attention.fuse`)."""
        _fuse(self, "gate_up", (self.gate_proj, self.up_proj))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up_weight is not None:
            g, up = F.linear(x, self.gate_up_weight, self.gate_up_bias).chunk(2, dim=-1)
        else:
            g, up = self.gate_proj(x), self.up_proj(x)
        g = F.silu(g) if self.silu else F.gelu(g, approximate="tanh" if self.tanh else "none")
        out: torch.Tensor = self.down_proj(g * up)
        return out


class _Layer(nn.Module):
    def __init__(self, spec: DecoderSpec, layer: int) -> None:
        super().__init__()
        gemma = spec.style == "gemma3"
        self.self_attn = _Attention(spec, layer)
        self.mlp = _MLP(spec)
        self.input_layernorm = RMSNorm(spec.hidden, spec.eps, gemma)
        self.post_attention_layernorm = RMSNorm(spec.hidden, spec.eps, gemma)
        self.sandwich = gemma
        if gemma:
            self.pre_feedforward_layernorm = RMSNorm(spec.hidden, spec.eps, True)
            self.post_feedforward_layernorm = RMSNorm(spec.hidden, spec.eps, True)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, pool: KVPool, rows: torch.Tensor,
                write: torch.Tensor, read: torch.Tensor, window: int, mask: torch.Tensor) -> torch.Tensor:
        a = self.self_attn(self.input_layernorm(x), cos, sin, pool, rows, write, read, window, mask)
        if self.sandwich:
            x = x + self.post_attention_layernorm(a)
            out: torch.Tensor = x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))
            return out
        x = x + a
        y: torch.Tensor = x + self.mlp(self.post_attention_layernorm(x))
        return y


class Decoder(nn.Module):
    """The decoder stack, its embedding and head. Weights use the Hugging Face names
    (``embed_tokens``, ``layers.N.self_attn.q_proj``, ``norm``, ``lm_head``)."""

    def __init__(self, spec: DecoderSpec) -> None:
        super().__init__()
        self.spec = spec
        self.embed_tokens = nn.Embedding(spec.vocab, spec.hidden)
        self.layers = nn.ModuleList(_Layer(spec, i) for i in range(spec.layers))
        self.norm = RMSNorm(spec.hidden, spec.eps, spec.style == "gemma3")
        self.lm_head = nn.Linear(spec.hidden, spec.vocab, bias=False)
        self.embed_scale = math.sqrt(spec.hidden) if spec.style == "gemma3" else 1.0
        self._inv: dict[tuple[tuple[float, ...], torch.device], torch.Tensor] = {}
        self._axis: dict[torch.device, torch.Tensor] = {}

    def load(self, weights: dict[str, torch.Tensor]) -> None:
        """Take the weights (names without the ``language_model.`` prefix); a missing one is a ConfigError."""
        if "lm_head.weight" not in weights:
            weights = {**weights, "lm_head.weight": weights.get("embed_tokens.weight", torch.empty(0))}
        expected = set(self.state_dict())
        missing = sorted(expected - set(weights))
        if missing:
            raise ConfigError(f"the checkpoint lacks decoder weights: {', '.join(missing[:5])}"
                              f"{' ...' if len(missing) > 5 else ''}")
        self.load_state_dict({k: weights[k] for k in expected}, strict=True, assign=True)
        for module in self.modules():
            if isinstance(module, (_Attention, _MLP)):
                module.fuse()
            elif isinstance(module, RMSNorm):
                module.prepare()

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        e: torch.Tensor = self.embed_tokens(ids)
        if self.embed_scale != 1.0:
            e = e * torch.tensor(self.embed_scale, dtype=e.dtype)
        return e

    def forward(self, embeds: torch.Tensor, positions: torch.Tensor, pool: KVPool, rows: torch.Tensor,
                read: torch.Tensor, window: int, masks: list[torch.Tensor], last: torch.Tensor,
                rope_positions: torch.Tensor | None = None) -> torch.Tensor:
        """Run ``embeds [B,S,H]`` at ``positions [B,S]`` and return the logits at ``last [B]`` (indices into S).

        ``rows [B,S]`` is the KV slot each token writes to, ``read [B]`` the slot each
        row attends over (its first ``window`` positions), ``masks[i]`` the
        ``[B,1,S,window]`` boolean mask for layer ``i``. ``rope_positions [3,B,S]`` (mRoPE models only)
        are the rotary positions; without them the rotation uses ``positions``.
        """
        x = embeds
        pos = positions.float()[..., None]
        axis: torch.Tensor | None = None
        pos3 = pos
        if self.spec.mrope is not None and rope_positions is not None:
            axis = self._axis.get(x.device)
            if axis is None:  # cached: a CUDA graph capture may not copy from the host
                bands = [torch.full((n,), a % 3, dtype=torch.long) for a, n in enumerate(self.spec.mrope)]
                axis = self._axis[x.device] = torch.cat(bands).to(x.device)
            pos3 = rope_positions.permute(1, 2, 0).float()  # [B, S, 3]
        trig: dict[tuple[float, ...], tuple[torch.Tensor, torch.Tensor]] = {}
        for i, layer in enumerate(self.layers):
            key = self.spec.rope[i]
            if key not in trig:
                inv = self._inv.get((key, x.device))
                if inv is None:
                    inv = self._inv[(key, x.device)] = torch.tensor(key, device=x.device, dtype=torch.float32)
                # mRoPE: frequency j turns with the position on axis[j]
                f = pos3[..., axis] * inv if axis is not None else pos * inv
                emb = torch.cat((f, f), dim=-1)[:, None]
                sc = self.spec.rope_scale[i]
                trig[key] = ((emb.cos() * sc).to(x.dtype), (emb.sin() * sc).to(x.dtype))
            cos, sin = trig[key]
            x = layer(x, cos, sin, pool, rows, positions, read, window, masks[i])
        h = self.norm(x[torch.arange(x.shape[0], device=x.device), last])
        logits: torch.Tensor = self.lm_head(h)
        if self.spec.final_softcap:
            logits = torch.tanh(logits / self.spec.final_softcap) * self.spec.final_softcap
        return logits.float()
