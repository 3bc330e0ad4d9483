"""Our own decoding loop for the delayed-codebook decoders (MusicGen, AudioGen, MusicGen-Melody), built for
GPUs: a static KV cache, one decoder step that `torch.compile` can trace whole (CUDA graphs on CUDA), and
classifier-free guidance as one forward over 2B rows (B conditional, then B unconditional).

Tokens equal transformers' `generate` for the same seed: the same delay pattern, the same float32 guidance
merge, the same sampler (`sample_top_k`) and the same uniform draws per prompt, in the same order.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
from torch import nn
from torch.nn.functional import scaled_dot_product_attention

DecoderKind = Literal["eager", "static", "compiled"]
DECODER_KINDS: tuple[DecoderKind, ...] = ("eager", "static", "compiled")
# Cache lengths are rounded up to these steps so that a few compiled graphs serve every duration and prompt.
_POSITION_BUCKET = 256
_CROSS_BUCKET = 32
_WORKSPACES_KEPT = 4


def sample_top_k(
    logits: torch.Tensor, draws: torch.Tensor, temperature: float | torch.Tensor, top_k: int
) -> torch.Tensor:
    """Inverse-CDF sampling of one token per row `[R]` from the top-k of `logits / temperature` `[R, V]`,
    with one uniform draw in [0, 1) per row `draws` `[R]`."""
    logits = logits / temperature
    kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
    probs = torch.softmax(logits.masked_fill(logits < kth, -math.inf), dim=-1)
    cdf = torch.cumsum(probs, dim=-1)
    # right=True never lands on a zero-probability token; scaling by cdf[-1] keeps it in range.
    targets = draws.to(cdf.device)[:, None] * cdf[:, -1:]
    return torch.searchsorted(cdf, targets, right=True).squeeze(1)


@dataclass(frozen=True)
class DelayPattern:
    """MusicGen's delay pattern over `columns` decoder steps: codebook k (delay d_k = k // channels; stereo
    interleaves L0 R0 L1 R1 ...) holds frame f at column d_k + 1 + f; the columns before (BOS) and after its
    frames (EOS) hold `pad_id`. `forced` `[B, K, columns]` is -1 where a token is sampled, else the token
    (pad, or a prompt code). Prompt frames fill the columns before `first_sampled`."""

    forced: torch.Tensor
    delays: torch.Tensor
    first_sampled: int

    @classmethod
    def build(cls, prompt: torch.Tensor, new_columns: int, pad_id: int, channels: int) -> DelayPattern:
        """The pattern after prompt codes `prompt` `[B, K, S]` (S may be 0), `new_columns` sampled columns."""
        batch, num_codebooks, prompt_frames = prompt.shape
        delays = torch.arange(num_codebooks) // channels
        columns = prompt_frames + 1 + new_columns
        frames = columns - 1 - int(delays.max())
        assert frames >= prompt_frames and frames >= 1, f"{new_columns} columns cannot complete a frame"
        forced = torch.full((batch, num_codebooks, columns), pad_id, dtype=torch.long)
        frame_of = torch.arange(columns)[None, :] - 1 - delays[:, None]  # [K, columns]
        sampled = (frame_of >= prompt_frames) & (frame_of < frames)
        forced[:, sampled] = -1
        for k, delay in enumerate(delays.tolist()):
            forced[:, k, delay + 1 : delay + 1 + prompt_frames] = prompt[:, k]
        return cls(forced.to(prompt.device), delays, prompt_frames + 1)

    @property
    def columns(self) -> int:
        return self.forced.shape[-1]

    def frames(self, tokens: torch.Tensor) -> torch.Tensor:
        """The codes `[B, K, F]` of decoder tokens `[B, K, >= columns]`, each codebook shifted back."""
        count = self.columns - 1 - int(self.delays.max())
        return torch.stack(
            [tokens[:, k, d + 1 : d + 1 + count] for k, d in enumerate(self.delays.tolist())], 1
        )


@dataclass(frozen=True)
class Conditioning:
    """What the decoder attends to, for R = B or 2B rows (conditional, then unconditional): MusicGen's
    cross-attention `states` `[R, S, D]` with `mask` `[R, S]` (True: attend), or MusicGen-Melody's `prefix`
    `[R, P, D]`, prepended to the decoder's input and attended causally."""

    states: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    prefix: torch.Tensor | None = None


