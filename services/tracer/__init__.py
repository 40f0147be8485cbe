"""Tracer: consumes trace events from JetStream, batches them into ClickHouse, serves lookups."""
