"""Adapters from real logs (OBD, UCI Online Retail, generic tables) to the logged-data format."""
