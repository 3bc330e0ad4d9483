"""The RVC synthesizer's decoder (`dec.*` in its checkpoints): a neural-source-filter HiFi-GAN, in torch.

A harmonic source at F0 excites a HiFi-GAN generator conditioned on the speaker, which upsamples the
flow's latent frames to samples. Shapes: `[B, C, T]`, T in frames in, samples out.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

if TYPE_CHECKING:  # svc_net imports this module for its decoder
    from models.svc_net import SynthConfig

LRELU_SLOPE = 0.1  # HiFi-GAN's (and the prior encoder's) leaky ReLU slope


class HarmonicSource(nn.Module):
    """NSF source: sines at F0 (and `harmonics` overtones) where voiced, noise elsewhere, mixed to one
    excitation channel by `l_linear` + tanh. `f0` `[B, T']` in Hz at the output rate → `[B, 1, T']`."""

    SINE_AMP = 0.1
    NOISE_STD = 0.003

    def __init__(self, sample_rate: int, harmonics: int) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.harmonics = harmonics
        self.l_linear = nn.Linear(harmonics + 1, 1)

    def forward(self, f0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        multiples = torch.arange(1, self.harmonics + 2, device=f0.device, dtype=torch.float64)
        freqs = f0.double()[..., None] * multiples  # [B, T', H+1]
        start = torch.rand(freqs.shape[0], 1, freqs.shape[2], generator=generator, dtype=torch.float64)
        start[..., 0] = 0.0  # the fundamental starts at phase 0, overtones at random phases
        phase = torch.remainder(torch.cumsum(freqs / self.sample_rate, dim=1) + start.to(f0.device), 1.0)
        voiced = (f0 > 0).to(f0.dtype)[..., None]
        noise_amp = voiced * self.NOISE_STD + (1 - voiced) * self.SINE_AMP / 3
        noise = torch.randn(freqs.shape, generator=generator).to(f0.device, f0.dtype)
        sines = torch.sin(2 * math.pi * phase).to(f0.dtype) * self.SINE_AMP * voiced + noise * noise_amp
        return torch.tanh(self.l_linear(sines)).transpose(1, 2)


class ResBlock(nn.Module):
    """HiFi-GAN residual block type 1: dilated then undilated convolutions, three pairs."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]) -> None:
        super().__init__()

        def conv(d: int) -> nn.Conv1d:
            return nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=d * (kernel_size - 1) // 2)

        self.convs1 = nn.ModuleList(conv(d) for d in dilations)
        self.convs2 = nn.ModuleList(conv(1) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2, strict=True):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
        return x


class NSFGenerator(nn.Module):
    """Latent `[B, inter, T]` + F0 `[B, T]` (Hz per frame) → waveform `[B, 1, T * hop]` in [-1, 1]."""

    def __init__(self, c: SynthConfig) -> None:
        super().__init__()
        self.hop = c.hop
        self.m_source = HarmonicSource(c.sample_rate, c.harmonics)
        ch = c.upsample_initial_channel
        self.conv_pre = nn.Conv1d(c.inter_channels, ch, 7, padding=3)
        self.cond = nn.Conv1d(c.gin_channels, ch, 1)
        self.ups = nn.ModuleList()
        self.noise_convs = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (rate, kernel) in enumerate(zip(c.upsample_rates, c.upsample_kernel_sizes, strict=True)):
            out = ch // 2 ** (i + 1)
            self.ups.append(nn.ConvTranspose1d(out * 2, out, kernel, rate, padding=(kernel - rate) // 2))
            stride = math.prod(c.upsample_rates[i + 1 :])
            self.noise_convs.append(
                nn.Conv1d(1, out, 2 * stride, stride=stride, padding=stride // 2)
                if stride > 1
                else nn.Conv1d(1, out, 1)
            )
            for k, d in zip(c.resblock_kernel_sizes, c.resblock_dilation_sizes, strict=True):
                self.resblocks.append(ResBlock(out, k, d))
        self.conv_post = nn.Conv1d(ch // 2 ** len(c.upsample_rates), 1, 7, padding=3, bias=False)
        self.kernels = len(c.resblock_kernel_sizes)

    def forward(
        self, z: torch.Tensor, f0: torch.Tensor, g: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        source = self.m_source(f0.repeat_interleave(self.hop, dim=1), generator)
        x = self.conv_pre(z) + self.cond(g)
        for i, (up, noise_conv) in enumerate(zip(self.ups, self.noise_convs, strict=True)):
            x = up(F.leaky_relu(x, LRELU_SLOPE)) + noise_conv(source)
            blocks = self.resblocks[i * self.kernels : (i + 1) * self.kernels]
            x = sum((block(x) for block in blocks), torch.zeros_like(x)) / self.kernels
        return torch.tanh(self.conv_post(F.leaky_relu(x)))
