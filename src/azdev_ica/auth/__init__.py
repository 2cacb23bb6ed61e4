"""Who is calling and what they may do: roles, permissions, API keys."""
