"""``python -m fake_provider --demo``: serve the demo provider (see `fake_provider.demo`)."""

from .demo import main

main()
