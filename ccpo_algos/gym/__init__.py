"""The credit gym's training tier: tiny warm-started models, many runs trained together on one stacked team."""
