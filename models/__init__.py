"""Request/response schemas (pydantic, strict) and document shapes. No I/O."""