@dataclass
class _Workspace:
    """The static tensors of one shape (rows, cache length, cross length): the step reads and writes only
    these, so a compiled step (and its CUDA graph) is reused for every call of that shape."""

    keys: list[torch.Tensor]  # per layer [R, H, T, Dh]
    values: list[torch.Tensor]
    cross_keys: list[torch.Tensor]  # per layer [R, H, S', Dh]; empty without cross-attention
    cross_values: list[torch.Tensor]
    cross_mask: torch.Tensor  # [R, 1, 1, S'] bool
    key_positions: torch.Tensor  # [T] arange
    tokens: torch.Tensor  # [B, K, C'] decoder input and output columns
    forced: torch.Tensor  # [B, K, C'] the delay pattern
    draws: torch.Tensor  # [C', B * K] uniforms, row c for column c
    column: torch.Tensor  # () the next input column
    prefix_length: torch.Tensor  # () positions before column 0 (MusicGen-Melody's conditioning)
    guidance: torch.Tensor  # () float32
    temperature: torch.Tensor  # () float32

    def tensors(self) -> list[torch.Tensor]:
        fixed = [self.cross_mask, self.key_positions, self.tokens, self.forced, self.draws, self.column]
        fixed += [self.prefix_length, self.guidance, self.temperature]
        return [*self.keys, *self.values, *self.cross_keys, *self.cross_values, *fixed]


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


