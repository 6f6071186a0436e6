"""afnext_kernels: Triton kernels for long-context audio-language models, each with a PyTorch reference."""

__all__: list[str] = []
