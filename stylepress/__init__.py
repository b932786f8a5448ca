"""stylepress: portrait style-transfer GANs from training to production."""
__version__ = "0.1.0"
