"""`parseq`: Parseq's command-line client. Push parser scripts, run them, follow their logs, download their files."""

__version__ = "1.0.0"
