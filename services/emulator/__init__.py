"""Provider emulator: a deterministic LLM provider (OpenAI wire format first) with fault injection for tests."""
