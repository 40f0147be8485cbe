"""Routeur's bus contract: msgspec message schemas, subject and stream names, one codec."""
