"""afnext.llms: transformers causal LMs, tokenizers, attention back ends."""

__all__: list[str] = []