class StaticDecoder:
    """Samples the delay pattern's tokens with transformers' decoder weights (`MusicgenForCausalLM` or
    `MusicgenMelodyForCausalLM`, used as they are), a static KV cache and, when `compiled`, a
    `torch.compile`d step (mode "reduce-overhead", i.e. CUDA graphs, on CUDA)."""

    def __init__(self, decoder: nn.Module, *, compiled: bool) -> None:
        # transformers' modules, duck-typed: MusicGen's and MusicGen-Melody's decoders share these names.
        self._lm: Any = cast(Any, decoder)
        self._core: Any = self._lm.model.decoder
        self._layers: list[Any] = list(self._core.layers)
        self._cross = hasattr(self._layers[0], "encoder_attn")
        self._heads = self._layers[0].self_attn.num_heads
        self._workspaces: OrderedDict[tuple[int, ...], _Workspace] = OrderedDict()
        self._step = self._decode_step
        self._cuda = next(decoder.parameters()).device.type == "cuda"
        if compiled:
            mode = "reduce-overhead" if self._cuda else None
            self._step = torch.compile(self._decode_step, fullgraph=True, dynamic=False, mode=mode)

    def generate(
        self,
        conditioning: Conditioning,
        pattern: DelayPattern,
        draws: torch.Tensor,
        *,
        guidance_scale: float,
        temperature: float,
        top_k: int,
    ) -> torch.Tensor:
        """Decoder tokens `[B, K, columns]`; `draws` `[columns - first_sampled, B * K]` are the uniforms of
        the sampled columns, in order. Guidance doubles the rows when `guidance_scale` > 1."""
        ws = self._workspace(conditioning, pattern, draws, guidance_scale, temperature)
        ws.tokens[..., : pattern.first_sampled] = pattern.forced[..., : pattern.first_sampled]
        self._prefill(ws, conditioning, pattern.first_sampled, top_k)
        for _ in range(pattern.columns - 1 - pattern.first_sampled):
            if self._cuda:
                torch.compiler.cudagraph_mark_step_begin()
            self._step(ws, top_k)
        return ws.tokens[..., : pattern.columns].clone()

    def _prefill(self, ws: _Workspace, conditioning: Conditioning, columns: int, top_k: int) -> None:
        """Runs the prefix and the first `columns` (forced) columns, and samples column `columns`."""
        hidden = self._embed(ws.tokens[..., :columns], rows=ws.keys[0].shape[0])
        if conditioning.prefix is not None:
            hidden = torch.cat([conditioning.prefix, hidden], dim=1)
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        self._choose(
            ws, self._logits(ws, hidden, positions), torch.tensor([columns], device=hidden.device), top_k
        )
        ws.column.fill_(columns)

    def _decode_step(self, ws: _Workspace, top_k: int) -> None:
        """One column: feeds column `ws.column`, samples column + 1, advances `ws.column`."""
        column = ws.column.view(1)
        hidden = self._embed(ws.tokens.index_select(2, column), rows=ws.keys[0].shape[0])
        self._choose(ws, self._logits(ws, hidden, column + ws.prefix_length), column + 1, top_k)
        ws.column.add_(1)

    def _embed(self, tokens: torch.Tensor, rows: int) -> torch.Tensor:
        """Hidden `[rows, n, D]` of tokens `[B, K, n]`: codebook embeddings summed, repeated for guidance."""
        embeds = sum(self._core.embed_tokens[k](tokens[:, k]) for k in range(tokens.shape[1]))
        assert isinstance(embeds, torch.Tensor)
        return embeds.repeat(rows // embeds.shape[0], 1, 1)

    def _logits(self, ws: _Workspace, hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Guided float32 logits `[B, K, V]` after the last of `hidden` `[R, n, D]` at `positions` `[n]`."""
        table = self._core.embed_positions.weights
        hidden = hidden + table.index_select(0, positions)
        causal = ws.key_positions[None, :] <= positions[:, None]  # [n, T]
        for index, layer in enumerate(self._layers):
            hidden = hidden + self._self_attention(layer, index, ws, hidden, positions, causal)
            if self._cross:
                hidden = hidden + self._cross_attention(layer, index, ws, hidden)
            normed = layer.final_layer_norm(hidden)
            hidden = hidden + layer.fc2(layer.activation_fn(layer.fc1(normed)))
        last = self._core.layer_norm(hidden[:, -1:])
        logits = torch.stack([head(last) for head in self._lm.lm_heads], dim=1)[:, :, 0].float()  # [R, K, V]
        if logits.shape[0] == ws.tokens.shape[0]:
            return logits
        conditional, unconditional = logits.split(ws.tokens.shape[0])
        return unconditional + (conditional - unconditional) * ws.guidance

    def _heads_of(self, projected: torch.Tensor) -> torch.Tensor:
        rows, length, width = projected.shape
        return projected.view(rows, length, self._heads, width // self._heads).transpose(1, 2)

    def _self_attention(
        self,
        layer: Any,
        index: int,
        ws: _Workspace,
        hidden: torch.Tensor,
        positions: torch.Tensor,
        causal: torch.Tensor,
    ) -> torch.Tensor:
        attention = layer.self_attn
        normed = layer.self_attn_layer_norm(hidden)
        ws.keys[index].index_copy_(2, positions, self._heads_of(attention.k_proj(normed)))
        ws.values[index].index_copy_(2, positions, self._heads_of(attention.v_proj(normed)))
        query = self._heads_of(attention.q_proj(normed))
        mixed = scaled_dot_product_attention(
            query, ws.keys[index], ws.values[index], attn_mask=causal, scale=attention.scaling
        )
        return attention.out_proj(mixed.transpose(1, 2).reshape(hidden.shape))

    def _cross_attention(self, layer: Any, index: int, ws: _Workspace, hidden: torch.Tensor) -> torch.Tensor:
        attention = layer.encoder_attn
        query = self._heads_of(attention.q_proj(layer.encoder_attn_layer_norm(hidden)))
        mixed = scaled_dot_product_attention(
            query,
            ws.cross_keys[index],
            ws.cross_values[index],
            attn_mask=ws.cross_mask,
            scale=attention.scaling,
        )
        return attention.out_proj(mixed.transpose(1, 2).reshape(hidden.shape))

    def _choose(self, ws: _Workspace, logits: torch.Tensor, column: torch.Tensor, top_k: int) -> None:
        """Samples column `column` `[1]` from `logits` `[B, K, V]`, where the pattern does not force it."""
        batch, num_codebooks, vocab = logits.shape
        draws = ws.draws.index_select(0, column).view(batch * num_codebooks)
        sampled = sample_top_k(logits.reshape(-1, vocab), draws, ws.temperature, top_k).view(
            batch, num_codebooks
        )
        forced = ws.forced.index_select(2, column)[..., 0]
        ws.tokens.index_copy_(2, column, torch.where(forced == -1, sampled, forced)[..., None])

    def _workspace(
        self,
        conditioning: Conditioning,
        pattern: DelayPattern,
        draws: torch.Tensor,
        guidance: float,
        temperature: float,
    ) -> _Workspace:
        """The workspace of this call's shape (reused, or made and kept among the last few), filled."""
        batch, num_codebooks, columns = pattern.forced.shape
        rows = 2 * batch if guidance > 1 else batch
        prefix = 0 if conditioning.prefix is None else conditioning.prefix.shape[1]
        cross = 0 if conditioning.states is None else conditioning.states.shape[1]
        key = (batch, rows, _round_up(prefix + columns, _POSITION_BUCKET), _round_up(cross, _CROSS_BUCKET))
        ws = self._workspaces.pop(key, None) or self._new_workspace(*key, num_codebooks)
        self._workspaces[key] = ws
        while len(self._workspaces) > _WORKSPACES_KEPT:
            self._workspaces.popitem(last=False)
        ws.forced[..., :columns] = pattern.forced
        ws.draws[pattern.first_sampled : columns] = draws
        ws.prefix_length.fill_(prefix)
        ws.guidance.fill_(guidance)
        ws.temperature.fill_(temperature)
        if self._cross:
            self._fill_cross(ws, conditioning)
        return ws

    def _fill_cross(self, ws: _Workspace, conditioning: Conditioning) -> None:
        """Cross-attention keys/values of the conditioning, zero past its length (the mask hides them; a row
        with nothing to attend to, as the unconditional half, attends to zeros and gets zero)."""
        assert conditioning.states is not None and conditioning.mask is not None
        length = conditioning.states.shape[1]
        for index, layer in enumerate(self._layers):
            for cache, projection in (
                (ws.cross_keys, layer.encoder_attn.k_proj),
                (ws.cross_values, layer.encoder_attn.v_proj),
            ):
                cache[index].zero_()
                cache[index][:, :, :length] = self._heads_of(projection(conditioning.states))
        mask = torch.zeros(
            ws.cross_mask.shape[0], ws.cross_mask.shape[-1], dtype=torch.bool, device=ws.cross_mask.device
        )
        mask[:, :length] = conditioning.mask.bool()
        mask |= ~mask.any(dim=-1, keepdim=True)
        ws.cross_mask.copy_(mask[:, None, None, :])

    def _new_workspace(
        self, batch: int, rows: int, length: int, cross: int, num_codebooks: int
    ) -> _Workspace:
        weight = self._layers[0].fc1.weight
        device, dtype = weight.device, weight.dtype
        width = self._core.embed_tokens[0].embedding_dim
        if self._core.embed_positions.weights.shape[0] < length:
            self._core.embed_positions.make_weights(length, width)
        cache = (rows, self._heads, length, width // self._heads)
        cross_cache = (rows, self._heads, cross, width // self._heads)
        cross_layers = len(self._layers) if self._cross else 0
        ws = _Workspace(
            keys=[torch.zeros(cache, device=device, dtype=dtype) for _ in self._layers],
            values=[torch.zeros(cache, device=device, dtype=dtype) for _ in self._layers],
            cross_keys=[torch.zeros(cross_cache, device=device, dtype=dtype) for _ in range(cross_layers)],
            cross_values=[torch.zeros(cross_cache, device=device, dtype=dtype) for _ in range(cross_layers)],
            cross_mask=torch.ones((rows, 1, 1, cross), device=device, dtype=torch.bool),
            key_positions=torch.arange(length, device=device),
            tokens=torch.zeros((batch, num_codebooks, length), device=device, dtype=torch.long),
            forced=torch.zeros((batch, num_codebooks, length), device=device, dtype=torch.long),
            draws=torch.zeros((length, batch * num_codebooks), device=device),
            column=torch.zeros((), device=device, dtype=torch.long),
            prefix_length=torch.zeros((), device=device, dtype=torch.long),
            guidance=torch.ones((), device=device),
            temperature=torch.ones((), device=device),
        )
        if self._cuda:  # CUDA graphs replay on fixed addresses: the step's tensors must stay where they are
            for tensor in ws.tensors():
                torch._dynamo.mark_static_address(tensor)
        return ws
