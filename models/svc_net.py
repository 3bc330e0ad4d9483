"""The RVC-family synthesizer (v2 with pitch, "NSF"): prior encoder, flow and NSF HiFi-GAN (the last in
`svc_vocoder.py`), in torch.

Written from the published architecture (VITS prior + normalising flow + a neural-source-filter HiFi-GAN,
as RVC's `SynthesizerTrnMs768NSFsid` describes it). Submodule names follow the RVC checkpoints' state-dict
keys (`enc_p.*`, `flow.flows.N.*`, `dec.*`, `emb_g.*`), so a converted checkpoint loads with
`load_state_dict(strict=True)`. Weight norm is folded into plain weights at conversion, so inference
modules are plain convolutions. Only inference is implemented (no posterior encoder, no losses).
Shapes: `[B, C, T]` with T in frames (100 per second at 16 kHz features hop 160) or samples.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from models.svc_vocoder import LRELU_SLOPE, NSFGenerator

PITCH_BINS = 256  # coarse pitch: 1..255 voiced, 1 also for unvoiced (RVC's mel-scale quantisation)
_REL_WINDOW = 10  # relative-position window of the attention layers (VITS' default)


@dataclass(frozen=True)
class SynthConfig:
    """The synthesizer's hyper-parameters, in the order of an RVC checkpoint's `config` list."""

    spec_channels: int = 1025
    segment_size: int = 32
    inter_channels: int = 192
    hidden_channels: int = 192
    filter_channels: int = 768
    n_heads: int = 2
    n_layers: int = 6
    kernel_size: int = 3
    p_dropout: float = 0.0
    resblock: str = "1"
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    upsample_rates: tuple[int, ...] = (10, 10, 2, 2)
    upsample_initial_channel: int = 512
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 4, 4)
    spk_embed_dim: int = 109
    gin_channels: int = 256
    sample_rate: int = 40000
    content_dim: int = 768  # v2: HuBERT/ContentVec layer-12 features
    harmonics: int = 0  # RVC's NSF source uses the fundamental only
    flow_layers: int = 4

    @property
    def hop(self) -> int:
        """Output samples per feature frame: the product of the upsampling rates (400 at 40 kHz)."""
        return math.prod(self.upsample_rates)

    @classmethod
    def from_rvc_list(cls, values: list[Any], *, content_dim: int = 768) -> SynthConfig:
        """From the 18-entry `config` list an RVC checkpoint stores (the last entry is the sample rate)."""
        if len(values) != 18:
            raise ValueError(f"an RVC config list has 18 entries, got {len(values)}")
        names = list(cls.__dataclass_fields__)[:18]
        kwargs = dict(zip(names, values, strict=True))
        kwargs["resblock"] = str(kwargs["resblock"])
        kwargs["resblock_dilation_sizes"] = tuple(
            tuple(int(d) for d in ds) for ds in kwargs["resblock_dilation_sizes"]
        )
        for name in ("resblock_kernel_sizes", "upsample_rates", "upsample_kernel_sizes"):
            kwargs[name] = tuple(int(v) for v in kwargs[name])
        return cls(**kwargs, content_dim=content_dim)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SynthConfig:
        data = dict(data)
        data["resblock_dilation_sizes"] = tuple(tuple(ds) for ds in data["resblock_dilation_sizes"])
        for name in ("resblock_kernel_sizes", "upsample_rates", "upsample_kernel_sizes"):
            data[name] = tuple(data[name])
        return cls(**data)


class ChannelNorm(nn.Module):
    """Layer norm over the channel axis of `[B, C, T]` (parameters named `gamma`/`beta` as in VITS)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.transpose(1, -1), (x.shape[1],), self.gamma, self.beta, 1e-5)
        return y.transpose(1, -1)


