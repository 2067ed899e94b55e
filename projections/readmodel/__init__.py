"""The read models: how deal events become rows (fold), where the rows live (views), and the
runner that feeds events to them with exactly-once tracking."""
