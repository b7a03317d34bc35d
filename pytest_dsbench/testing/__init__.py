"""Fake OpenAI-compatible engines for the suite's self-tests only.

They exist to prove that every check fails against a server that violates it; they are never used to judge a
user's deployment.
"""
