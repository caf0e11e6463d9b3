"""The service: OGC API Features and Tiles, analytics, ingest and alerts over HTTP."""
