"""Provider adapters: one module per wire format (openai, anthropic, bedrock, gemini) holding its translations
to and from the OpenAI wire format and the Dialect the proxy calls them through; base.py is the seam they share."""
