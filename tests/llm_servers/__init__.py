"""Real HTTP servers on 127.0.0.1 that speak the OpenAI chat-completions API, for tests."""
