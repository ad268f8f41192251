"""Readers, one per format, behind one front door: :func:`open_checkpoint`.

Each reader module exposes ``sniff(head: bytes, path) -> bool`` and
``read(path, **options) -> Checkpoint``. The registry tries content first
(magic bytes), the extension second; ``format=`` picks a reader by name.
"""
