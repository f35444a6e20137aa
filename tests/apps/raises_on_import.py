"""An app whose import fails, as a broken deployment does."""

raise RuntimeError("database settings missing at import")
