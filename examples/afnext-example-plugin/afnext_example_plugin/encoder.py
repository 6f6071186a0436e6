"""A convolutional encoder over its own features: a 64-band log filterbank, 20 ms hop, 10 s windows."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class FbankFrontEnd:
    """Log energies of ``n_bands`` equal-width frequency bands, one frame per ``hop`` samples.

    The attributes and the call are afnext's front-end interface (``afnext.audio.frontends.FrontEnd``).
    """

    n_bands: int = 64
    hop: int = 320
    n_fft: int = 640
    window_seconds: float = 10.0
    sampling_rate: int = 16000

    @property
    def frame_rate(self) -> float:
        return self.sampling_rate / self.hop

    def __call__(
        self, wave: torch.Tensor, *, max_seconds: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(S,)`` waveform -> features ``(W, n_bands, frames)`` and mask ``(W, frames)``."""
        per_window = int(self.window_seconds * self.sampling_rate)
        frames = per_window // self.hop
        windows = max(1, math.ceil(wave.shape[0] / per_window))
        padded = torch.zeros(windows * per_window)
        padded[: wave.shape[0]] = wave.float()
        chunks = padded.view(windows, per_window)  # (W, samples)
        spec = (
            torch.stft(
                chunks,
                self.n_fft,
                hop_length=self.hop,
                window=torch.hann_window(self.n_fft),
                center=True,
                return_complex=True,
            )
            .abs()[..., :frames]
            .square()
        )  # (W, n_fft // 2 + 1, frames)
        bands = torch.tensor_split(spec[:, 1:], self.n_bands, dim=1)
        feats = torch.log(
            torch.stack([b.mean(dim=1) for b in bands], dim=1) + 1e-6
        )  # (W, bands, frames)
        real = torch.clamp(wave.shape[0] - torch.arange(windows) * per_window, 0, per_window)
        lengths = torch.ceil(real / self.hop).long()
        mask = torch.arange(frames)[None, :] < lengths[:, None]
        return feats, mask


class ConvFbankEncoder(nn.Module):
    """Two strided 1-D convolutions over filterbank frames: 50 frames/s in, 12.5 tokens/s out.

    Args:
        dim: Output width.
        n_bands: Filterbank bands (the front end's).
        window_seconds: Seconds per window (the front end's).
    """

    def __init__(self, dim: int = 64, n_bands: int = 64, window_seconds: float = 10.0) -> None:
        super().__init__()
        self.front_end = FbankFrontEnd(n_bands=n_bands, window_seconds=window_seconds)
        self.out_dim = dim
        self.frame_rate = self.front_end.frame_rate / 4
        self.conv1 = nn.Conv1d(n_bands, dim, kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(dim, dim, kernel_size=3, stride=2, padding=1)

    @staticmethod
    def output_lengths(frames: torch.Tensor) -> torch.Tensor:
        """Tokens of a window from its valid frames (each stride-2 convolution halves, rounding up)."""
        return (frames + 3) // 4

    def forward(
        self, features: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W, n_bands, frames)`` -> ``(W, T, dim)`` and its mask ``(W, T)``."""
        hidden = nn.functional.gelu(self.conv1(features))
        hidden = nn.functional.gelu(self.conv2(hidden)).transpose(1, 2)  # (W, T, dim)
        lengths = self.output_lengths(mask.long().sum(-1))
        out_mask = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths[:, None]
        return hidden, out_mask
