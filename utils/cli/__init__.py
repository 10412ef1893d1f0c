"""The click commands (options and one pipeline call each) and the translation of errors."""
