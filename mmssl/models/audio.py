"""Audio encoders of our own: a log-mel CNN and CPC's raw-waveform strided convolutions.

transformers audio models (AST, wav2vec2, ...) come through `models.encoders.build_encoder` with
`modality: audio`, like image and text towers; these two are the small from-scratch ones.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from . import serialization


class LogMelCNN(nn.Module):
    """A VGGish-style CNN (Hershey et al. 2017, https://arxiv.org/abs/1609.09430), narrower:
    `[B, 1, n_mels, frames]` log-mel -> `[B, out_dim]`. Blocks of two 3x3 convs + BN + ReLU and a
    2x2 max-pool, channel widths `widths`, then mean over time and frequency."""

    def __init__(self, widths=(32, 64, 128, 256)):
        super().__init__()
        self.config = {"widths": list(widths)}
        layers, c = [], 1
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            c = w
        # Log-mels of silence are about -14 and of speech about 0: a fixed norm keeps inputs near 0.
        self.input_norm = nn.BatchNorm2d(1)
        self.net = nn.Sequential(*layers)
        self.out_dim = c

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.net(self.input_norm(mel)).mean(dim=(2, 3))

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        serialization.save(self, directory, "mmssl_logmel_cnn", self.config, self.out_dim)


class ChannelNorm(nn.Module):
    """Normalises each time step over its channels, with a learned per-channel scale and shift:
    `[B, C, T] -> [B, C, T]`. Unlike GroupNorm(1, C), which also pools over time, step t sees only
    itself, so an encoder built of these stays causal (CPC_audio's ChannelNorm)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class WaveEncoder(nn.Module):
    """CPC's g_enc (van den Oord et al. 2018, https://arxiv.org/abs/1807.03748): five strided 1-D
    convolutions (kernels 10, 8, 4, 4, 4; strides 5, 4, 2, 2, 2: one vector per `hop` = 160
    samples, 10 ms at 16 kHz), each with a per-step ChannelNorm and ReLU. `[B, samples] -> [B, steps,
    dim]` with `sequence`, else the time average `[B, dim]`.

    Causal: every convolution is padded on the left only, so step t depends on samples before
    (t + 1) * hop and on nothing later; CPC's prediction task is trivial otherwise. The waveform is
    not rescaled per clip (a whole-clip statistic would leak the future); the first ChannelNorm
    makes each step independent of the recording level.
    """

    KERNELS, STRIDES = (10, 8, 4, 4, 4), (5, 4, 2, 2, 2)
    hop = 160

    def __init__(self, dim: int = 512):
        super().__init__()
        self.config = {"dim": dim}
        layers, c = [], 1
        for k, s in zip(self.KERNELS, self.STRIDES):
            layers += [nn.ConstantPad1d((k - s, 0), 0.0), nn.Conv1d(c, dim, k, stride=s), ChannelNorm(dim),
                       nn.ReLU(inplace=True)]
            c = dim
        self.net = nn.Sequential(*layers)
        self.out_dim = dim

    def sequence(self, wave: torch.Tensor) -> torch.Tensor:
        return self.net(wave.unsqueeze(1)).transpose(1, 2)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.sequence(wave).mean(1)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        serialization.save(self, directory, "mmssl_wave_encoder", self.config, self.out_dim)

