"""Data creation: judge (GPT-4 or any OpenAI-compatible model) labels -> critic training data (issue #6)."""
