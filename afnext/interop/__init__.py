"""afnext.interop."""

__all__: list[str] = []
