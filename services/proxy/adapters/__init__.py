"""Provider adapters: pure translations between the OpenAI wire format and each provider's own."""
