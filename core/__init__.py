"""What every room may import: the one user-error type and the one vocabulary of names."""
