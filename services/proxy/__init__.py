"""Proxy: the hot path. Auth, validation, upstream call, streaming, trace publishing."""
