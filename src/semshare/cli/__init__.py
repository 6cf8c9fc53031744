"""Command line: parsing and dispatch only; the work happens in the library."""
