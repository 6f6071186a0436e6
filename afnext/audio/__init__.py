"""afnext.audio."""

__all__: list[str] = []
