"""NewsPulse: shared pieces that every layer may import (settings, console helpers, CLI)."""

__version__ = "0.1.0"
