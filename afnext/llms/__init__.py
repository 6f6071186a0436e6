"""afnext.llms."""

__all__: list[str] = []
