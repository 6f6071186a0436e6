"""afnext.connectors."""

__all__: list[str] = []