class RelativeAttention(nn.Module):
    """Multi-head self-attention with learned relative-position keys and values (window ±10 frames)."""

    def __init__(self, channels: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = channels // n_heads
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, channels, 1)
        scale = self.head_dim**-0.5
        self.emb_rel_k = nn.Parameter(torch.randn(1, 2 * _REL_WINDOW + 1, self.head_dim) * scale)
        self.emb_rel_v = nn.Parameter(torch.randn(1, 2 * _REL_WINDOW + 1, self.head_dim) * scale)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t = x.shape
        return x.view(b, self.n_heads, self.head_dim, t).transpose(2, 3)  # [B, H, T, D]

    @staticmethod
    def _span(table: torch.Tensor, length: int) -> torch.Tensor:
        """Embeddings for offsets -(length-1)..(length-1), `[2*length-1, D]`; zero outside the window."""
        table = table[0]
        pad = max(length - 1 - _REL_WINDOW, 0)
        padded = F.pad(table, (0, 0, pad, pad))
        start = max(_REL_WINDOW - (length - 1), 0)
        return padded[start : start + 2 * length - 1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self._heads(self.conv_q(x)) * self.head_dim**-0.5
        k, v = self._heads(self.conv_k(x)), self._heads(self.conv_v(x))
        t = x.shape[-1]
        positions = torch.arange(t, device=x.device)
        offset = (positions[None, :] - positions[:, None] + t - 1).expand(*q.shape[:2], t, t)  # j - i
        rel_keys = q @ self._span(self.emb_rel_k, t).T  # [B, H, T, 2T-1]
        scores = q @ k.transpose(-1, -2) + torch.gather(rel_keys, -1, offset)
        weights = scores.softmax(dim=-1)
        rel_weights = torch.zeros_like(rel_keys).scatter_(-1, offset, weights)
        out = weights @ v + rel_weights @ self._span(self.emb_rel_v, t)  # [B, H, T, D]
        b = x.shape[0]
        return self.conv_o(out.transpose(2, 3).reshape(b, -1, t))


class FeedForward(nn.Module):
    """Two "same"-padded convolutions with a ReLU between them."""

    def __init__(self, channels: int, filters: int, kernel_size: int) -> None:
        super().__init__()
        self.conv_1 = nn.Conv1d(channels, filters, kernel_size, padding=kernel_size // 2)
        self.conv_2 = nn.Conv1d(filters, channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_2(torch.relu(self.conv_1(x)))


class AttentionStack(nn.Module):
    """Post-norm transformer encoder over `[B, C, T]`."""

    def __init__(self, c: SynthConfig) -> None:
        super().__init__()
        h, n = c.hidden_channels, c.n_layers
        self.attn_layers = nn.ModuleList(RelativeAttention(h, c.n_heads) for _ in range(n))
        self.norm_layers_1 = nn.ModuleList(ChannelNorm(h) for _ in range(n))
        self.ffn_layers = nn.ModuleList(FeedForward(h, c.filter_channels, c.kernel_size) for _ in range(n))
        self.norm_layers_2 = nn.ModuleList(ChannelNorm(h) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, norm1, ffn, norm2 in zip(
            self.attn_layers, self.norm_layers_1, self.ffn_layers, self.norm_layers_2, strict=True
        ):
            x = norm1(x + attn(x))
            x = norm2(x + ffn(x))
        return x


class PriorEncoder(nn.Module):
    """Content `[B, T, content_dim]` + coarse pitch `[B, T]` → prior mean and log-std `[B, inter, T]`."""

    def __init__(self, c: SynthConfig) -> None:
        super().__init__()
        self.hidden = c.hidden_channels
        self.emb_phone = nn.Linear(c.content_dim, c.hidden_channels)
        self.emb_pitch = nn.Embedding(PITCH_BINS, c.hidden_channels)
        self.encoder = AttentionStack(c)
        self.proj = nn.Conv1d(c.hidden_channels, 2 * c.inter_channels, 1)

    def forward(self, content: torch.Tensor, pitch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (self.emb_phone(content) + self.emb_pitch(pitch)) * math.sqrt(self.hidden)
        x = self.encoder(F.leaky_relu(x, LRELU_SLOPE).transpose(1, 2))
        mean, log_std = self.proj(x).chunk(2, dim=1)
        return mean, log_std


class WaveNet(nn.Module):
    """Gated dilated convolutions conditioned on the speaker embedding (the flow's coupling network)."""

    def __init__(self, hidden: int, kernel_size: int, layers: int, gin: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.in_layers = nn.ModuleList(
            nn.Conv1d(hidden, 2 * hidden, kernel_size, padding=kernel_size // 2) for _ in range(layers)
        )
        self.res_skip_layers = nn.ModuleList(
            nn.Conv1d(hidden, 2 * hidden if i < layers - 1 else hidden, 1) for i in range(layers)
        )
        self.cond_layer = nn.Conv1d(gin, 2 * hidden * layers, 1)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        conds = self.cond_layer(g).chunk(len(self.in_layers), dim=1)
        skip = torch.zeros_like(x)
        for i, (conv, res_skip) in enumerate(zip(self.in_layers, self.res_skip_layers, strict=True)):
            a, b = (conv(x) + conds[i]).chunk(2, dim=1)
            out = res_skip(torch.tanh(a) * torch.sigmoid(b))
            if i < len(self.in_layers) - 1:
                x = x + out[:, : self.hidden]
                skip = skip + out[:, self.hidden :]
            else:
                skip = skip + out
        return skip


class MeanCoupling(nn.Module):
    """Mean-only affine coupling: the second half of the channels shifted by a function of the first."""

    def __init__(self, c: SynthConfig) -> None:
        super().__init__()
        half = c.inter_channels // 2
        self.pre = nn.Conv1d(half, c.hidden_channels, 1)
        self.enc = WaveNet(c.hidden_channels, 5, 3, c.gin_channels)
        self.post = nn.Conv1d(c.hidden_channels, half, 1)

    def inverse(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        x0, x1 = x.chunk(2, dim=1)
        shift = self.post(self.enc(self.pre(x0), g))
        return torch.cat([x0, x1 - shift], dim=1)


class ChannelFlip(nn.Module):
    """Reverses the channel order between couplings (no parameters; keeps the checkpoints' indices)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flip(x, dims=[1])


class Flow(nn.Module):
    """`flow_layers` couplings, each followed by a flip; inference runs them backwards."""

    def __init__(self, c: SynthConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(c.flow_layers):
            layers += [MeanCoupling(c), ChannelFlip()]
        self.flows = nn.ModuleList(layers)

    def inverse(self, z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self.flows):
            z = layer.inverse(z, g) if isinstance(layer, MeanCoupling) else layer(z)
        return z


class Synthesizer(nn.Module):
    """The RVC v2 pitch synthesizer: `infer(content, pitch_coarse, f0_hz, speaker)` → `[B, 1, T * hop]`."""

    NOISE_SCALE = 0.66666  # the prior's sampling temperature at inference (RVC's constant)

    def __init__(self, config: SynthConfig) -> None:
        super().__init__()
        self.config = config
        self.enc_p = PriorEncoder(config)
        self.flow = Flow(config)
        self.dec = NSFGenerator(config)
        self.emb_g = nn.Embedding(config.spk_embed_dim, config.gin_channels)

    def infer(
        self,
        content: torch.Tensor,
        pitch: torch.Tensor,
        f0_hz: torch.Tensor,
        speaker: int,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """`content` `[B, T, content_dim]`, coarse `pitch` `[B, T]`, `f0_hz` `[B, T]` Hz → `[B, 1, T * hop]`;
        noise drawn from `generator`."""
        g = self.emb_g(torch.tensor([speaker], device=content.device))[..., None]  # [1, gin, 1]
        mean, log_std = self.enc_p(content, pitch)
        noise = torch.randn(mean.shape, generator=generator).to(mean.device, mean.dtype)
        z = self.flow.inverse(mean + torch.exp(log_std) * noise * self.NOISE_SCALE, g)
        return self.dec(z, f0_hz, g, generator)
