"""Rotary time embedding (RoTE) as the AF-Next / Music Flamingo checkpoints apply it."""

from afnext_kernels.rote.reference import rote_inv_freq, rote_reference

__all__ = ["rote_inv_freq", "rote_reference"]
