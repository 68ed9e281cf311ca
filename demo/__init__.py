"""Demo mode of ha-xiaozhi: Home Assistant prepared for the demo provider.

The provider itself is fake_provider in demo mode. Used by
``scripts/develop --demo``; nothing here is part of the integration.
"""
