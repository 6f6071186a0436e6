"""afnext.encoders."""

__all__: list[str] = []
