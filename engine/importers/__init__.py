"""Importers: other systems' exports turned into deal events through the one write path."""
