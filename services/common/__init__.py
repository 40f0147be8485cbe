"""Pieces every Routeur service shares: logging, settings casts, lifecycle, health routes, ids."""
