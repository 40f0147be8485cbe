"""Billing: wallets, API keys, budgets and rate limits; the one authority on spend."""
