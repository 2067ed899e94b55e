"""dealflow's composition root (issue 8 moves the CLI and runtime here)."""
