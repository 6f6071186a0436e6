"""afnext.training."""

__all__: list[str] = []
