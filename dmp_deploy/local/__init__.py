"""The embedded AWS for the `local` environment: moto's server on 127.0.0.1, patched and seeded."""
