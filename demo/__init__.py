"""Demo mode of ha-xiaozhi: a canned OpenAI-compatible provider and HA preparation.

Used by ``scripts/develop --demo``; nothing here is part of the integration.
"""
