"""Plain-SQL queries over the read models: metrics, breakdown, board and the deals list."""
