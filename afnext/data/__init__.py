"""afnext.data."""

__all__: list[str] = []
