"""Outside systems ICA writes to or reads from: checkpoint stores (a folder; Azure Blob later)."""
