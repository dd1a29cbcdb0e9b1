"""File formats → articles: encoding detection, PDF, .docx, Markdown and HTML.

`load_bytes(raw, name)` (the API) and `load_file(path)` (the CLI) are the entry points; both
return a `LoadedFile` with the documents and the detected format and encoding.
"""

from rag.formats.registry import FORMAT_OF_SUFFIX, SUPPORTED_SUFFIXES, LoadedFile, describe_file, format_of, load_bytes, load_file

__all__ = ["FORMAT_OF_SUFFIX", "SUPPORTED_SUFFIXES", "LoadedFile", "describe_file", "format_of", "load_bytes", "load_file"]
